# SPDX-License-Identifier: Apache-2.0
"""ONNX export: every variant in both MSDA forms, dynamic shapes, plugin nodes, metadata, clean failures."""
from __future__ import annotations

import hashlib
import json
import os
import stat

import onnx
import pytest
import torch

import detr_deploy
from detr_deploy.artifact.metadata import read_onnx_metadata
from detr_deploy.cli import export as export_cli
from detr_deploy.export import ExportConfig, export_onnx
from detr_deploy.export.verify import synthetic_batch
from detr_deploy.weights import ours_to_official

from conftest import key_spec, onnx_vs_torch, synthetic_state, tiny_model, tiny_overrides

TOLERANCE = 1e-4
DEFORMABLE = ["deformable-detr", "deformable-detr-single-scale", "deformable-detr-refine",
              "deformable-detr-two-stage"]
# tiny overrides replace the backbone, so tiny r101 == tiny r50: R101 is covered by the key-layout tests
DETR = ["detr-r50", "detr-r50-dc5"]
CASES = [(v, "gridsample") for v in DETR] + [(v, f) for v in DEFORMABLE for f in ("plugin", "gridsample")]
DYNAMIC_SIZE = (192, 256)  # the example size of every dynamic test export (shared with the runtime tests)
QUIET = {"log": lambda message: None}


def _run_both(model, path, pixels, mask):
    diff = onnx_vs_torch(model, path, pixels, mask)
    return diff.max_abs_logits, diff.max_abs_boxes


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("variant,form", CASES)
def test_every_variant_exports_and_matches_pytorch(variant, form, dynamic, exported):
    """Every variant x MSDA form x shape mode; dynamic files at two sizes and a padded batch of two."""
    model, path = exported(variant, form, dynamic=dynamic, size=DYNAMIC_SIZE if dynamic else (160, 192))
    inputs = [(2, 160, 192, [(160, 192), (120, 150)])]
    if dynamic:
        inputs = [(1, 192, 256, None), (1, 288, 224, None), (2, 240, 320, [(240, 320), (180, 200)])]
    for batch, h, w, valid in inputs:
        pixels, mask = synthetic_batch(batch, h, w, valid=valid, seed=h + w)
        d_logits, d_boxes = _run_both(model, path, pixels, mask)
        print(f"\n{variant} [{form}, {'dynamic' if dynamic else 'static'}] {batch}x{h}x{w}: onnxruntime vs PyTorch "
              f"max|dlogits|={d_logits:.2e} max|dboxes|={d_boxes:.2e}")
        assert d_logits <= TOLERANCE and d_boxes <= TOLERANCE
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    plugin_nodes = [n for n in proto.graph.node if n.op_type == "MultiscaleDeformableAttnPlugin_TRT"]
    assert bool(plugin_nodes) == (form == "plugin" and variant.startswith("deformable"))
    if variant.startswith("deformable"):
        assert ("GridSample" in ops) == (form == "gridsample")
        layers = model.config.encoder_layers + model.config.decoder_layers
        assert len(plugin_nodes) == (layers if form == "plugin" else 0)
    assert "LayerNormalization" in ops and not ops & {"Dropout", "BatchNormalization"}
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    expected = [["batch", 3, "height", "width"], ["batch", "height", "width"]] if dynamic else \
        [[2, 3, 160, 192], [2, 160, 192]]
    assert dims == expected
    meta = read_onnx_metadata(proto)
    assert meta.variant == variant and meta.num_queries == model.config.num_queries


@pytest.fixture(scope="module")
def dynamic_two_stage(exported):
    """The dynamic plugin-form export of the hardest variant (two-stage + refine), shared by several tests."""
    return exported("deformable-detr-two-stage", "plugin", dynamic=True, size=DYNAMIC_SIZE)


def test_plugin_nodes_carry_attributes_int32_inputs_and_shapes(dynamic_two_stage):
    _, path = dynamic_two_stage
    proto = onnx.load(str(path))
    types = {vi.name: vi.type.tensor_type for vi in list(proto.graph.value_info) + list(proto.graph.input)}
    consumers = {i: n for n in proto.graph.node for i in n.input}
    nodes = [n for n in proto.graph.node if n.op_type == "MultiscaleDeformableAttnPlugin_TRT"]
    assert nodes
    for node in nodes:
        assert node.domain == "trt.plugins"
        attrs = {a.name: a.s.decode() for a in node.attribute}
        assert attrs == {"plugin_version": "2", "plugin_namespace": ""}
        assert types[node.input[1]].elem_type == onnx.TensorProto.INT32
        assert types[node.input[2]].elem_type == onnx.TensorProto.INT32
        out = types[node.output[0]]
        assert out.elem_type == onnx.TensorProto.FLOAT and len(out.shape.dim) == 4  # [N, Lq, M, D]
        assert [d.dim_value for d in out.shape.dim[2:]] == [2, 16]
        assert consumers[node.output[0]].op_type == "Reshape"
    assert any(o.domain == "trt.plugins" for o in proto.opset_import)
    assert len(proto.functions) == 0  # a local function would shadow the plugin in TensorRT


