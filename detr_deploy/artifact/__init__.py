# SPDX-License-Identifier: Apache-2.0
"""The artifact contract: what an exported ONNX file or TensorRT engine records and needs, shared by the exporter
(which writes it) and the runtime (which reads it). Pure Python: no torch, no numpy.

- ``metadata``: the metadata document (pre/post-processing, labels, inputs/outputs, MSDA form, precision).
- ``msda``: the MSDA plugin contract (op names, versions, domain, output layout).
- ``settings``: per-model pre/post-processing settings (one rule for exporter, trainer and gate).
- ``kinds``: ONNX file or TensorRT engine.
- ``tensorrt``: engine sidecars, plugin libraries, GPU identity and compatibility.
"""
from .kinds import artifact_kind
from .metadata import METADATA_KEY, ArtifactMetadata, MSDAInfo, Postprocess, Preprocess, read_onnx_metadata

__all__ = ["METADATA_KEY", "ArtifactMetadata", "MSDAInfo", "Postprocess", "Preprocess", "artifact_kind",
           "read_onnx_metadata"]
