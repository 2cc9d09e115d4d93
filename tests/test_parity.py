# SPDX-License-Identifier: Apache-2.0
"""detr-parity (the CI gate) and detr-bench."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from detr_deploy.cli import bench as bench_cli
from detr_deploy.cli import parity as parity_cli
from detr_deploy.errors import ConfigError
from detr_deploy.parity import ParityCheck, format_report, load_tolerances
from detr_deploy.runtime.metadata import METADATA_KEY, ArtifactMetadata

skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the photographs used here")
pytest.importorskip("pycocotools", reason="mAP uses pycocotools (pip install 'detr-deploy[eval]')")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(skdata, name)()).save(folder / f"{name}.jpg")
    return sorted(str(p) for p in folder.iterdir())


@pytest.fixture(scope="module")
def artefact(exported):
    return exported("deformable-detr", "gridsample", dynamic=True, size=(192, 256))


def _modified(path, tmp_path, name, edit_graph=None, edit_metadata=None):
    proto = onnx.load(str(path))
    if edit_graph:
        edit_graph(proto)
    if edit_metadata:
        for prop in proto.metadata_props:
            if prop.key == METADATA_KEY:
                meta = ArtifactMetadata.from_json(prop.value)
                edit_metadata(meta)
                prop.value = meta.to_json()
    out = tmp_path / name
    onnx.save(proto, str(out))
    return out


def _scale_first_conv_weight(proto):
    inits = {i.name: i for i in proto.graph.initializer}
    conv = next(n for n in proto.graph.node if n.op_type == "Conv" and n.input[1] in inits)
    weight = onnx.numpy_helper.to_array(inits[conv.input[1]]) * 1.5
    inits[conv.input[1]].CopyFrom(onnx.numpy_helper.from_array(weight.astype(np.float32), conv.input[1]))


def test_parity_passes_on_a_correct_export(artefact, exported, photos):
    model, path = artefact
    _, static = exported("deformable-detr", "plugin")  # a static plugin-form file of the same model
    check = ParityCheck(model, [str(path), str(static)])
    report = check.run(photos)
    check.close()
    print("\n" + format_report(report))
    assert report["passed"], report
    for a in report["artefacts"]:
        assert a["raw"]["max_abs_logits"] < 1e-3 and a["detections"]["matched"] == 1.0
        assert a["detections"]["reference"] > 0  # the check compared real detections
        assert a["pseudo_map"]["gt_detections"] > 0 and a["pseudo_map"]["drop"] <= 0.01


def test_parity_fails_clearly_on_a_corrupted_weight(artefact, photos, tmp_path):
    model, path = artefact
    corrupted = _modified(path, tmp_path, "corrupted.onnx", edit_graph=_scale_first_conv_weight)
    check = ParityCheck(model, [str(corrupted)])
    report = check.run(photos)
    check.close()
    text = format_report(report)
    print("\n" + text)
    assert not report["passed"]
    violations = " ".join(report["artefacts"][0]["violations"])
    assert "max |dlogit|" in violations and "fp32 limit" in violations
    assert "FAIL" in text and "FAILED" in text


def test_parity_fails_on_wrong_preprocessing_while_raw_outputs_agree(artefact, photos, tmp_path):
    model, path = artefact

    def wrong_std(meta):
        meta.preprocess.std = (0.5, 0.5, 0.5)

    wrong = _modified(path, tmp_path, "wrong_pre.onnx", edit_metadata=wrong_std)
    check = ParityCheck(model, [str(wrong)])
    report = check.run(photos)
    check.close()
    result = report["artefacts"][0]
    print("\n" + format_report(report))
    assert result["raw"]["max_abs_logits"] < 1e-3  # the graph itself is fine
    assert not report["passed"]
    assert any("matched detections" in v for v in result["violations"])


def test_tolerance_file_is_validated(tmp_path, artefact, photos):
    def write(data):
        path = tmp_path / "tol.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return str(path)

    for data, message in [("{not json", "not valid JSON"), ([1, 2], "must hold an object"),
                          ({"fp32": {"max_logits": 1}}, "unknown field"), ({"fp32": {"min_matched": 1.5}}, "fraction"),
                          ({"fp16": {"max_abs_boxes": -1}}, "must be a number >= 0"),
                          ({"fp16": 3}, "must map to an object")]:
        with pytest.raises(ConfigError, match=message):
            load_tolerances(write(data))
    with pytest.raises(ConfigError, match="does not exist"):
        load_tolerances(str(tmp_path / "missing.json"))
    table = load_tolerances(write({"fp32": {"min_matched": 0.5}, "corrupted.onnx": {"max_abs_logits": 100,
                                                                                     "max_abs_boxes": 100}}))
    assert table.for_artefact("x/corrupted.onnx", "fp32").max_abs_logits == 100
    assert table.for_artefact("x/corrupted.onnx", "fp32").min_matched == 0.5
    assert table.for_artefact("other.onnx", "fp32").max_abs_logits == 1e-3
    assert table.for_artefact("other.onnx", "int8").max_abs_logits == 3.0


def test_detr_parity_cli_exit_codes_report_and_coco(artefact, photos, tmp_path, capsys):
    model, path = artefact
    import torch

    from detr_deploy.weights import ours_to_official

    ckpt = tmp_path / "tiny.pth"
    torch.save({"model": ours_to_official(model.state_dict())}, ckpt)
    coco = {"images": [{"id": i + 1, "file_name": p.split("/")[-1], "width": 10, "height": 10}
                       for i, p in enumerate(photos)],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 100, 100], "area": 1e4,
                             "iscrowd": 0}],
            "categories": [{"id": i, "name": str(i)} for i in range(5)]}
    for i, p in enumerate(photos):
        coco["images"][i]["height"], coco["images"][i]["width"] = np.asarray(Image.open(p)).shape[:2]
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    # an official-format file fixes heads x points only: tell the loader the tiny model's 2 heads
    base = ["--model", str(ckpt), "--set", "num_heads=2", "--artifacts", str(path), "--images",
            str(photos[0].rsplit("/", 1)[0]), "--report", str(tmp_path / "report.json")]
    assert parity_cli.run(parity_cli.main, base + ["--coco", str(tmp_path / "ann.json")]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "COCO mAP" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] and report["artefacts"][0]["coco"]["reference"]["mAP"] >= 0
    corrupted = _modified(path, tmp_path, "corrupted.onnx", edit_graph=_scale_first_conv_weight)
    failing = list(base)
    failing[failing.index("--artifacts") + 1] = str(corrupted)
    assert parity_cli.run(parity_cli.main, failing) == 1
    tol = tmp_path / "bad.json"
    tol.write_text('{"fp32": {"bogus": 1}}')
    assert parity_cli.run(parity_cli.main, base + ["--tolerances", str(tol)]) == 2
    assert "unknown field" in capsys.readouterr().err


def test_detr_bench_reports_stage_latencies(artefact, tmp_path, capsys):
    _, path = artefact
    out = tmp_path / "bench.json"
    assert bench_cli.run(bench_cli.main, [str(path), "--batch", "1", "2", "--iterations", "3", "--warmup", "1",
                                          "--input-size", "200x300", "--threads", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "preprocess" in printed and "img/s" in printed
    data = json.loads(out.read_text())["results"]
    for batch in ("1", "2"):
        for stage in ("preprocess", "inference", "postprocess", "total"):
            assert data[batch][stage]["p50"] > 0 and data[batch][stage]["p99"] >= data[batch][stage]["p50"]
        assert data[batch]["images_per_second"] > 0
    assert data["2"]["input_shape"][0] == 2
