# SPDX-License-Identifier: Apache-2.0
"""Pre-processing in the graph (``detr-export --preprocess-in-graph``): the ONNX front end against the host's
pre-processing (bit-identical pixel values, the one documented size-rule difference), and an exported in-graph
artifact against the host pipeline on real photographs."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from detr_deploy.artifact.metadata import ArtifactMetadata, Preprocess
from detr_deploy.runtime import Detector, load_image, postprocess_detections
from detr_deploy.runtime.preprocess import preprocess_images
from detr_deploy.runtime.preprocess_graph import GraphPreprocess, graph_output_size, host_output_size

from conftest import PHOTOS, tiny_model

pytest.importorskip("onnxruntime", reason="the front end runs in onnxruntime")

SETTINGS = {"shortest-edge hf": Preprocess(shortest_edge=200, longest_edge=333),
            "shortest-edge official": Preprocess(shortest_edge=200, longest_edge=333, rounding="official"),
            "fit 160x192": Preprocess(resize="fit", input_size=(160, 192), shortest_edge=200, longest_edge=333)}


def _images(rng, count: int):
    """Noise (the hardest case for fixed-point rounding) and smooth images, enlarged and reduced, odd sizes."""
    for i in range(count):
        h, w = int(rng.integers(8, 700)), int(rng.integers(8, 700))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if i % 2:
            image = np.asarray(Image.fromarray(image[:max(2, h // 8), :max(2, w // 8)]).resize((w, h), Image.BICUBIC))
        yield f"{'smooth' if i % 2 else 'noise'} {h}x{w}", image


@pytest.mark.parametrize("name", list(SETTINGS))
def test_graph_preprocessing_is_bit_identical_to_the_host(name, photo_folder):
    """Same output size -> the same pixel values and mask, bit for bit (Pillow's bilinear resampling, its pass order
    and fixed-point rounding reproduced in int32; normalisation from the host's own table)."""
    pre = SETTINGS[name]
    front = GraphPreprocess(pre)
    cases = list(_images(np.random.default_rng(11), 24))
    cases += [(p.name, load_image(p)) for p in sorted(photo_folder.iterdir())]
    cases += [("tall 640x83 (vertical pass first)", np.random.default_rng(1).integers(0, 256, (640, 83, 3), np.uint8))]
    identical = 0
    for label, image in cases:
        h, w = image.shape[:2]
        assert graph_output_size(h, w, pre) == host_output_size(h, w, pre), label
        host = preprocess_images([image], pre, pre.input_size)
        pixels, mask = front(image[None])
        assert pixels.shape == host.pixel_values.shape, label
        assert np.array_equal(mask, host.pixel_mask), label
        assert np.array_equal(pixels, host.pixel_values), (label, float(np.abs(pixels - host.pixel_values).max()))
        identical += 1
    print(f"\n{name}: {identical}/{len(cases)} images bit-identical to the host pre-processing")


def test_the_size_rule_differs_only_where_documented():
    """The graph's rule is exact integer arithmetic. Hugging Face's capped long side (``int(raw * long / short)`` in
    float64) is one pixel short of longest_edge for some aspect ratios; everywhere else the rules agree."""
    pre = Preprocess()
    differ, capped = [], 0
    for lo in range(8, 1400, 7):
        for hi in range(lo, 4000, 13):
            host, graph = host_output_size(lo, hi, pre), graph_output_size(lo, hi, pre)
            capped += hi * pre.shortest_edge > pre.longest_edge * lo
            if host != graph:
                differ.append((lo, hi))
                assert graph[0] == host[0] and graph[1] == pre.longest_edge == host[1] + 1, (lo, hi, host, graph)
    assert differ and len(differ) < 0.1 * capped
    print(f"\nsize rule: {len(differ)} of {capped} capped sizes differ (graph {pre.longest_edge}, host "
          f"{pre.longest_edge - 1} on the long side), e.g. {differ[:3]}; all uncapped sizes agree")
    # the ONNX nodes follow graph_output_size, not the host, on such a size; the fit rule agrees on photo sizes
    h, w = differ[0]
    pixels, mask = GraphPreprocess(pre)(np.zeros((1, h, w, 3), np.uint8))
    assert pixels.shape[2:] == graph_output_size(h, w, pre) and mask.shape[1:] == pixels.shape[2:]
    fit = Preprocess(resize="fit", input_size=(800, 1333))
    assert all(graph_output_size(h, w, fit) == host_output_size(h, w, fit)
               for h, w in [(480, 640), (1080, 1920), (3000, 4000), (4000, 3000), (612, 612), (37, 911)])


@pytest.fixture(scope="module")
def in_graph_artifact(tmp_path_factory):
    """A tiny Deformable DETR exported (verified) with pre-processing in the graph: plugin form, static batch 2,
    fit to 160x192."""
    from detr_deploy.export import ExportConfig
    from detr_deploy.export.verify import export_verified

    model = tiny_model("deformable-detr", image_size=(200, 333))
    path = tmp_path_factory.mktemp("in_graph") / "tiny_images.onnx"
    lines = []
    done = export_verified(model, path, ExportConfig(dynamic=False, input_size=(160, 192), batch=2,
                                                     preprocess_in_graph=True), log=lines.append)
    print("\n" + "\n".join(line for line in lines if "pre-processing" in line or "x3" in line))
    assert done.passed, done.problems
    return model, path


def test_in_graph_artifact_against_the_host_pipeline(in_graph_artifact, photo_folder):
    """Real photographs: the artifact fed decoded images (Detector, no caller change) against the host pipeline
    (host pre-processing of the same settings -> the same model in PyTorch -> post-processing)."""
    model, path = in_graph_artifact
    with Detector(path, threshold=0.0) as detector:
        meta = detector.metadata
        assert meta.preprocess.in_graph and meta.schema == 2 and list(meta.inputs) == ["image"]
        assert meta.static_batch == 2
        reloaded = ArtifactMetadata.from_json(meta.to_json())
        assert reloaded.preprocess.in_graph and reloaded.inputs == meta.inputs
        worst_logit, matched, total, score_delta = 0.0, 0, 0, 0.0
        for file in sorted(photo_folder.iterdir()):
            image = load_image(file)
            batch = detector.preprocess([image])
            assert batch.pixel_values is None and batch.image.shape == (2, *image.shape)
            outputs = detector.infer(batch)
            host = preprocess_images([image, image], meta.preprocess, meta.static_input_size)
            reference = model.predict_numpy(host.pixel_values, host.pixel_mask)
            worst_logit = max(worst_logit, float(np.abs(outputs["logits"] - reference["logits"]).max()))
            ours = detector([image])[0]
            ref = postprocess_detections(reference["logits"][:1], reference["pred_boxes"][:1], meta.postprocess,
                                         [image.shape[:2]], 0.0, meta.id2label)[0]
            top = np.argsort(-ref["scores"])[:10]
            for box, label, score in zip(ref["boxes"][top], ref["labels"][top], ref["scores"][top]):
                total += 1
                same = (ours["labels"] == label) & (np.abs(ours["boxes"] - box).max(axis=1) < 0.05)
                if same.any():
                    matched += 1
                    score_delta = max(score_delta, float(np.abs(ours["scores"][same] - score).min()))
    print(f"\nin-graph artifact vs host pipeline on {len(PHOTOS)} photos: max |dlogit| {worst_logit:.2e}, "
          f"{matched}/{total} top detections matched (max |dscore| {score_delta:.1e})")
    assert worst_logit < 1e-4 and matched == total and score_delta < 1e-4


def test_mixed_sizes_batches_and_the_gate(in_graph_artifact, photo_folder):
    """Images of different sizes in one Detector call run in same-size groups (each one tensor), giving what one call
    per image gives; the accuracy gate feeds the model the graph's own pre-processing and records its agreement with
    the host's; a TensorRT profile is over image sizes."""
    from detr_deploy.export.trt_build import derive_profile, parse_shapes
    from detr_deploy.parity import ParityCheck

    model, path = in_graph_artifact
    files = sorted(photo_folder.iterdir())
    images = [load_image(f) for f in files]
    images = [images[0], images[0], images[1], images[2], images[2], images[2]]
    with Detector(path, threshold=0.1, batch_size=2) as detector:
        together = detector(images)
        alone = [detector([image])[0] for image in images]
        for a, b in zip(together, alone):
            assert np.array_equal(a["labels"], b["labels"]) and np.allclose(a["scores"], b["scores"], atol=1e-6)
        profile = derive_profile(detector.metadata, parse_shapes("2x64x64/2x480x640/2x2000x2000"))
    assert profile.input_shapes() == {"image": ((2, 64, 64, 3), (2, 480, 640, 3), (2, 2000, 2000, 3))}
    with ParityCheck(model, [str(path)]) as check:
        report = check.run([str(f) for f in files[:3]])
    artifact = report["artifacts"][0]
    print(f"\ngate on the in-graph artifact: raw max |dlogit| {artifact['raw']['max_abs_logits']:.2e}, "
          f"pre-processing vs host {artifact['raw']['preprocess_vs_host']}, matched "
          f"{artifact['detections']['matched']:.1%}")
    assert report["passed"], artifact["violations"]
    assert artifact["raw"]["preprocess_vs_host"] == {"max_abs_pixel": 0.0, "size_differences": 0}
