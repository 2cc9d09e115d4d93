# SPDX-License-Identifier: Apache-2.0
"""detr-build: everything that does not need TensorRT is tested here; engine builds need TensorRT and a GPU."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from detr_deploy.artifact.kinds import sidecar_path
from detr_deploy.artifact.metadata import ArtifactMetadata, MSDAInfo, read_onnx_metadata
from detr_deploy.artifact.tensorrt import check_engine_compatibility, engine_metadata
from detr_deploy.cli import build as build_cli
from detr_deploy.errors import ArtifactError, ConfigError
from detr_deploy.export.trt_build import (
    Profile,
    check_plugins,
    derive_profile,
    explain_parser_errors,
    parse_shapes,
    trtexec_command,
    write_engine,
)


@pytest.fixture(scope="module")
def metas(exported):
    """Metadata of a dynamic plugin-form export and a static one."""
    _, dynamic = exported("deformable-detr-two-stage", "plugin", dynamic=True, size=(192, 256))
    _, static = exported("deformable-detr", "plugin")
    return (read_onnx_metadata(onnx.load(str(dynamic), load_external_data=False)),
            read_onnx_metadata(onnx.load(str(static), load_external_data=False)), dynamic)


def test_default_profiles(metas):
    dynamic, static, _ = metas
    low = dynamic.extra["min_size"]
    profile = derive_profile(dynamic)
    assert profile == Profile((1, low, low), (1, 800, 1066), (1, 1333, 1333))
    assert profile.input_shapes()["pixel_values"] == ((1, 3, low, low), (1, 3, 800, 1066), (1, 3, 1333, 1333))
    assert profile.input_shapes()["pixel_mask"][2] == (1, 1333, 1333)
    assert derive_profile(static) == Profile((2, 160, 192), (2, 160, 192), (2, 160, 192))


def test_user_profiles_are_validated(metas):
    dynamic, static, _ = metas
    assert derive_profile(dynamic, parse_shapes("1x320x320/2x800x1066/4x1344x1344")).max == (4, 1344, 1344)
    for text, message in [("1x320x320/1x800x1066", "min/opt/max"), ("1x320/1x800x1066/1x900x900", "BxHxW"),
                          ("1x900x900/1x800x800/1x1000x1000", "min <= opt <= max"),
                          ("1x8x8/1x800x800/1x1000x1000", "outside what this model accepts"),
                          ("0x320x320/1x800x800/1x1000x1000", "batch must be >= 1")]:
        with pytest.raises(ConfigError, match=message):
            derive_profile(dynamic, parse_shapes(text))
    with pytest.raises(ConfigError, match="static input"):
        derive_profile(static, parse_shapes("1x320x320/1x800x1066/1x1333x1333"))


def test_plugin_checks_name_the_fix(metas):
    dynamic, _, _ = metas
    check_plugins(dynamic, "10.11.0", [])  # NVIDIA's v2 plugin exists from 10.11
    check_plugins(dynamic, "11.1.0", [])
    with pytest.raises(ArtifactError, match="version 2.*TensorRT 10.3.0.*--plugin-version 1"):
        check_plugins(dynamic, "10.3.0", [])
    ours = ArtifactMetadata.from_json(dynamic.to_json())
    ours.msda = MSDAInfo("plugin", "DetrDeployMSDA_TRT", "1", "", "libdetr_deploy_plugins.so")
    with pytest.raises(ArtifactError, match="DetrDeployMSDA_TRT version 1.*--plugins.*libdetr_deploy_plugins.so"):
        check_plugins(ours, "10.3.0", [])
    check_plugins(ours, "10.3.0", ["/opt/libdetr_deploy_plugins.so"])
    text = explain_parser_errors(["[pluginV2Builder] Plugin not found, are the plugin name, version, and namespace "
                                  "correct?"], ours, [])
    assert "DetrDeployMSDA_TRT version 1 namespace ''" in text and "Libraries loaded: none" in text


def test_trtexec_command_per_api_generation():
    profile = Profile((1, 65, 65), (1, 800, 1066), (2, 1333, 1333))
    ten = trtexec_command("m.onnx", "m.engine", profile, "fp16", 10, ["/p/lib.so"], 2048, "t.cache", False)
    assert "--fp16" in ten and "--dynamicPlugins=/p/lib.so" in ten and "--memPoolSize=workspace:2048M" in ten
    assert "--minShapes=pixel_values:1x3x65x65,pixel_mask:1x65x65" in ten
    assert "--maxShapes=pixel_values:2x3x1333x1333,pixel_mask:2x1333x1333" in ten
    eleven = trtexec_command("m.onnx", "m.engine", profile, "fp16", 11, [], None, None, False)
    assert "--fp16" not in eleven and "--int8" not in eleven  # removed in 11.x: precision is in the graph
    typed = trtexec_command("m.onnx", "m.engine", profile, "int8", 10, [], None, None, True)
    assert "--stronglyTyped" in typed and "--int8" not in typed


def test_sidecar_holds_metadata_tensorrt_and_gpu(metas, tmp_path):
    dynamic, _, _ = metas
    profile = derive_profile(dynamic)
    meta = engine_metadata(dynamic, "10.3.0.26", {"gpu_name": "Orin", "compute_capability": "8.7"},
                           ["/opt/libdetr_deploy_plugins.so"], profile.to_dict())
    engine = tmp_path / "model.engine"
    sidecar = write_engine(b"\x00engine bytes", engine, meta)
    assert sidecar == sidecar_path(engine) and engine.read_bytes() == b"\x00engine bytes"
    data = json.loads(sidecar.read_text())
    assert data["tensorrt"]["version"] == "10.3.0.26" and data["tensorrt"]["compute_capability"] == "8.7"
    assert data["tensorrt"]["profile"]["opt"] == [1, 800, 1066]
    assert data["variant"] == dynamic.variant and data["msda"]["plugin_name"] == "MultiscaleDeformableAttnPlugin_TRT"
    restored = ArtifactMetadata.from_json(sidecar.read_text())
    assert restored.id2label == dynamic.id2label and restored.tensorrt["plugin_libraries"]


def test_engine_for_another_tensorrt_or_gpu_is_refused(metas, tmp_path):
    dynamic, _, _ = metas
    meta = engine_metadata(dynamic, "10.3.0.26", {"gpu_name": "Orin", "compute_capability": "8.7"}, [], {})
    with pytest.raises(ArtifactError, match="built with TensorRT 10.3.0.26, this machine has 11.1.0.*detr-build"):
        check_engine_compatibility(SimpleNamespace(__version__="11.1.0.106"), meta, tmp_path / "m.engine",
                                   "NVIDIA H100", "9.0")
    with pytest.raises(ArtifactError, match="compute capability 8.7 \\(Orin\\), this one is 9.0"):
        check_engine_compatibility(SimpleNamespace(__version__="10.3.0.26"), meta, tmp_path / "m.engine",
                                   "NVIDIA H100", "9.0")
    check_engine_compatibility(SimpleNamespace(__version__="10.3.0.30"), meta, tmp_path / "m.engine", "Orin", "8.7")


def test_detr_build_without_tensorrt_says_what_to_install(metas, capsys):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here; this checks the message when it is not")
    except ImportError:
        pass
    _, _, path = metas
    assert build_cli.run(build_cli.main, [str(path)]) == 2
    err = capsys.readouterr().err
    assert "tensorrt is needed" in err and "detr-deploy[trt]" in err and "Traceback" not in err


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_engine_builds_and_matches_onnxruntime(exported, tmp_path):
    """Build an engine from a dynamic export and compare TensorRT with onnxruntime on two sizes."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here (NVIDIA's package index is unreachable)")
    from detr_deploy.export.trt_build import build_engine
    from detr_deploy.export.verify import synthetic_batch
    from detr_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from detr_deploy.runtime.backends.tensorrt import TensorRTBackend

    _, path = exported("deformable-detr", "plugin", dynamic=True, size=(192, 256))
    result = build_engine(path, tmp_path / "model.engine", shapes=parse_shapes("1x128x128/1x192x256/2x320x320"))
    with TensorRTBackend(result.engine) as trt_backend, OnnxRuntimeBackend(path) as ort_backend:
        for batch, h, w in [(1, 192, 256), (2, 256, 320)]:
            pixels, mask = synthetic_batch(batch, h, w, seed=h)
            feeds = {"pixel_values": pixels, "pixel_mask": mask}
            a, b = trt_backend(feeds), ort_backend(feeds)
            assert np.abs(a["logits"] - b["logits"]).max() < 1e-3
