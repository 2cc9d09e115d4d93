# SPDX-License-Identifier: Apache-2.0
"""Checkpoint loading: official .pth and Hugging Face files with the exact published key names and shapes."""
from __future__ import annotations

import argparse
import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

import detr_deploy
from detr_deploy.errors import CheckpointError, CheckpointMismatchError, ConfigError, WeightsUnavailableError
from detr_deploy.factory import RandomWeightsWarning
from detr_deploy.weights import ours_to_official, to_ours

from conftest import key_spec, official_to_hf, saved_key_names, synthetic_state

# official key list -> (family, expected config fields read back from the keys)
OFFICIAL = {
    "official_detr_r50": ("detr", {"num_classes": 91, "num_queries": 100}, "resnet50"),
    "official_detr_r101": ("detr", {"num_classes": 91, "num_queries": 100}, "resnet101"),
    "official_ddetr": ("deformable", {"num_feature_levels": 4, "with_box_refine": False, "two_stage": False},
                       "resnet50"),
    "official_ddetr_ss": ("deformable", {"num_feature_levels": 1, "with_box_refine": False, "two_stage": False},
                          "resnet50"),
    "official_ddetr_refine": ("deformable", {"num_feature_levels": 4, "with_box_refine": True, "two_stage": False},
                              "resnet50"),
    "official_ddetr_two_stage": ("deformable", {"num_feature_levels": 4, "with_box_refine": True,
                                                "two_stage": True, "num_queries": 300}, "resnet50"),
}
VARIANT_OF = {"official_detr_r50": "detr-r50", "official_detr_r101": "detr-r101",
              "official_ddetr": "deformable-detr", "official_ddetr_ss": "deformable-detr-single-scale",
              "official_ddetr_refine": "deformable-detr-refine",
              "official_ddetr_two_stage": "deformable-detr-two-stage"}


def _save_official(state, path, with_args=True):
    payload = {"model": state}
    if with_args:  # what main.py writes; weights_only loading must accept it
        payload["args"] = argparse.Namespace(lr=1e-4, backbone="resnet50", two_stage=False)
        payload["epoch"] = 49
    torch.save(payload, path)
    return path


