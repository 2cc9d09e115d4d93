# SPDX-License-Identifier: Apache-2.0
"""detr-parity (the CI gate) and detr-bench."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from detr_deploy.artifact.metadata import METADATA_KEY, ArtifactMetadata
from detr_deploy.cli import bench as bench_cli
from detr_deploy.cli import parity as parity_cli
from detr_deploy.errors import ConfigError
from detr_deploy.parity import ParityCheck, format_report, load_tolerances


@pytest.fixture(scope="module")
def photos(photo_folder):
    return sorted(str(p) for p in photo_folder.iterdir())[:3]


@pytest.fixture(scope="module")
def artifact(exported):
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


def test_parity_passes_on_a_correct_export(artifact, exported, photos):
    model, path = artifact
    _, static = exported("deformable-detr", "plugin")  # a static plugin-form file of the same model
    with ParityCheck(model, [str(path), str(static)]) as check:
        report = check.run(photos)
    print("\n" + format_report(report))
    assert report["passed"], report
    for a in report["artifacts"]:
        assert a["raw"]["max_abs_logits"] < 1e-3 and a["detections"]["matched"] == 1.0
        assert a["detections"]["reference"] > 0  # the check compared real detections
        assert a["pseudo_map"]["gt_detections"] > 0 and a["pseudo_map"]["drop"] <= 0.01


def test_parity_fails_clearly_on_a_corrupted_weight(artifact, photos, tmp_path):
    model, path = artifact
    corrupted = _modified(path, tmp_path, "corrupted.onnx", edit_graph=_scale_first_conv_weight)
    with ParityCheck(model, [str(corrupted)]) as check:
        report = check.run(photos)
    text = format_report(report)
    print("\n" + text)
    assert not report["passed"]
    violations = " ".join(report["artifacts"][0]["violations"])
    assert "max |dlogit|" in violations and "fp32 limit" in violations
    assert "FAIL" in text and "FAILED" in text


def test_parity_fails_on_wrong_preprocessing_while_raw_outputs_agree(artifact, photos, tmp_path):
    model, path = artifact

    def wrong_std(meta):
        meta.preprocess.std = (0.5, 0.5, 0.5)

    wrong = _modified(path, tmp_path, "wrong_pre.onnx", edit_metadata=wrong_std)
    with ParityCheck(model, [str(wrong)]) as check:
        report = check.run(photos)
    result = report["artifacts"][0]
    print("\n" + format_report(report))
    assert result["raw"]["max_abs_logits"] < 1e-3  # the graph itself is fine
    assert not report["passed"]
    assert any("matched detections" in v for v in result["violations"])


def test_tolerance_file_is_validated(tmp_path, artifact, photos):
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
    assert table.for_artifact("x/corrupted.onnx", "fp32").max_abs_logits == 100
    assert table.for_artifact("x/corrupted.onnx", "fp32").min_matched == 0.5
    assert table.for_artifact("other.onnx", "fp32").max_abs_logits == 1e-3
    assert table.for_artifact("other.onnx", "int8").max_abs_logits == 3.0


def test_detr_parity_cli_exit_codes_report_and_coco(artifact, photos, tmp_path, capsys):
    pytest.importorskip("pycocotools", reason="--coco uses pycocotools (pip install 'detr-deploy[eval]')")
    model, path = artifact
    import torch

    from detr_deploy.runtime import Detector
    from detr_deploy.runtime.coco import coco_ground_truth
    from detr_deploy.weights import ours_to_official

    ckpt = tmp_path / "tiny.pth"
    torch.save({"model": ours_to_official(model.state_dict())}, ckpt)
    # annotations = the artifact's own confident detections: both must score a COCO mAP near 1 on them
    with Detector(path, threshold=0.3) as detector:
        detections = detector(photos)
    sizes = [np.asarray(Image.open(p)).shape[:2] for p in photos]
    coco = coco_ground_truth(list(range(1, len(photos) + 1)), sizes, detections, model.config.id2label)
    for entry, p in zip(coco["images"], photos):
        entry["file_name"] = p.split("/")[-1]
    assert coco["annotations"]
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    # an official-format file fixes heads x points only: tell the loader the tiny model's 2 heads
    base = ["--model", str(ckpt), "--set", "num_heads=2", "--artifacts", str(path), "--images",
            str(photos[0].rsplit("/", 1)[0]), "-o", str(tmp_path / "report.json")]
    assert parity_cli.run(parity_cli.main, base + ["--coco", str(tmp_path / "ann.json")]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "COCO mAP" in out
    report = json.loads((tmp_path / "report.json").read_text())
    coco_result = report["artifacts"][0]["coco"]
    print(f"\nCOCO mAP on the artifact's own detections: reference {coco_result['reference']['mAP']:.3f}, "
          f"artifact {coco_result['artifact']['mAP']:.3f}")
    assert report["passed"] and coco_result["artifact"]["mAP"] > 0.95 and coco_result["reference"]["mAP"] > 0.9
    corrupted = _modified(path, tmp_path, "corrupted.onnx", edit_graph=_scale_first_conv_weight)
    failing = list(base)
    failing[failing.index("--artifacts") + 1] = str(corrupted)
    assert parity_cli.run(parity_cli.main, failing) == 1
    tol = tmp_path / "bad.json"
    tol.write_text('{"fp32": {"bogus": 1}}')
    assert parity_cli.run(parity_cli.main, base + ["--tolerances", str(tol)]) == 2
    assert "unknown field" in capsys.readouterr().err


def test_detr_bench_reports_stage_latencies(artifact, tmp_path, capsys):
    _, path = artifact
    out = tmp_path / "bench.json"
    assert bench_cli.run(bench_cli.main, [str(path), "--batch-sizes", "1", "2", "--iterations", "3", "--warmup", "1",
                                          "--input-size", "200x300", "--threads", "1", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "preprocess" in printed and "img/s" in printed
    data = json.loads(out.read_text())["results"]
    for batch in ("1", "2"):
        row = data[batch]
        # the artifact's own resize of the 200x300 source (shortest edge 800, longest 1333), batched
        assert row["input_shape"] == [int(batch), 3, 800, 1200]
        stages = sum(row[stage]["mean"] for stage in ("preprocess", "inference", "postprocess"))
        assert stages == pytest.approx(row["total"]["mean"], rel=0.05)
        assert row["images_per_second"] == pytest.approx(int(batch) / (row["total"]["mean"] / 1e3))
