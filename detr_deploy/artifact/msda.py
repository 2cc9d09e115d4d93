# SPDX-License-Identifier: Apache-2.0
"""The MSDA plugin contract of plugin-form ONNX files, written once: op types, versions, domain, output layout.

Inputs of every plugin node: value [N,S,M,D], spatial_shapes [L,2] int32, level_start_index [L] int32,
sampling_locations [N,Lq,M,L,P,2], attention_weights [N,Lq,M,L,P]; attributes plugin_version, plugin_namespace.
NVIDIA's plugin returns [N,Lq,M,D] (the exporter adds a Reshape); ours returns [N,Lq,M*D].
Keep in sync with plugins/src/msdaPlugin.h (a test compares them).
"""
from __future__ import annotations

from dataclasses import dataclass

PLUGIN_DOMAIN = "trt.plugins"  # any non-ONNX domain reaches TensorRT's plugin fallback importer
NVIDIA_PLUGIN = "MultiscaleDeformableAttnPlugin_TRT"  # in libnvinfer_plugin
NVIDIA_PLUGIN_DEFAULT_VERSION = "2"  # IPluginV3, TensorRT >= 10.11; "1" for older TensorRT (JetPack 6)
OUR_PLUGIN = "DetrDeployMSDA_TRT"  # plugins/ (libdetr_deploy_plugins.so)
OUR_PLUGIN_VERSION = "1"
OUR_PLUGIN_LIBRARY = "libdetr_deploy_plugins.so"
# op type -> the node's output is flat [N, Lq, M*D]
PLUGIN_OPS = {NVIDIA_PLUGIN: False, OUR_PLUGIN: True}


@dataclass(frozen=True)
class PluginSpec:
    """Which plugin node the exporter writes.

    Attributes:
        name: op type = TensorRT plugin name.
        version: ``plugin_version`` attribute.
        namespace: ``plugin_namespace`` attribute.
        flat_output: the plugin returns ``[N,Lq,M*D]`` itself (ours) instead of ``[N,Lq,M,D]`` (NVIDIA's).
        library: the plugin library to load, None for NVIDIA's (part of TensorRT).
    """

    name: str = NVIDIA_PLUGIN
    version: str = NVIDIA_PLUGIN_DEFAULT_VERSION
    namespace: str = ""
    flat_output: bool = False
    library: str | None = None

    @classmethod
    def for_name(cls, name: str | None, version: str | None) -> PluginSpec:
        if name in (None, NVIDIA_PLUGIN):
            return cls(NVIDIA_PLUGIN, version or NVIDIA_PLUGIN_DEFAULT_VERSION)
        if name == OUR_PLUGIN:
            return cls(OUR_PLUGIN, version or OUR_PLUGIN_VERSION, flat_output=True, library=OUR_PLUGIN_LIBRARY)
        # a user's own plugin with our contract: assume the flat output
        return cls(name, version or "1", flat_output=True)


def is_plugin_node(op_type: str, domain: str | None = None) -> bool:
    """True for an MSDA plugin node (by op type; ``domain`` is checked when given)."""
    return op_type in PLUGIN_OPS and (domain is None or domain in (PLUGIN_DOMAIN, "ai.onnx.contrib"))
