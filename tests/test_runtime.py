# SPDX-License-Identifier: Apache-2.0
"""Runtime: pre/post-processing equal to Hugging Face's processors, Detector end to end, bad input, backends."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detr_deploy.artifact.metadata import Postprocess, Preprocess
from detr_deploy.cli import infer as infer_cli
from detr_deploy.errors import ArtifactError, ConfigError, ImageError
from detr_deploy.runtime import Detector, load_image, postprocess_detections, preprocess_images, shortest_edge_size

from conftest import PHOTOS, photo

transformers = pytest.importorskip("transformers", reason="transformers' processors are the oracle")
skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the real photographs used here")


def hf_processor(family: str):
    from transformers.models.deformable_detr.image_processing_pil_deformable_detr import (
        DeformableDetrImageProcessorPil,
    )
    from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil

    return DetrImageProcessorPil() if family == "detr" else DeformableDetrImageProcessorPil()


def synthetic_images() -> list[tuple[str, Image.Image]]:
    """Many sizes, aspect ratios and modes (capped and uncapped resize cases)."""
    rng = np.random.default_rng(0)
    images = []
    for h, w in [(480, 640), (427, 640), (333, 1000), (612, 612), (500, 1000), (1000, 500), (37, 911), (1200, 90),
                 (800, 1066), (799, 1333), (64, 64), (3000, 2000)]:
        images.append((f"rgb {h}x{w}", Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))))
    base = Image.fromarray(rng.integers(0, 256, (300, 420, 3), dtype=np.uint8))
    for mode in ["L", "LA", "P", "RGBA", "CMYK", "1"]:
        images.append((f"mode {mode}", base.convert(mode)))
    return images


# --- preprocessing ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rounding,expected", [("hf", [(800, 1066), (800, 1199), (444, 1333), (800, 800),
                                                        (666, 1333)]),
                                               ("official", [(800, 1066), (800, 1199), (444, 1333), (800, 800),
                                                              (666, 1332)])])
def test_resize_rule_test_vectors(rounding, expected):
    sizes = [(480, 640), (427, 640), (333, 1000), (612, 612), (500, 1000)]
    assert [shortest_edge_size(h, w, rounding=rounding) for h, w in sizes] == expected


@pytest.mark.parametrize("family", ["detr", "deformable"])
def test_preprocessing_equals_hugging_face_processor(family):
    processor = hf_processor(family)
    pre = Preprocess()
    cases = [(name, photo(name)) for name in PHOTOS + ("hubble_deep_field",)] + synthetic_images()
    worst = 0.0
    for name, image in cases:
        ours = preprocess_images([load_image(image)], pre)
        ref = processor(images=image.convert("RGB"), return_tensors="np")
        assert ours.pixel_values.shape == ref["pixel_values"].shape, name
        assert np.array_equal(ours.pixel_mask, ref["pixel_mask"]), name
        diff = float(np.abs(ours.pixel_values - ref["pixel_values"]).max())
        worst = max(worst, diff)
        assert diff <= 1e-6, (name, diff)
    # a batch: padding to the largest, masks per image
    images = [photo("astronaut"), photo("coffee"), synthetic_images()[2][1]]
    ours = preprocess_images([load_image(i) for i in images], pre)
    ref = processor(images=[i.convert("RGB") for i in images], return_tensors="np")
    assert np.array_equal(ours.pixel_mask, ref["pixel_mask"])
    assert np.abs(ours.pixel_values - ref["pixel_values"]).max() <= 1e-6
    print(f"\npreprocessing vs {type(processor).__name__}: {len(cases)} images, max |d pixel_values| = {worst:.2e}")


def test_channel_resizes_equal_one_rgb_resize():
    """The host resizes the three channels apart (in parallel, planar): bit-identical to Pillow's RGB resize, here
    on many size pairs, enlarging and reducing, either pass order (Pillow 13 runs the vertical pass first when the
    height shrinks far more than the width)."""
    from detr_deploy.runtime.preprocess import pillow_view, resize_plane, resize_rgb

    rng = np.random.default_rng(4)
    pairs = [((480, 640), (800, 1066)), ((654, 83), (416, 53)), ((3000, 200), (40, 190)), ((37, 911), (54, 1333)),
             ((1200, 90), (1333, 100)), ((9, 9), (800, 800)), ((612, 612), (800, 800))]
    pairs += [((int(rng.integers(8, 700)), int(rng.integers(8, 700))),
               (int(rng.integers(8, 900)), int(rng.integers(8, 900)))) for _ in range(40)]
    for (h, w), size in pairs:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        whole = resize_rgb(image, size)
        for c in range(3):
            assert np.array_equal(resize_plane(image[:, :, c], size), whole[:, :, c]), ((h, w), size, c)
    rgb = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    view = pillow_view(rgb)  # Pillow's own memory (RGBX), no copy
    assert view.shape == (50, 70, 4) and np.array_equal(view[..., :3], np.asarray(rgb)) and not view.flags.writeable
    assert np.array_equal(pillow_view(rgb.getchannel(1)), np.asarray(rgb)[..., 1])


def test_reused_buffers_follow_layout_changes():
    """Padding and mask are written only when the batch layout changes: reused buffers must still give exactly the
    arrays fresh ones give, whatever the sequence of batches (sizes swapped within one shape, static padding)."""
    rng = np.random.default_rng(5)
    a, b, c = (rng.integers(0, 256, s, dtype=np.uint8) for s in [(480, 640, 3), (300, 500, 3), (640, 480, 3)])
    pre, buffers = Preprocess(shortest_edge=200, longest_edge=333), {}
    calls = [([a, b], None), ([b, a], None), ([a, b], None), ([a], None), ([c], None), ([a, c], None), ([c, a], None),
             ([a], (333, 333)), ([c], (333, 333)), ([a, a], (333, 333))]
    for images, pad_to in calls:
        fresh = preprocess_images(images, pre, pad_to, threads=1)
        reused = preprocess_images(images, pre, pad_to, buffers=buffers)
        assert np.array_equal(fresh.pixel_values, reused.pixel_values)
        assert np.array_equal(fresh.pixel_mask, reused.pixel_mask)
        assert fresh.resized_sizes == reused.resized_sizes


def test_exif_orientation_and_high_bit_depth(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    assert load_image(tmp_path / "rotated.jpg").shape == (60, 40, 3)
    deep = Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16))
    assert deep.mode == "I;16"
    rgb = load_image(deep)
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3) and rgb.max() > 200 and rgb[..., 0].min() == 0
    assert np.array_equal(load_image(pixels), pixels)
    assert load_image(pixels[..., 0]).shape == (40, 60, 3)


# --- postprocessing -----------------------------------------------------------------------------------------
def _hf_postprocess(family, logits, boxes, sizes, threshold):
    from transformers.utils import ModelOutput

    outputs = ModelOutput(logits=torch.from_numpy(logits), pred_boxes=torch.from_numpy(boxes))
    return hf_processor(family).post_process_object_detection(outputs, threshold=threshold, target_sizes=sizes)


@pytest.mark.parametrize("family,classes", [("detr", 92), ("deformable", 91)])
@pytest.mark.parametrize("threshold", [0.5, 0.05, 0.0])
def test_postprocessing_equals_hugging_face(family, classes, threshold):
    rng = np.random.default_rng(7)
    queries = 100 if family == "detr" else 300
    logits = (rng.standard_normal((3, queries, classes)) * 3 - (0 if family == "detr" else 3)).astype(np.float32)
    boxes = rng.uniform(0.05, 0.95, (3, queries, 4)).astype(np.float32)
    sizes = [(480, 640), (1000, 333), (50, 70)]
    kind = Postprocess("softmax-drop-last") if family == "detr" else Postprocess("sigmoid-top-k", 100)
    ours = postprocess_detections(logits, boxes, kind, sizes, threshold)
    refs = _hf_postprocess(family, logits, boxes, sizes, threshold)
    for mine, ref in zip(ours, refs):
        order = torch.argsort(ref["scores"], descending=True, stable=True)
        assert len(mine["scores"]) == len(order)
        assert np.allclose(mine["scores"], ref["scores"][order].numpy(), atol=1e-6)
        assert np.array_equal(mine["labels"], ref["labels"][order].numpy())
        assert np.allclose(mine["boxes"], ref["boxes"][order].numpy(), atol=1e-3)


# --- end to end ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["detr-r50", "deformable-detr"])
def test_detector_equals_pytorch_model_and_hf_processors(variant, exported):
    model, path = exported(variant, "gridsample", dynamic=True, size=(192, 256))
    family = model.config.family
    processor = hf_processor(family)
    images = [photo("astronaut"), photo("coffee"), photo("rocket")]
    with Detector(path, threshold=0.0, batch_size=2) as detector:
        ours = detector(images)
    inputs = processor(images=images, return_tensors="pt")
    with torch.no_grad():
        out = model(inputs["pixel_values"], inputs["pixel_mask"])
    from transformers.utils import ModelOutput

    refs = processor.post_process_object_detection(ModelOutput(logits=out["logits"], pred_boxes=out["pred_boxes"]),
                                                   threshold=0.0, target_sizes=[i.size[::-1] for i in images])
    for mine, ref in zip(ours, refs):
        order = torch.argsort(ref["scores"], descending=True, stable=True)
        ref_scores, ref_labels = ref["scores"][order].numpy(), ref["labels"][order].numpy()
        ref_boxes = ref["boxes"][order].numpy()
        n = min(len(ref_scores), 50)
        assert np.allclose(mine["scores"][:n], ref_scores[:n], atol=1e-4)
        assert np.array_equal(mine["labels"][:n], ref_labels[:n])
        assert np.abs(mine["boxes"][:n] - ref_boxes[:n]).max() < 0.05  # pixels
        assert mine["names"][0] == model.config.id2label[int(mine["labels"][0])]


def test_runtime_runs_an_artifact_without_torch_or_timm(exported):
    _, path = exported("deformable-detr", "gridsample", dynamic=True, size=(192, 256))
    image = Path(skdata.__file__).parent / "astronaut.png"
    code = (
        "import sys\n"
        "from detr_deploy.runtime import Detector\n"
        f"det = Detector({str(path)!r}, threshold=0.0)\n"
        f"res = det([{str(image)!r}])\n"
        "assert len(res[0]['scores']) > 0\n"
        "print(sorted(m for m in ('torch', 'timm', 'transformers', 'torchvision') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_static_artifact_fills_its_batch(exported):
    model, path = exported("deformable-detr", "plugin")  # static batch 2, 160x192, 'fit' resize
    with Detector(path, threshold=0.0) as detector:
        assert detector.static_batch == 2 and detector.pad_to == (160, 192)
        results = detector([photo("chelsea")])  # one image in a batch of two
    assert len(results) == 1 and len(results[0]["scores"]) == 60


# --- bad input ----------------------------------------------------------------------------------------------
def _bad_files(folder: Path) -> dict[str, Path]:
    good = folder / "good.jpg"
    photo("coffee").save(good)
    files = {"good": good}
    files["zero"] = folder / "zero.jpg"
    files["zero"].write_bytes(b"")
    files["text"] = folder / "notes.png"
    files["text"].write_text("not an image")
    files["corrupt"] = folder / "corrupt.jpg"
    files["corrupt"].write_bytes(good.read_bytes()[:2000])
    files["tiny"] = folder / "tiny.png"
    Image.new("RGB", (1, 1)).save(files["tiny"])
    files["huge"] = folder / "huge.png"
    Image.new("1", (20000, 10000)).save(files["huge"])  # 200 megapixels, a few kB on disk
    return files


def test_bad_images_get_clear_messages_and_the_batch_still_runs(tmp_path, exported):
    files = _bad_files(tmp_path)
    expected = {"zero": "empty file", "text": "not an image", "corrupt": "corrupt or truncated",
                "tiny": "1x1 pixels", "huge": "decompression-bomb"}
    for kind, message in expected.items():
        with pytest.raises(ImageError, match=message):
            load_image(files[kind])
    _, path = exported("deformable-detr", "gridsample", dynamic=True, size=(192, 256))
    order = ["good", "zero", "text", "good", "corrupt", "tiny", "huge"]
    with Detector(path, threshold=0.0, batch_size=2) as detector:
        results = detector([str(files[k]) for k in order])
    for kind, result in zip(order, results):
        if kind == "good":
            assert "scores" in result and len(result["scores"]) > 0
        else:
            assert expected[kind] in result["error"]


def test_detr_infer_writes_coco_results_and_annotations(tmp_path, exported):
    _, path = exported("deformable-detr", "gridsample", dynamic=True, size=(192, 256))
    images = tmp_path / "images"
    images.mkdir()
    photo("astronaut").save(images / "000000000001.png")
    photo("chelsea").save(images / "000000000042.jpg")
    out = tmp_path / "out"
    assert infer_cli.run(infer_cli.main, [str(path), str(images), "-o", str(out), "--threshold", "0.2",
                                          "--batch-size", "2"]) == 0
    detections = json.loads((out / "detections.json").read_text())
    assert {d["image_id"] for d in detections} <= {1, 42} and detections
    assert set(detections[0]) == {"image_id", "category_id", "bbox", "score"}
    assert all(d["score"] > 0.2 for d in detections)
    assert (out / "000000000042_det.jpg").is_file()
    assert json.loads((out / "images.json").read_text())["42"].endswith("000000000042.jpg")
    # a folder with unreadable files: the rest is written, exit status 2 (bad input), one warning per file
    bad_src = tmp_path / "bad_src"
    bad_src.mkdir()
    for kind, src in _bad_files(bad_src).items():
        if kind != "good":
            (images / src.name).write_bytes(src.read_bytes())
    again = tmp_path / "again"
    assert infer_cli.run(infer_cli.main, [str(path), str(images), "-o", str(again), "--no-draw"]) == 2
    written = json.loads((again / "detections.json").read_text())
    assert {d["image_id"] for d in written} == {1, 2} and written  # the two readable photos (ids 1..N by order)


def test_missing_provider_and_missing_metadata_are_clear(tmp_path, exported):
    import onnx

    _, path = exported("deformable-detr", "gridsample", dynamic=True, size=(192, 256))
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ArtifactError, match="CUDAExecutionProvider"):
            Detector(path, device="cuda")
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ArtifactError, match="no detr-deploy metadata"):
        Detector(bare)
    with pytest.raises(ArtifactError, match="no such file"):
        Detector(tmp_path / "nothing.onnx")
    with pytest.raises(ConfigError, match="outside \\[0, 1\\]"):
        Detector(path, threshold=35)
    # the artifact kind decides the backend in one place, whatever the suffix's case
    upper = tmp_path / "MODEL.ONNX"
    upper.write_bytes(path.read_bytes())
    with Detector(upper) as detector:
        assert detector.backend.name == "onnxruntime"
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    with pytest.raises(ArtifactError, match="is a folder"):
        Detector(folder)
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"x")
    with pytest.raises(ArtifactError, match="not an artifact detr-deploy knows"):
        Detector(odd)
    with pytest.raises(ArtifactError, match="ONNX file; the tensorrt backend cannot run it"):
        Detector(path, backend="tensorrt")


# --- GPU backends (run when a GPU / TensorRT is present) ----------------------------------------------------
def _has_cuda_provider() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda_provider(), reason="onnxruntime has no CUDAExecutionProvider here (no GPU / "
                                                     "onnxruntime-gpu not installed)")
def test_onnxruntime_cuda_matches_cpu(exported):
    _, path = exported("deformable-detr", "gridsample", dynamic=True, size=(192, 256))
    images = [photo("astronaut")]
    with Detector(path, threshold=0.0) as cpu, Detector(path, threshold=0.0, device="cuda") as gpu:
        a, b = cpu(images)[0], gpu(images)[0]
    assert np.allclose(a["scores"][:20], b["scores"][:20], atol=1e-3)
