# SPDX-License-Identifier: Apache-2.0
"""DETR panoptic: the model equals transformers' DetrForSegmentation, checkpoints of both formats load, the three
outputs export and match PyTorch, and the runtime, detr-infer and the gate handle segmentation artifacts."""
from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import save_file

import detr_deploy
from detr_deploy.artifact.metadata import read_onnx_metadata
from detr_deploy.export import ExportConfig, export_onnx
from detr_deploy.export.verify import synthetic_batch
from detr_deploy.runtime import Detector
from detr_deploy.runtime import segmentation as seg
from detr_deploy.weights import ours_to_official

from conftest import (
    key_spec,
    onnx_vs_torch,
    padded_batch,
    randomize_,
    segmentation_vs_transformers,
    synthetic_state,
    tiny_model,
    two_sizes_and_a_padded_batch,
)

TOLERANCE = 1e-4


# --- the model against transformers -----------------------------------------------------------------------------
def tiny_hf_segmentation():
    from transformers import DetrConfig, DetrForSegmentation, ResNetConfig

    backbone = ResNetConfig(embedding_size=16, hidden_sizes=[32, 64, 128, 256], depths=[1, 2, 1, 1],
                            layer_type="bottleneck", out_features=["stage1", "stage2", "stage3", "stage4"])
    config = DetrConfig(backbone_config=backbone, use_timm_backbone=False, use_pretrained_backbone=False, d_model=64,
                        encoder_layers=2, decoder_layers=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
                        encoder_attention_heads=8, decoder_attention_heads=8, num_queries=12, num_labels=9)
    return DetrForSegmentation(config).eval()


def test_tiny_segmentation_model_matches_transformers(tmp_path):
    pytest.importorskip("transformers", reason="transformers is the parity oracle")
    torch.manual_seed(0)
    hf_model = tiny_hf_segmentation()
    randomize_(hf_model)
    inputs = two_sizes_and_a_padded_batch((50, 70))
    ours, diffs = segmentation_vs_transformers(hf_model, tmp_path, inputs)
    print("\nDetrForSegmentation vs ours (logits, boxes, masks):", [f"{a:.1e}/{b:.1e}/{c:.1e}" for a, b, c in diffs])
    assert type(ours).__name__ == "DETRSegmentation" and ours.config.num_classes == 9
    assert max(max(d) for d in diffs) <= TOLERANCE


@pytest.mark.slow
def test_full_size_r50_panoptic_matches_transformers(tmp_path):
    pytest.importorskip("transformers", reason="transformers is the parity oracle")
    from transformers import DetrConfig, DetrForSegmentation, ResNetConfig

    torch.manual_seed(0)
    backbone = ResNetConfig(embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
                            layer_type="bottleneck", out_features=["stage1", "stage2", "stage3", "stage4"])
    hf_model = DetrForSegmentation(DetrConfig(backbone_config=backbone, use_timm_backbone=False,
                                              use_pretrained_backbone=False, num_labels=250)).eval()
    randomize_(hf_model)
    inputs = [padded_batch((480, 640), (400, 520)), padded_batch((640, 480), (640, 480))]
    ours, diffs = segmentation_vs_transformers(hf_model, tmp_path, inputs)
    print("\nfull-size R50 panoptic vs transformers (logits, boxes, masks):", diffs)
    assert ours.num_parameters() == 42_899_288  # the published panoptic model's count (DETR R50 + 1.37M head)
    assert max(max(d) for d in diffs) <= TOLERANCE


