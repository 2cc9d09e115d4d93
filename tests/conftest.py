# SPDX-License-Identifier: Apache-2.0
"""Shared test helpers: exact checkpoint key lists, seeded synthetic checkpoints, tiny Hugging Face models."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
KEY_LISTS = FIXTURES / "checkpoint_keys"


def key_spec(name: str) -> dict[str, list[int]]:
    """``{key: shape}`` from tests/fixtures/checkpoint_keys/<name>.keys.txt (copied from ../shared/checkpoints)."""
    spec = {}
    for line in (KEY_LISTS / f"{name}.keys.txt").read_text().splitlines():
        key, shape = line.split("\t")
        spec[key] = [int(x) for x in re.findall(r"\d+", shape)]
    return spec


def saved_key_names(name: str) -> list[str]:
    """Key names only (the transformers 5.23 save_pretrained lists carry no shapes)."""
    return (KEY_LISTS / f"{name}.keys.txt").read_text().split()


def synthetic_state(spec: dict[str, list[int]], seed: int = 0, scale: float = 0.02):
    """Distinct seeded values per key (so wrong mappings show), with the published aliases kept equal."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in spec.items():
        if key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif re.search(r"(norm\d?|layer_norm|layernorm|\.bn\d|downsample\.1|normalization)\.weight$", key) or (
                re.search(r"input_proj\.\d+\.1\.weight$", key)):
            state[key] = 1.0 + scale * torch.randn(shape, generator=gen)
        else:
            state[key] = scale * torch.randn(shape, generator=gen)
    tie_aliases(state)
    return state


def tie_aliases(state) -> None:
    """Make aliased heads equal, as in the published files."""
    for key in list(state):
        m = re.match(r"^(?:transformer|model)\.decoder\.((?:class|bbox)_embed\.\d+\..+)$", key)
        if m and m[1] in state:
            state[key] = state[m[1]].clone()
    refine = any(re.match(r"^(?:transformer|model)\.decoder\.bbox_embed\.", k) for k in state)
    if not refine:  # shared heads: every class_embed.k / bbox_embed.k equals head 0
        for key in list(state):
            m = re.match(r"^((?:class|bbox)_embed)\.(\d+)\.(.+)$", key)
            if m and m[2] != "0":
                state[key] = state[f"{m[1]}.0.{m[3]}"].clone()


def official_to_hf(state, family: str):
    """Official -> Hugging Face names, written from the converters' rules (checkpoint-formats.md 5.2/5.3).

    Deliberately independent of detr_deploy.weights.convert, so the two check each other.
    """
    import torch

    out = {}
    if family == "detr":
        table = [
            ("backbone.0.body.", "model.backbone.conv_encoder.model."),
            ("input_proj.", "model.input_projection."),
            ("query_embed.", "model.query_position_embeddings."),
            ("class_embed.", "class_labels_classifier."),
            ("bbox_embed.", "bbox_predictor."),
            ("transformer.decoder.norm.", "model.decoder.layernorm."),
        ]
        for key, value in state.items():
            new = None
            for old, repl in table:
                if key.startswith(old):
                    new = repl + key[len(old):]
                    break
            if new is None:
                new = key.replace("transformer.", "model.")
                new = re.sub(r"encoder\.layers\.(\d+)\.norm1\.", r"encoder.layers.\1.self_attn_layer_norm.", new)
                new = re.sub(r"encoder\.layers\.(\d+)\.norm2\.", r"encoder.layers.\1.final_layer_norm.", new)
                new = re.sub(r"decoder\.layers\.(\d+)\.norm1\.", r"decoder.layers.\1.self_attn_layer_norm.", new)
                new = re.sub(r"decoder\.layers\.(\d+)\.norm2\.", r"decoder.layers.\1.encoder_attn_layer_norm.", new)
                new = re.sub(r"decoder\.layers\.(\d+)\.norm3\.", r"decoder.layers.\1.final_layer_norm.", new)
                new = new.replace(".linear1.", ".fc1.").replace(".linear2.", ".fc2.")
                new = new.replace(".multihead_attn.", ".encoder_attn.")
            out[new] = value
    else:
        for key, value in state.items():
            new = key.replace("backbone.0.body", "backbone.conv_encoder.model").replace("transformer.", "")
            if "norm1" in new:
                new = new.replace("norm1", "self_attn_layer_norm" if "encoder" in new else "encoder_attn_layer_norm")
            if "norm2" in new:
                new = new.replace("norm2", "final_layer_norm" if "encoder" in new else "self_attn_layer_norm")
            new = new.replace("norm3", "final_layer_norm").replace("linear1", "fc1").replace("linear2", "fc2")
            new = new.replace("query_embed", "query_position_embeddings").replace("cross_attn", "encoder_attn")
            if not new.startswith(("class_embed", "bbox_embed")):
                new = "model." + new
            out[new] = value
    # q/k/v split of every packed in_proj (rows 0:d, d:2d, 2d:3d)
    for key in [k for k in out if k.endswith(("in_proj_weight", "in_proj_bias"))]:
        packed = out.pop(key)
        base, kind = key.rsplit(".", 1)
        kind = "weight" if kind.endswith("weight") else "bias"
        for i, name in enumerate("qkv"):
            out[f"{base}.{name}_proj.{kind}"] = torch.chunk(packed, 3, dim=0)[i].clone()
    return out