def _image():
    return torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_checkpoint_loads_and_equals_hugging_face_form(name, tmp_path):
    family, expected, backbone = OFFICIAL[name]
    state = synthetic_state(key_spec(name), seed=7)
    official_path = _save_official(state, tmp_path / f"{name}.pth")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "DC5 cannot be read from official keys"
        from_official = detr_deploy.create_model(str(official_path))
    assert from_official.config.family == family
    assert from_official.config.backbone.name == backbone
    for field, value in expected.items():
        assert getattr(from_official.config, field) == value, field
    assert from_official.weights_info["format"] == "official"

    # the same weights under Hugging Face names (converted by an independent implementation of the rules)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    save_file({k: v.contiguous() for k, v in official_to_hf(state, family).items()}, hf_dir / "model.safetensors")
    from_hf = detr_deploy.create_model(VARIANT_OF[name], weights=str(hf_dir / "model.safetensors"))
    assert from_hf.weights_info["format"] == "hf"

    x = _image()
    with torch.no_grad():
        a, b = from_official(x), from_hf(x)
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])

    # round trip official -> ours -> official is bit-identical, aliases included
    config = from_official.config
    back = ours_to_official(from_official.state_dict(), getattr(config, "with_box_refine", False),
                            getattr(config, "two_stage", False))
    assert sorted(back) == sorted(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_qkv_split_and_pack_are_inverse():
    state = synthetic_state(key_spec("official_detr_r50"), seed=1)
    hf = official_to_hf(state, "detr")
    q = hf["model.encoder.layers.3.self_attn.q_proj.weight"]
    k = hf["model.encoder.layers.3.self_attn.k_proj.weight"]
    v = hf["model.encoder.layers.3.self_attn.v_proj.weight"]
    ours, layout = to_ours(hf)
    assert layout == "hf"
    packed = ours["transformer.encoder.layers.3.self_attn.in_proj_weight"]
    assert torch.equal(packed, torch.cat([q, k, v])) and torch.equal(packed, state[
        "transformer.encoder.layers.3.self_attn.in_proj_weight"])


# (Hub name, our name, rows of a packed in_proj or None): written from checkpoint-formats.md, independently of
# detr_deploy.weights.convert
HUB_SAMPLES = {
    "detr": [("model.backbone.conv_encoder.model.layer3.5.conv2.weight", "backbone.body.layer3.5.conv2.weight", None),
             ("model.encoder.layers.2.self_attn.k_proj.weight", "transformer.encoder.layers.2.self_attn.in_proj_weight",
              (256, 512)),
             ("model.decoder.layers.4.encoder_attn.v_proj.bias",
              "transformer.decoder.layers.4.multihead_attn.in_proj_bias", (512, 768)),
             ("model.decoder.layers.1.encoder_attn_layer_norm.weight", "transformer.decoder.layers.1.norm2.weight",
              None),
             ("class_labels_classifier.weight", "class_embed.weight", None),
             ("model.query_position_embeddings.weight", "query_embed.weight", None)],
    "deformable": [("model.encoder.layers.3.self_attn.sampling_offsets.weight",
                    "transformer.encoder.layers.3.self_attn.sampling_offsets.weight", None),
                   ("model.decoder.layers.2.encoder_attn_layer_norm.bias", "transformer.decoder.layers.2.norm1.bias",
                    None),
                   ("model.decoder.layers.2.self_attn_layer_norm.bias", "transformer.decoder.layers.2.norm2.bias",
                    None),
                   ("model.input_proj.3.1.weight", "input_proj.3.1.weight", None),
                   ("class_embed.0.bias", "class_embed.0.bias", None)],
}


@pytest.mark.parametrize("name,variant", [("hf_detr_r50", "detr-r50"), ("hf_ddetr", "deformable-detr"),
                                          ("hf_ddetr_ss", "deformable-detr-single-scale"),
                                          ("hf_ddetr_refine", "deformable-detr-refine"),
                                          ("hf_ddetr_two_stage", "deformable-detr-two-stage")])
def test_hub_key_lists_with_every_alias_load_into_the_right_places(name, variant, tmp_path):
    state = synthetic_state(key_spec(name), seed=2)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    model = detr_deploy.create_model(variant, weights=str(tmp_path / "model.safetensors"))
    ours = model.state_dict()
    samples = HUB_SAMPLES["detr" if variant.startswith("detr") else "deformable"]
    for hub_key, our_key, rows in samples:
        if hub_key not in state:  # e.g. input_proj.3 exists only with four levels
            continue
        value = ours[our_key] if rows is None else ours[our_key][rows[0]:rows[1]]
        assert torch.equal(value, state[hub_key]), (hub_key, our_key)
    if "refine" in name or "two_stage" in name:  # independent per-layer box heads, from their decoder aliases
        assert not torch.equal(ours["bbox_embed.1.layers.0.weight"], ours["bbox_embed.0.layers.0.weight"])
        assert torch.equal(ours["bbox_embed.1.layers.0.weight"], state["model.decoder.bbox_embed.1.layers.0.weight"])


@pytest.mark.parametrize("saved,full,variant", [
    ("hf_saved_by_transformers_5.23_detr", "hf_detr_r50", "detr-r50"),
    ("hf_saved_by_transformers_5.23_ddetr_refine", "hf_ddetr_refine", "deformable-detr-refine")])
def test_files_written_by_transformers_5_load_with_ties_rebuilt(saved, full, variant, tmp_path):
    """transformers 5.23 drops tied duplicates (575 of 621 keys for box refine); the loader re-ties them."""
    shapes = key_spec(full)
    names = saved_key_names(saved)
    state = synthetic_state({k: shapes[k] for k in names}, seed=4)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    model = detr_deploy.create_model(variant, weights=str(tmp_path / "model.safetensors"))
    if variant == "deformable-detr-refine":
        assert len(names) == 575
        assert any("tied class_embed.1" in n for n in model.weights_info["notes"])
        sd = model.state_dict()
        assert torch.equal(sd["bbox_embed.3.layers.0.weight"], state["model.decoder.bbox_embed.3.layers.0.weight"])
        assert torch.equal(sd["class_embed.5.weight"], state["class_embed.0.weight"])


@pytest.mark.parametrize("kind", ["detr", "refine"])
def test_live_transformers_5_state_dict_names_load(kind, tmp_path):
    """torch.save(hf_model.state_dict()) uses transformers 5.x live names (backbone.model, mlp.fc1, o_proj)."""
    pytest.importorskip("transformers")
    import shutil

    from conftest import padded_batch, randomize_, tiny_hf_model

    hf_model = tiny_hf_model(kind)
    randomize_(hf_model)
    hf_model.save_pretrained(tmp_path / "saved")
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    shutil.copy(tmp_path / "saved" / "config.json", live_dir / "config.json")
    live_state = hf_model.state_dict()
    assert any(".mlp.fc1." in k for k in live_state) and any(".backbone.model." in k for k in live_state)
    torch.save(live_state, live_dir / "pytorch_model.bin")
    x, mask = padded_batch()
    with torch.no_grad():
        a = detr_deploy.create_model(str(tmp_path / "saved"))(x, mask)
        b = detr_deploy.create_model(str(live_dir))(x, mask)
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])