# --- checkpoints ----------------------------------------------------------------------------------------------------
def test_official_and_hub_panoptic_checkpoints_load(tmp_path):
    state = synthetic_state(key_spec("official_detr_r50_panoptic"), seed=5)
    torch.save({"model": state}, tmp_path / "detr-r50-panoptic-00ce5173.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "DC5 cannot be read from the keys"
        model = detr_deploy.create_model(str(tmp_path / "detr-r50-panoptic-00ce5173.pth"))
    assert type(model).__name__ == "DETRSegmentation" and model.config.num_classes == 250
    assert model.config.stuff_ids[:3] == (92, 93, 95) and len(model.config.stuff_ids) == 53
    back = ours_to_official(model.state_dict())
    assert sorted(back) == sorted(state) and all(torch.equal(back[k], state[k]) for k in state)
    hub = synthetic_state(key_spec("hf_detr_r50_panoptic"), seed=6)
    save_file({k: v.contiguous() for k, v in hub.items()}, tmp_path / "model.safetensors")
    from_hub = detr_deploy.create_model("detr-r50-panoptic", weights=str(tmp_path / "model.safetensors"))
    ours = from_hub.state_dict()
    for hub_key, our_key in [("mask_head.adapter3.weight", "mask_head.adapter3.weight"),
                             ("bbox_attention.k_linear.bias", "bbox_attention.k_linear.bias"),
                             ("detr.class_labels_classifier.weight", "class_embed.weight"),
                             ("detr.model.backbone.conv_encoder.model.layer1.0.conv1.weight",
                              "backbone.body.layer1.0.conv1.weight")]:
        assert torch.equal(ours[our_key], hub[hub_key]), hub_key


def test_detection_checkpoint_initialises_the_detector_of_a_segmentation_model(tmp_path):
    """The two-step training of the paper: a trained detector, then the mask head."""
    detector = tiny_model("detr-r50", backbone={"name": "resnet", "block": "basic", "depths": (1, 1, 1, 1),
                                                "widths": (8, 16, 32, 64), "stem_width": 8}, num_heads=8)
    torch.save({"model": ours_to_official(detector.state_dict())}, tmp_path / "detector.pth")
    overrides = dict(backbone={"name": "resnet", "block": "basic", "depths": (1, 1, 1, 1), "widths": (8, 16, 32, 64),
                               "stem_width": 8}, d_model=32, num_heads=8, encoder_layers=1, decoder_layers=2,
                     ffn_dim=32, num_queries=10, num_classes=5)
    model = detr_deploy.create_model("detr-r50-panoptic", weights=str(tmp_path / "detector.pth"), **overrides)
    assert any("segmentation head" in note and "random" in note for note in model.weights_info["notes"])
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        a, b = detector(x), model(x)
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])
    # and the other way: a panoptic checkpoint into a detection model keeps the detector only
    torch.save({"model": ours_to_official(model.state_dict())}, tmp_path / "panoptic.pth")
    back = detr_deploy.create_model("detr-r50", weights=str(tmp_path / "panoptic.pth"),
                                    **{k: v for k, v in overrides.items()})
    assert any("ignored its 32 segmentation-head tensors" in note for note in back.weights_info["notes"])


# --- export -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_segmentation_export_matches_pytorch(dynamic, exported):
    model, path = exported("detr-r50-panoptic", "gridsample", dynamic=dynamic,
                           size=(192, 256) if dynamic else (160, 192))
    cases = [(2, 160, 192, [(160, 192), (120, 150)])] if not dynamic else \
        [(1, 192, 256, None), (1, 130, 190, None), (2, 240, 320, [(240, 320), (180, 200)])]
    for batch, h, w, valid in cases:
        pixels, mask = synthetic_batch(batch, h, w, valid=valid, seed=h)
        diff = onnx_vs_torch(model, path, pixels, mask)
        print(f"\npanoptic [{'dynamic' if dynamic else 'static'}] {batch}x{h}x{w}: max|dlogit| "
              f"{diff.max_abs_logits:.2e} max|dbox| {diff.max_abs_boxes:.2e} max|dmask| {diff.max_abs_masks:.2e}")
        assert max(diff.max_abs_logits, diff.max_abs_boxes, diff.max_abs_masks) <= TOLERANCE
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["logits", "pred_boxes", "pred_masks"]
    meta = read_onnx_metadata(proto)
    assert meta.task == "segmentation" and meta.outputs["pred_masks"]["shape"][2:] == (
        ["height", "width"] if dynamic else [40, 48])
    ops = {n.op_type for n in proto.graph.node}
    assert "Resize" not in ops  # the FPN upsampling is exact index selection, not a rounding Resize


def test_segmentation_fp16_keeps_masks_close_and_int8_is_refused(tmp_path):
    model = tiny_model("detr-r50-panoptic")
    path = tmp_path / "fp16.onnx"
    export_onnx(model, path, ExportConfig(dynamic=False, input_size=(160, 192), batch=2, precision="fp16"),
                log=lambda m: None)
    pixels, mask = synthetic_batch(2, 160, 192, valid=[(160, 192), (120, 150)], seed=3)
    diff = onnx_vs_torch(model, path, pixels, mask)
    print(f"\npanoptic FP16: max|dlogit| {diff.max_abs_logits:.2e} max|dmask| {diff.max_abs_masks:.2e} "
          f"top-k {diff.top_k_agreement:.1%}")
    assert diff.max_abs_masks <= 0.05 and diff.max_abs_logits <= 0.05 and diff.top_k_agreement >= 0.95
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info)}
    norms = [n for n in inferred.graph.node if n.op_type in ("InstanceNormalization", "Softmax")]
    assert norms and all(types.get(n.input[0], TensorProto.FLOAT) == TensorProto.FLOAT for n in norms)
    from detr_deploy.errors import ConfigError
    from detr_deploy.export.quantize import CalibrationConfig

    with pytest.raises(ConfigError, match="INT8 export of segmentation models"):
        export_onnx(model, tmp_path / "int8.onnx", ExportConfig(dynamic=False, precision="int8",
                                                                calibration=CalibrationConfig(["x.jpg"])))