# --- tiny Hugging Face models (transformers is the external oracle) ----------------------------------------
def hf_resnet_config(stages, depths=(1, 2, 1, 1)):
    from transformers import ResNetConfig

    return ResNetConfig(embedding_size=16, hidden_sizes=[32, 64, 128, 256], depths=list(depths),
                        layer_type="bottleneck", out_features=list(stages))


def tiny_hf_model(kind: str):
    """A tiny transformers model with a native ResNet (timm cannot import here), random weights."""
    from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection, DetrConfig, DetrForObjectDetection

    common = dict(use_timm_backbone=False, use_pretrained_backbone=False, d_model=64, encoder_layers=2,
                  encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_attention_heads=4, decoder_attention_heads=4)
    if kind == "detr":
        cfg = DetrConfig(backbone_config=hf_resnet_config(["stage4"]), decoder_layers=2, num_queries=12,
                         num_labels=7, **common)
        return DetrForObjectDetection(cfg).eval()
    extra = {"deformable": {}, "single-scale": {"num_feature_levels": 1}, "refine": {"with_box_refine": True},
             "two-stage": {"with_box_refine": True, "two_stage": True, "two_stage_num_proposals": 20}}[kind]
    stages = ["stage4"] if kind == "single-scale" else ["stage2", "stage3", "stage4"]
    cfg = DeformableDetrConfig(backbone_config=hf_resnet_config(stages), decoder_layers=3, num_queries=15,
                               num_labels=6, **common, **extra)
    return DeformableDetrForObjectDetection(cfg).eval()


def randomize_(model, seed: int = 1, scale: float = 0.1) -> None:
    """Overwrite every float tensor with seeded noise so outputs are far from the degenerate initial ones.

    Weight matrices get std 1/sqrt(fan_in) so activations stay O(1) even through a full ResNet-50.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            if key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
            elif re.search(r"(norm\d?|normalization|\.bn\d|downsample\.1|input_proj\.\d+\.1)\.weight$", key):
                value.copy_(1.0 + scale * torch.randn(value.shape, generator=gen))
            elif value.dim() >= 2 and not key.endswith(("level_embed", "query_position_embeddings.weight")):
                fan_in = value[0].numel()
                value.copy_(torch.randn(value.shape, generator=gen) / fan_in ** 0.5)
            else:
                value.copy_(scale * torch.randn(value.shape, generator=gen))


def padded_batch(size_a=(96, 128), size_b=(70, 100), seed: int = 0):
    """Two images of different sizes padded bottom-right together: (pixel_values [2,3,H,W], pixel_mask [2,H,W])."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    h, w = max(size_a[0], size_b[0]), max(size_a[1], size_b[1])
    x = torch.zeros(2, 3, h, w)
    mask = torch.zeros(2, h, w, dtype=torch.long)
    for i, (hh, ww) in enumerate((size_a, size_b)):
        x[i, :, :hh, :ww] = torch.randn(3, hh, ww, generator=gen)
        mask[i, :hh, :ww] = 1
    return x, mask


def two_sizes_and_a_padded_batch(small=(50, 70)):
    """Inputs for model-vs-transformers checks: one 96x128 image, one 130x98 image (seeded), and a padded batch of
    96x128 with ``small``; each ``(pixel_values, pixel_mask)``."""
    import torch

    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(1, 3, 96, 128, generator=gen), torch.ones(1, 96, 128, dtype=torch.long)),
            (torch.randn(1, 3, 130, 98, generator=gen), torch.ones(1, 130, 98, dtype=torch.long)),
            padded_batch((96, 128), small)]

def segmentation_vs_transformers(hf_model, folder, inputs):
    """Save a transformers ``DetrForSegmentation``, reload it and build ours from the folder; run both on each
    ``(pixel_values, pixel_mask)``. Returns (our model, per input the max |difference| of logits, boxes, masks)."""
    import torch

    import detr_deploy

    hf_model.save_pretrained(folder)
    reloaded = type(hf_model).from_pretrained(folder).eval()
    ours = detr_deploy.create_model(str(folder))
    diffs = []
    for x, mask in inputs:
        with torch.no_grad():
            ref = reloaded(pixel_values=x, pixel_mask=mask)
            out = ours(x, mask)
        assert ref.pred_masks.std() > 0.05 and ref.logits.std() > 0.05  # far from degenerate: the test can fail
        diffs.append(tuple(float((a - b).abs().max()) for a, b in ((ref.logits, out["logits"]),
                                                                    (ref.pred_boxes, out["pred_boxes"]),
                                                                    (ref.pred_masks, out["pred_masks"]))))
    return ours, diffs


@pytest.fixture(autouse=True)
def _quiet_known_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*power of 2.*")
        yield