# --- robustness --------------------------------------------------------------------------------------------
def test_wrong_class_count_says_how_to_set_it(tmp_path):
    spec = key_spec("official_detr_r50")
    spec["class_embed.weight"], spec["class_embed.bias"] = [21, 256], [21]
    path = _save_official(synthetic_state(spec), tmp_path / "finetuned.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        detr_deploy.create_model("detr-r50", weights=str(path))
    assert "the checkpoint has 20 classes, the model 91" in str(err.value)
    assert "num_classes=20" in str(err.value)
    assert detr_deploy.create_model("detr-r50", weights=str(path), num_classes=20).config.num_classes == 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert detr_deploy.create_model(str(path)).config.num_classes == 20


def test_other_variant_lists_missing_and_unexpected_keys(tmp_path):
    path = _save_official(synthetic_state(key_spec("official_ddetr_two_stage")), tmp_path / "two_stage.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        detr_deploy.create_model("deformable-detr", weights=str(path))
    text = str(err.value)
    assert "missing keys (3): query_embed.weight, transformer.reference_points.bias" in text
    assert "unexpected keys (16)" in text and "class_embed.6.weight" in text
    assert "create_model(path)" in text


def test_refine_checkpoint_into_plain_variant_is_refused(tmp_path):
    state = synthetic_state(key_spec("official_ddetr_refine"))  # independent heads
    state = {k: v for k, v in state.items() if not k.startswith("transformer.decoder.bbox")}  # aliases dropped
    path = _save_official(state, tmp_path / "refine_no_alias.pth")
    with pytest.raises(CheckpointMismatchError, match="box refinement"):
        detr_deploy.create_model("deformable-detr", weights=str(path))


def test_wrapped_prefixed_checkpoint_with_counters_loads(tmp_path):
    state = synthetic_state(key_spec("official_detr_r50"), seed=6)
    wrapped = {f"module.{k}": v for k, v in state.items()}
    wrapped["module.backbone.0.body.bn1.num_batches_tracked"] = torch.tensor(5)
    wrapped["module.transformer.total_ops"] = torch.zeros(1)
    wrapped["module.total_params"] = torch.zeros(1)
    torch.save({"state_dict": wrapped}, tmp_path / "ddp.pth")
    model = detr_deploy.create_model("detr-r50", weights=str(tmp_path / "ddp.pth"))
    notes = " ".join(model.weights_info["notes"])
    assert "module." in notes and "ignored 3" in notes
    assert torch.equal(model.state_dict()["query_embed.weight"], state["query_embed.weight"])


class _Evil:
    pass


@pytest.mark.parametrize("kind", ["text", "empty", "truncated", "jpeg", "pickle_object", "safetensors_truncated",
                                  "empty_folder", "missing"])
def test_bad_files_get_clear_errors(kind, tmp_path):
    path = tmp_path / "model.pth"
    if kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        _save_official(synthetic_state(key_spec("official_detr_r50")), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "jpeg":
        path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    elif kind == "pickle_object":
        torch.save({"model": {"w": torch.zeros(1)}, "obj": _Evil()}, path)
    elif kind == "safetensors_truncated":
        path = tmp_path / "model.safetensors"
        save_file({"a": torch.zeros(100)}, path)
        path.write_bytes(path.read_bytes()[:60])
    elif kind == "empty_folder":
        path = tmp_path / "folder"
        path.mkdir()
    elif kind == "missing":
        path = tmp_path / "nope.pth"
    with pytest.raises((CheckpointError, WeightsUnavailableError)) as err:
        detr_deploy.create_model("detr-r50", weights=str(path))
    message = str(err.value)
    expected = {"text": "not a PyTorch checkpoint", "empty": "empty", "truncated": "truncated",
                "jpeg": "not a PyTorch checkpoint", "pickle_object": "safe loading",
                "safetensors_truncated": "not a valid safetensors", "empty_folder": "no model.safetensors",
                "missing": "nope.pth: no such file or folder"}[kind]
    assert expected in message, message


def test_hf_folder_config_drives_architecture(tmp_path):
    """config.json settings invisible in the keys (DC5, labels) come through."""
    state = synthetic_state(key_spec("hf_detr_r50"), seed=8)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    labels = {str(i): f"thing{i}" for i in range(91)}
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "detr", "d_model": 256, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8,
        "decoder_attention_heads": 8, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048, "num_queries": 100,
        "dilation": True, "use_timm_backbone": True, "backbone": "resnet50", "id2label": labels}))
    model = detr_deploy.create_model(str(tmp_path))
    assert model.config.backbone.dilation and model.config.backbone.name == "resnet50"
    assert model.config.id2label[5] == "thing5"