# --- runtime, detr-infer ----------------------------------------------------------------------------------------------
def test_detector_panoptic_equals_the_runtime_functions_on_pytorch_outputs(exported, photo_folder):
    model, path = exported("detr-r50-panoptic", "gridsample", dynamic=True, size=(192, 256))
    from PIL import Image

    image = np.asarray(Image.open(photo_folder / "coffee.jpg"))
    # a tiny random model's scores and masks are weak: low thresholds so that segments exist
    with Detector(path, threshold=0.0, mask_threshold=0.05, overlap_mask_area_threshold=0.1) as detector:
        batch = detector.preprocess([image])
        result = detector([image])[0]
    with Detector(path, task="semantic") as semantic_detector:
        semantic = semantic_detector([image])[0]
    reference = model.predict_numpy(batch.pixel_values, batch.pixel_mask)
    expected = seg.post_process_panoptic_segmentation(reference, 0.0, 0.05, 0.1, label_ids_to_fuse=set(),
                                                      target_sizes=[image.shape[:2]], unique_ids=True)[0]
    print(f"\npanoptic: {len(result['segments_info'])} segments on coffee.jpg")
    assert result["segments_info"]
    assert [s["label_id"] for s in result["segments_info"]] == [s["label_id"] for s in expected["segments_info"]]
    assert np.mean(result["segmentation"] == expected["segmentation"]) > 0.999
    assert result["segmentation"].shape == image.shape[:2] and len(result["names"]) == len(result["segments_info"])
    assert semantic["segmentation"].shape == image.shape[:2]


def test_detr_infer_writes_coco_panoptic_and_rle_instances(exported, photo_folder, tmp_path):
    from PIL import Image

    from detr_deploy.cli import infer

    _, path = exported("detr-r50-panoptic", "gridsample", dynamic=True, size=(192, 256))
    out = tmp_path / "out"
    assert infer.run(infer.main, [str(path), str(photo_folder / "coffee.jpg"), str(photo_folder / "rocket.jpg"),
                                  "-o", str(out), "--threshold", "0", "--mask-threshold", "0.05",
                                  "--overlap-threshold", "0.1", "--instance-masks"]) == 0
    panoptic = json.loads((out / "panoptic.json").read_text())
    assert [a["file_name"] for a in panoptic["annotations"]] == ["coffee.png", "rocket.png"]
    for annotation in panoptic["annotations"]:
        ids = seg.rgb_to_id(np.asarray(Image.open(out / "panoptic" / annotation["file_name"])))
        present = set(np.unique(ids).tolist()) - {0}
        assert present == {s["id"] for s in annotation["segments_info"]}  # every segment once, with its pixels
        for s in annotation["segments_info"]:
            assert s["area"] == int((ids == s["id"]).sum())
    assert (out / "coffee_seg.jpg").is_file()
    instances = json.loads((out / "instances.json").read_text())
    assert instances and all(set(i) == {"image_id", "category_id", "score", "segmentation"} for i in instances)
    mask_utils = pytest.importorskip("pycocotools.mask")
    first = instances[0]
    decoded = mask_utils.decode({"size": first["segmentation"]["size"],
                                 "counts": first["segmentation"]["counts"].encode()})
    assert decoded.shape == tuple(first["segmentation"]["size"]) and decoded.any()


def test_parity_gate_for_segmentation_passes_and_fails_with_numbers(exported, photo_folder, tmp_path):
    pytest.importorskip("torchmetrics", reason="panoptic quality uses torchmetrics (pip install 'detr-deploy[eval]')")
    from detr_deploy.parity import ParityCheck, format_report

    model, path = exported("detr-r50-panoptic", "gridsample", dynamic=True, size=(192, 256))
    proto = onnx.load(str(path))
    # a broken mask head (its last convolution's bias pushed to -100: every mask off): boxes right, masks wrong
    init = next(i for i in proto.graph.initializer if "mask_head" in i.name and "out_lay" in i.name and
                len(i.dims) == 1)
    bias = onnx.numpy_helper.to_array(init) - 100.0
    init.CopyFrom(onnx.numpy_helper.from_array(bias.astype(np.float32), init.name))
    broken = tmp_path / "broken_masks.onnx"
    onnx.save(proto, str(broken))
    images = [str(photo_folder / name) for name in ("coffee.jpg", "rocket.jpg")]
    # weak tiny random model: low thresholds so that segments exist
    with ParityCheck(model, [str(path), str(broken)], segment_thresholds=(0.0, 0.05, 0.1)) as check:
        report = check.run(images)
    print("\n" + format_report(report))
    good, bad = report["artifacts"]
    assert good["passed"] and good["segmentation"]["pq_vs_reference"]["pq"] > 0.99
    assert good["segmentation"]["pixel_agreement"] > 0.999 and good["segmentation"]["reference_segments"] > 0
    assert not bad["passed"] and any("max |dmask|" in v for v in bad["violations"])
    assert any("PQ vs reference" in v for v in bad["violations"])
    assert bad["segmentation"]["pixel_agreement"] < 0.9
    assert bad["detections"]["matched"] == 1.0  # the detector part is untouched