def test_plugin_version_1_and_our_plugin_name(tmp_path, exported):
    model, _ = exported("deformable-detr", "plugin")
    pixels, mask = synthetic_batch(1, 160, 192, seed=5)
    for name, version, flat in [(None, "1", False), ("DetrDeployMSDA_TRT", None, True)]:
        path = tmp_path / f"{name}_{version}.onnx"
        export_onnx(model, path, ExportConfig(msda="plugin", plugin_name=name, plugin_version=version,
                                              dynamic=False, input_size=(160, 192)), **QUIET)
        proto = onnx.load(str(path))
        node = next(n for n in proto.graph.node if n.domain == "trt.plugins")
        assert node.op_type == (name or "MultiscaleDeformableAttnPlugin_TRT")
        attrs = {a.name: a.s.decode() for a in node.attribute}
        assert attrs["plugin_version"] == (version or "1")
        shape = next(vi for vi in proto.graph.value_info if vi.name == node.output[0]).type.tensor_type.shape
        assert len(shape.dim) == (3 if flat else 4)
        meta = read_onnx_metadata(proto)
        assert meta.msda.plugin_name == node.op_type
        assert meta.msda.plugin_library == (None if name is None else "libdetr_deploy_plugins.so")
        assert max(_run_both(model, path, pixels, mask)) <= TOLERANCE