def test_dc5_official_file_name_and_warning(tmp_path):
    state = synthetic_state(key_spec("official_detr_r50"), seed=9)
    plain = _save_official(state, tmp_path / "detr-r50-e632da11.pth")
    dc5 = _save_official(state, tmp_path / "detr-r50-dc5-f0fb7ef5.pth")
    with pytest.warns(UserWarning, match="DC5"):
        assert not detr_deploy.create_model(str(plain)).config.backbone.dilation
    assert detr_deploy.create_model(str(dc5)).config.backbone.dilation
    assert detr_deploy.create_model(str(plain), dilation=True).config.backbone.dilation


def test_offline_hub_id_and_auto_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DETR_DEPLOY_CACHE", "/nonexistent-cache")
    with pytest.raises(WeightsUnavailableError, match="weights=PATH"):
        detr_deploy.create_model("detr-r50", weights="hf-hub:facebook/detr-resnet-50")
    with pytest.warns(FutureWarning, match="write hf-hub:facebook/detr-resnet-50"):  # the old bare spelling
        with pytest.raises(WeightsUnavailableError):
            detr_deploy.create_model("detr-r50", weights="facebook/detr-resnet-50")
    with pytest.warns(RandomWeightsWarning, match="RANDOM"):
        model = detr_deploy.create_model("deformable-detr", num_classes=3)
    assert model.weights_info["source"] == "random"


def test_checkpoint_name_with_weights_is_refused(tmp_path):
    path = _save_official(synthetic_state(key_spec("official_detr_r50")), tmp_path / "m.pth")
    with pytest.raises(ConfigError, match="already a checkpoint"):
        detr_deploy.create_model(str(path), weights="random")