# --- tiny variants of the registered models (export, runtime and precision tests) ---------------------------
TINY_BACKBONE = {"name": "resnet", "block": "basic", "depths": (1, 1, 1, 1), "widths": (8, 16, 32, 64),
                 "stem_width": 8}


def tiny_overrides(variant: str) -> dict:
    """Overrides that shrink a registered variant (same structure: levels, refine, two-stage, dilation)."""
    queries = 10 if variant.startswith("detr") else 12
    # the panoptic mask head's GroupNorm(8) needs d_model + num_heads divisible by 8
    heads = 8 if variant.endswith("panoptic") else 2
    return dict(backbone=dict(TINY_BACKBONE), d_model=32, num_heads=heads, encoder_layers=1, decoder_layers=2,
                ffn_dim=32, num_queries=queries, num_classes=5)


def tiny_model(variant: str, seed: int = 0, randomize: bool = True, **overrides):
    """A tiny version of a registered variant (``overrides`` change it further), randomised so that its outputs are
    far from the degenerate initial ones, in eval mode."""
    import torch

    import detr_deploy

    torch.manual_seed(seed)
    model = detr_deploy.create_model(variant, weights="random", **{**tiny_overrides(variant), **overrides})
    if randomize:
        randomize_(model, seed=seed + 1)
    return model


def onnx_vs_torch(model, path, pixels, mask):
    """The exported file in onnxruntime against the PyTorch model on one batch: an ``OutputDiff``."""
    from detr_deploy.export.verify import compare_with_model
    from detr_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

    with OnnxRuntimeBackend(path) as backend:
        return compare_with_model(model, backend, [("batch", pixels, mask)], log=lambda line: None)[0]


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``exported(variant, form="plugin", dynamic=False, size=(160, 192), batch=2, precision="fp32",
    calibration=None) -> (model, onnx_path)``.

    Exports are slow on a CPU (10-60 s); each configuration is exported once per test session and shared.
    """
    from detr_deploy.export import ExportConfig, export_onnx

    cache: dict = {}
    folder = tmp_path_factory.mktemp("exports")

    def get(variant: str, form: str = "plugin", dynamic: bool = False, size=(160, 192), batch: int = 2,
            precision: str = "fp32", calibration=None):
        key = (variant, form, dynamic, tuple(size), batch, precision, calibration and calibration.method)
        if key not in cache:
            model = tiny_model(variant)
            path = folder / (f"{variant}_{form}_{'dyn' if dynamic else 'static'}_{size[0]}x{size[1]}_b{batch}_"
                             f"{precision}{'_' + calibration.method if calibration else ''}.onnx")
            export_onnx(model, path, ExportConfig(msda=form, dynamic=dynamic, input_size=tuple(size), batch=batch,
                                                  precision=precision, calibration=calibration),
                        log=lambda message: None)
            cache[key] = (model, path)
        return cache[key]

    return get


# --- real photographs (scikit-image ships them offline) -----------------------------------------------------------
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


def photo(name: str):
    """A scikit-image photograph as a PIL image (skips the test when scikit-image is missing)."""
    skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the photographs used here")
    from PIL import Image

    return Image.fromarray(getattr(skdata, name)())


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """A folder of the PHOTOS as JPEG files, written once per session."""
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        photo(name).convert("RGB").save(folder / f"{name}.jpg", quality=95)
    return folder


# --- the shipped shapes model and fresh scenes ----------------------------------------------------------------------
SHAPES_WEIGHTS = Path(__file__).resolve().parents[1] / "detr_deploy/zoo/weights/deformable_detr_shapes.safetensors"


@pytest.fixture(scope="session")
def shapes_model():
    """The shipped deformable-detr-shapes model (loaded once per session)."""
    if not SHAPES_WEIGHTS.is_file():
        pytest.skip("the shipped shapes weights are missing from this checkout")
    import detr_deploy

    return detr_deploy.create_model("deformable-detr-shapes")


@pytest.fixture(scope="session")
def shapes_scenes(tmp_path_factory):
    """``shapes_scenes(seed, count) -> (images folder, COCO dict)``, rendered once per session per (seed, count)."""
    pytest.importorskip("skimage.data", reason="the renderer cuts backgrounds from scikit-image's photographs")
    import json

    from detr_deploy.zoo.shapes import render_dataset

    cache: dict = {}

    def get(seed: int, count: int):
        if (seed, count) not in cache:
            out = tmp_path_factory.mktemp(f"scenes_{seed}_{count}") / "data"
            annotations = render_dataset(out, count, seed, show_progress=False)
            cache[seed, count] = (out / "images", json.loads(annotations.read_text()))
        return cache[seed, count]

    return get


def msda_case(seed, shapes, n, m, d, lq, points, spread=1.4):
    """Random MSDA inputs (value, sampling locations, attention weights as torch tensors); locations cover the map
    and a margin of (spread - 1) / 2 outside it on each side."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    value = torch.randn(n, sum(h * w for h, w in shapes), m, d, generator=gen)
    locations = torch.rand(n, lq, m, len(shapes), points, 2, generator=gen) * spread - (spread - 1) / 2
    weights = torch.rand(n, lq, m, len(shapes), points, generator=gen)
    return value, locations, weights