def test_metadata_is_enough_to_run_the_file(tmp_path, exported):
    overrides = tiny_overrides("detr-r50")
    overrides.pop("num_classes")  # keep the 91 COCO classes and their names
    source = detr_deploy.create_model("detr-r50", weights="random", **overrides)
    ckpt = tmp_path / "detr.pth"
    torch.save({"model": ours_to_official(source.state_dict())}, ckpt)
    model = detr_deploy.create_model("detr-r50", weights=str(ckpt), **overrides)
    path = tmp_path / "detr.onnx"
    export_onnx(model, path, ExportConfig(dynamic=False, input_size=(128, 160)), **QUIET)
    meta = read_onnx_metadata(onnx.load(str(path)))
    assert meta.weights["source"] == str(ckpt) and meta.weights["format"] == "official"
    assert meta.weights["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert meta.family == "detr" and meta.postprocess.kind == "softmax-drop-last" and meta.msda is None
    assert meta.preprocess.resize == "fit" and meta.preprocess.input_size == (128, 160)
    assert meta.id2label[1] == "person" and len(meta.id2label) == 91
    assert meta.inputs["pixel_mask"] == {"shape": [1, 128, 160], "dtype": "int32"}
    assert meta.outputs["logits"]["shape"] == [1, 10, 92]
    assert meta.precision == "fp32" and meta.detr_deploy_version == detr_deploy.__version__
    _, refine_path = exported("deformable-detr-refine", "plugin")
    meta = read_onnx_metadata(onnx.load(str(refine_path)))
    assert meta.postprocess.kind == "sigmoid-top-k" and meta.postprocess.top_k == 60  # min(100, 12 * 5)
    assert meta.msda.form == "plugin" and meta.msda.plugin_version == "2" and meta.weights["source"] == "random"
    assert meta.extra["model_config"]["with_box_refine"] is True


def test_export_is_deterministic(tmp_path, exported):
    model, first = exported("deformable-detr", "plugin")
    again = tmp_path / "again.onnx"
    export_onnx(model, again, ExportConfig(dynamic=False, input_size=(160, 192), batch=2), **QUIET)
    assert hashlib.sha256(first.read_bytes()).hexdigest() == hashlib.sha256(again.read_bytes()).hexdigest()


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    model = tiny_model("detr-r50")
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous file")

    def broken_save(proto, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    monkeypatch.setattr(onnx, "save_model", broken_save)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(model, target, ExportConfig(dynamic=False, input_size=(128, 160)), **QUIET)
    assert target.read_bytes() == b"previous file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


@pytest.mark.parametrize("argv,message", [
    (["--model", "deformable-dert"], "unknown model 'deformable-dert'. Did you mean deformable-detr"),
    (["--model", "deformable", "--weights", "random", "--input-size", "40x40"], "input size 40x40 is impossible"),
    (["--model", "deformable", "--weights", "random", "--opset", "13"], "opset 13 is not supported"),
])
def test_cli_errors_are_one_clear_line(argv, message, capsys):
    assert export_cli.run(export_cli.main, argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_mismatched_weights_and_list_models(tmp_path, capsys):
    ckpt = tmp_path / "two_stage.pth"
    torch.save({"model": synthetic_state(key_spec("official_ddetr_two_stage"))}, ckpt)
    assert export_cli.run(export_cli.main, ["--model", "deformable-detr", "--weights", str(ckpt)]) == 2
    assert "does not fit deformable-detr" in capsys.readouterr().err
    assert export_cli.run(export_cli.main, ["--list-models"]) == 0
    assert "deformable-detr-two-stage" in capsys.readouterr().out


TINY_CLI = ["--weights", "random", "--set", "num_classes=3",
            "--set", "backbone=" + json.dumps({"name": "resnet", "block": "basic", "depths": [1, 1, 1, 1],
                                               "widths": [8, 16, 32, 64], "stem_width": 8}),
            "--set", "d_model=32", "--set", "num_heads=2", "--set", "encoder_layers=1", "--set", "decoder_layers=1",
            "--set", "ffn_dim=32", "--set", "num_queries=10"]


def test_cli_exports_verifies_and_publishes_with_normal_permissions(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert export_cli.run(export_cli.main, ["--model", "deformable", "--input-size", "128x160", *TINY_CLI]) == 0
    captured = capsys.readouterr()
    path = tmp_path / "deformable-detr_plugin-v2_fp32_b1-128x160.onnx"
    assert path.is_file() and captured.out.strip() == path.name
    assert "verified (fp32): max abs difference" in captured.err and "max|dlogit|" in captured.err
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # readable by others, as any file the user writes
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no staging file left
    # a noise-level warning from torch's op registry must not reach the user
    assert "torchvision is not installed" not in captured.err


def test_cli_failed_verification_keeps_the_file_under_a_name_that_says_so(tmp_path, monkeypatch, capsys):
    from detr_deploy.compare import DEFAULT_TOLERANCES, Tolerance

    monkeypatch.chdir(tmp_path)
    # a tolerance no export can meet makes verification fail with an otherwise correct file
    monkeypatch.setitem(DEFAULT_TOLERANCES, "fp32", Tolerance(0.0, 0.0, 1.01))
    argv = ["--model", "deformable", "--input-size", "128x160", *TINY_CLI, "-o", "tiny.onnx"]
    assert export_cli.run(export_cli.main, argv) == 1
    err = capsys.readouterr().err
    assert "VERIFICATION FAILED" in err and "tiny.failed-verification.onnx" in err
    assert "tiny.onnx was not written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.failed-verification.onnx"]


def test_cli_interrupted_export_leaves_nothing(tmp_path, monkeypatch, capsys):
    from detr_deploy.export import verify

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(verify, "verify_onnx", interrupted)  # Ctrl-C during verification, after the file exists
    assert export_cli.run(export_cli.main, ["--model", "deformable", "--input-size", "128x160", *TINY_CLI,
                                            "-o", "tiny.onnx"]) == 130
    assert list(tmp_path.iterdir()) == []
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("variant,form,dynamic", [("deformable-detr", "plugin", False),
                                                  ("detr-r50", "gridsample", False),
                                                  ("deformable-detr-two-stage", "gridsample", True)])
def test_full_size_exports(variant, form, dynamic, tmp_path):
    """Full-size R50 models (random weights); the dynamic two-stage GridSample graph once failed onnx.checker after
    onnxslim re-typed its proposal mask (see DeformableTransformer.encoder_proposals)."""
    torch.manual_seed(0)
    model = detr_deploy.create_model(variant, weights="random")
    path = tmp_path / "full.onnx"
    result = export_onnx(model, path, ExportConfig(msda=form, dynamic=dynamic, input_size=(800, 1066)), **QUIET)
    pixels, mask = synthetic_batch(1, 512, 640, seed=11) if dynamic else synthetic_batch(1, 800, 1066, seed=11)
    d_logits, d_boxes = _run_both(model, path, pixels, mask)
    print(f"\nfull-size {variant} [{form}, {'dynamic' if dynamic else 'static'}]: {result.num_nodes} nodes, "
          f"{result.size_bytes / 1e6:.0f} MB, export {result.seconds:.0f}s, max|dlogits|={d_logits:.2e} "
          f"max|dboxes|={d_boxes:.2e}")
    assert d_logits <= TOLERANCE and d_boxes <= TOLERANCE
