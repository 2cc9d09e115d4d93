# SPDX-License-Identifier: Apache-2.0
"""The project's own trained model: the scene renderer, the training loop (smoke), and the shipped weights."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import detr_deploy
from detr_deploy.zoo.shapes import CATEGORIES, RenderConfig, render_dataset, render_scene

pytest.importorskip("skimage.data", reason="the renderer cuts backgrounds from scikit-image's photographs")
WEIGHTS = Path(detr_deploy.__file__).parent / "zoo" / "weights" / "deformable_detr_shapes.safetensors"


def test_renderer_is_deterministic_and_varied(tmp_path):
    a = render_dataset(tmp_path / "a", 12, seed=5, progress=False)
    b = render_dataset(tmp_path / "b", 12, seed=5, progress=False)
    c = render_dataset(tmp_path / "c", 12, seed=6, progress=False)
    assert a.read_text() == b.read_text() and a.read_text() != c.read_text()
    for name in ("000001.jpg", "000012.jpg"):
        assert (tmp_path / "a/images" / name).read_bytes() == (tmp_path / "b/images" / name).read_bytes()
    coco = json.loads(a.read_text())
    assert [im["file_name"] for im in coco["images"]] == [f"{im['id']:06d}.jpg" for im in coco["images"]]
    assert len(coco["categories"]) == len(CATEGORIES) >= 8
    assert {im["width"] for im in coco["images"]} != {coco["images"][0]["width"]}  # varied sizes
    for ann in coco["annotations"]:
        image = coco["images"][ann["image_id"] - 1]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= image["width"] + 1e-3 and y + h <= image["height"] + 1e-3
        assert w > 0 and h > 0 and ann["area"] == pytest.approx(w * h, rel=1e-3)


def test_scenes_span_small_to_large_objects():
    sides = []
    for index in range(60):
        image, objects = render_scene(11, index)
        short = min(image.size)
        sides += [min(o["bbox"][2], o["bbox"][3]) / short for o in objects]
    assert min(sides) < 0.06 and max(sides) > 0.4  # from about 12 px to nearly half the image
    assert np.mean([len(render_scene(11, i)[1]) for i in range(20)]) > 2  # several objects per scene


def test_training_smoke_and_resume(tmp_path):
    from detr_deploy.train.trainer import TrainConfig, train

    data = tmp_path / "data"
    render_dataset(data, 6, seed=1, config=RenderConfig(max_side=320), progress=False)
    config = TrainConfig("deformable-detr-shapes", str(data), str(tmp_path / "run"), val_data=str(data),
                         iterations=2, batch_size=2, checkpoint_every=1, eval_every=2, eval_images=2, threads=1)
    train(config, log=lambda m: None)
    records = [json.loads(line) for line in (tmp_path / "run/train.log").read_text().splitlines()]
    assert records[-1]["eval"]["mAP"] >= 0 and any(r.get("step") == 2 and "total" in r for r in records)
    resumed = TrainConfig(**{**config.__dict__, "iterations": 3})
    messages = []
    weights = train(resumed, log=messages.append)
    assert any("resumed" in m and "step 2" in m for m in messages)
    model = detr_deploy.create_model("deformable-detr-shapes", weights=str(weights))
    assert model.weights_info["format"] == "ours"


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="the shipped weights are missing from this checkout")
def test_shipped_model_detects_shapes_and_its_export_keeps_the_map(tmp_path):
    """mAP@[.5:.95] on freshly rendered scenes (a seed never used in training), PyTorch and exported ONNX."""
    from detr_deploy.export import ExportConfig, export_onnx
    from detr_deploy.parity import ParityCheck

    val = tmp_path / "val"
    ann = render_dataset(val, 40, seed=7, progress=False)
    coco = json.loads(ann.read_text())
    torch.manual_seed(0)
    model = detr_deploy.create_model("deformable-detr-shapes")  # offline: weights ship with the package
    assert model.weights_info["source"].endswith("deformable_detr_shapes.safetensors")
    path = tmp_path / "shapes.onnx"
    export_onnx(model, path, ExportConfig(msda="plugin", dynamic=True), log=lambda m: None)
    images = [str(val / "images" / im["file_name"]) for im in coco["images"]]
    check = ParityCheck(model, [str(path)])
    report = check.run(images, coco, [im["id"] for im in coco["images"]])
    check.close()
    result = report["artefacts"][0]
    reference_map, onnx_map = result["coco"]["reference"]["mAP"], result["coco"]["artefact"]["mAP"]
    print(f"\nshapes model on 40 fresh scenes: mAP PyTorch {reference_map:.3f}, ONNX (plugin form) {onnx_map:.3f}")
    assert reference_map >= 0.5  # measured 0.548 on these 40 scenes (0.581 on 200 held-out scenes of seed 3)
    assert abs(reference_map - onnx_map) <= 0.005
    assert report["passed"]


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="the shipped weights are missing from this checkout")
def test_detr_export_of_the_shapes_model_works_offline(tmp_path, monkeypatch, capsys):
    from detr_deploy.cli import export as export_cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    assert export_cli.run(export_cli.main, ["--model", "deformable-detr-shapes", "--input-size", "256x416",
                                            "-o", "shapes.onnx"]) == 0
    err = capsys.readouterr().err
    assert "RANDOM" not in err and "deformable_detr_shapes.safetensors" in err and "verified (fp32)" in err


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="the shipped weights are missing from this checkout")
def test_shapes_model_keeps_its_detections_in_fp16_and_int8(tmp_path):
    """FP16 and INT8 (calibrated on rendered scenes) against the trained PyTorch model, on fresh scenes."""
    from detr_deploy.export import ExportConfig, export_onnx
    from detr_deploy.export.quantize import CalibrationConfig, calibration_images
    from detr_deploy.parity import ParityCheck

    ann = render_dataset(tmp_path / "val", 20, seed=7, progress=False)
    render_dataset(tmp_path / "calib", 8, seed=4, progress=False)
    coco = json.loads(ann.read_text())
    model = detr_deploy.create_model("deformable-detr-shapes")
    calibration = CalibrationConfig(calibration_images(tmp_path / "calib" / "images", 8))
    paths = []
    for precision in ("fp16", "int8"):
        paths.append(tmp_path / f"shapes_{precision}.onnx")
        export_onnx(model, paths[-1], ExportConfig(msda="gridsample", dynamic=False, input_size=(256, 416),
                                                   precision=precision,
                                                   calibration=calibration if precision == "int8" else None),
                    log=lambda m: None)
    check = ParityCheck(model, [str(p) for p in paths])
    report = check.run([str(tmp_path / "val" / "images" / im["file_name"]) for im in coco["images"]], coco,
                       [im["id"] for im in coco["images"]])
    check.close()
    fp16, int8 = report["artefacts"]
    for name, a in (("FP16", fp16), ("INT8", int8)):
        d = a["detections"]
        print(f"\n{name}: matched {d['matched']:.1%} of {d['reference']} detections, box L1 {d['box_l1_mean']:.2f} px, "
              f"max score delta {d['score_delta_max']:.3f}, COCO mAP {a['coco']['artefact']['mAP']:.3f} "
              f"(PyTorch {a['coco']['reference']['mAP']:.3f})")
    # measured: FP16 100% matched, mAP -0.001; INT8 (8 calibration scenes, static input) 78% matched, mAP -0.023
    assert fp16["passed"] and fp16["detections"]["matched"] >= 0.95 and abs(fp16["coco"]["drop"]) <= 0.01
    assert int8["passed"] and abs(int8["coco"]["drop"]) <= 0.04
