# SPDX-License-Identifier: Apache-2.0
"""A resumable, seeded CPU training loop for DETR-family models on COCO-format data, with a JSON-lines log."""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..artifact.settings import postprocess_settings, preprocess_settings
from ..evaluation import coco_map
from ..files import atomic_output, write_json
from ..models.build import build_model
from ..models.registry import get_entry
from ..runtime.coco import coco_results
from ..runtime.images import load_image
from ..runtime.postprocess import postprocess_detections
from ..runtime.preprocess import preprocess_images
from .data import CocoDetection, open_dataset, training_batch
from .losses import SetCriterion


@dataclass
class TrainConfig:
    """Training settings (the model is a registered variant, trained from scratch).

    Attributes:
        variant: registered name whose config is trained (backbone switched to trainable BatchNorm).
        data, val_data: COCO-format folders (``annotations.json`` + ``images/``).
        out: folder for ``last.pt`` (resume point), ``train.log`` (JSON lines) and ``final.safetensors``.
        iterations, batch_size, lr, weight_decay, warmup: optimisation (AdamW, linear warm-up then cosine decay).
        scales, max_size: training shortest edges (one drawn per batch) and long-side cap.
        seed: seeds model init, data order and augmentation.
        threads: torch intra-op threads.
        eval_every, eval_images: COCO mAP on the first ``eval_images`` validation images every ``eval_every`` steps.
        checkpoint_every: iterations between resume points.
        init_backbone: a weights file (ours, e.g. a shipped model) whose ``backbone.body.*`` tensors start the
            backbone instead of random weights (a new model's first step only; resuming ignores it).
    """

    variant: str
    data: str
    out: str
    val_data: str | None = None
    iterations: int = 6000
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup: int = 200
    scales: tuple[int, ...] = (224, 256, 288)
    max_size: int = 416
    seed: int = 0
    threads: int = 2
    eval_every: int = 1000
    eval_images: int = 200
    checkpoint_every: int = 200
    clip_norm: float = 0.1
    init_backbone: str | None = None


def model_for_training(variant: str, init_backbone: str | None = None) -> torch.nn.Module:
    """The variant's architecture with trainable BatchNorm (from scratch, or its backbone from ``init_backbone``),
    in train mode."""
    config = get_entry(variant).build_config()
    config = config.replace(norm="bn")
    model = build_model(config)
    model.variant = variant
    if init_backbone:
        from safetensors.torch import load_file

        state = {k: v.float() for k, v in load_file(init_backbone).items() if k.startswith("backbone.body.")}
        missing, _ = model.load_state_dict(state, strict=False)
        if any(k.startswith("backbone.body.") for k in missing):
            raise ValueError(f"{init_backbone} does not hold this variant's backbone")
    return model.train()


def _param_groups(model: torch.nn.Module, lr: float, weight_decay: float) -> list[dict]:
    # Deformable DETR trains the sampling-offset and reference-point projections 10x slower
    slow = [p for n, p in model.named_parameters() if "sampling_offsets" in n or "reference_points" in n]
    slow_ids = {id(p) for p in slow}
    rest = [p for p in model.parameters() if id(p) not in slow_ids]
    return [{"params": rest, "lr": lr, "weight_decay": weight_decay},
            {"params": slow, "lr": lr * 0.1, "weight_decay": weight_decay}]


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.iterations - config.warmup)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: CocoDetection, limit: int | None = None,
             batch_size: int = 1) -> dict[str, float]:
    """COCO mAP of ``model`` on (the first ``limit`` images of) ``dataset`` with the runtime's pre/post-processing.

    One image per forward by default, as ``detr-parity`` and ``detr-infer`` run: Deformable DETR's output depends on
    the padding of a batch (backbone borders, valid ratios of the sampling grid), and batches of 4 mixed-size scenes
    measured 0.42 mAP where the same model scores 0.56 one image at a time (48 validation scenes, step 2500).
    """
    was_training = model.training
    model.eval()
    pre, post = preprocess_settings(model.config), postprocess_settings(model.config)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    results = []
    for start in range(0, count, batch_size):
        indices = list(range(start, min(start + batch_size, count)))
        images = [load_image(dataset.path(i)) for i in indices]
        batch = preprocess_images(images, pre)
        out = model.predict_numpy(batch.pixel_values, batch.pixel_mask)
        detections = postprocess_detections(out["logits"], out["pred_boxes"], post, batch.original_sizes, 0.0)
        for i, det in zip(indices, detections):
            results += coco_results(dataset.images[i]["id"], det)
    model.train(was_training)
    return coco_map(dataset.coco, results, [dataset.images[i]["id"] for i in range(count)])


@torch.no_grad()
def evaluate_panoptic(model: torch.nn.Module, dataset, limit: int | None = None) -> dict[str, float]:
    """PQ / SQ / RQ of a segmentation ``model`` on (the first ``limit`` images of) a panoptic ``dataset``, one image
    per forward, with the runtime's post-processing (HF defaults, the model's stuff labels fused)."""
    from ..evaluation import panoptic_quality
    from ..runtime.segmentation import segment_image

    was_training = model.training
    model.eval()
    pre = preprocess_settings(model.config)
    config = model.config
    count = len(dataset) if limit is None else min(limit, len(dataset))
    truths, predictions = [], []
    for index in range(count):
        image, _, labels, masks = dataset.item(index)
        ids = np.zeros(image.shape[:2], np.int64)
        for number, mask in enumerate(masks, start=1):
            ids[mask] = number
        truths.append({"segmentation": ids, "segments_info": [{"id": n, "label_id": int(label)}
                                                              for n, label in enumerate(labels, start=1)]})
        batch = preprocess_images([image], pre)
        out = model.predict_numpy(batch.pixel_values, batch.pixel_mask)
        predictions.append(segment_image(out, 0, batch.resized_sizes[0], batch.original_sizes[0], "panoptic",
                                         stuff_ids=config.stuff_ids))
    model.train(was_training)
    stuffs = set(config.stuff_ids)
    quality = panoptic_quality(truths, predictions, set(range(config.num_classes)) - stuffs, stuffs)
    return quality or {"pq": 0.0, "sq": 0.0, "rq": 0.0}


def _log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def save_inference_weights(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """The state dict in FP16 safetensors (BatchNorm statistics included; counters dropped), written atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = Path(path)
    with atomic_output(path) as tmp:  # normal file permissions (safetensors' writer alone gives 0600)
        save_file(state, str(tmp), metadata={"variant": model.variant, "format": "detr-deploy"})
    return path


def train(config: TrainConfig, log=print) -> Path:
    """Train (resuming from ``out/last.pt`` when present); returns the path of ``final.safetensors``."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model = model_for_training(config.variant, config.init_backbone)
    family = model.config.family
    segmentation = model.config.task == "segmentation"
    criterion = SetCriterion(model.config.num_classes, sigmoid=family == "deformable")
    optimizer = torch.optim.AdamW(_param_groups(model, config.lr, config.weight_decay))
    rng = np.random.default_rng(config.seed)
    step = 0
    checkpoint = out / "last.pt"
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        log(f"resumed from {checkpoint} at step {step}")
        # the schedule follows the current --iterations, so the log must say when it changed
        _log(out / "train.log", {"step": step, "resumed": True, "iterations": config.iterations})
    write_json(out / "config.json", asdict(config))
    data = open_dataset(config.data, segmentation)
    val = open_dataset(config.val_data, segmentation) if config.val_data else None
    # batches of one orientation: a portrait image padded beside landscapes would double the compute
    groups = [[i for i, im in enumerate(data.images) if (im["width"] >= im["height"]) == landscape]
              for landscape in (True, False)]
    groups = [g for g in groups if g]
    orders: list[list[int]] = [[] for _ in groups]
    start_time, window = time.time(), []
    while step < config.iterations:
        g = int(rng.choice(len(groups), p=[len(x) / len(data) for x in groups]))
        if len(orders[g]) < config.batch_size:
            orders[g] += [groups[g][i] for i in rng.permutation(len(groups[g]))]
        indices, orders[g] = orders[g][:config.batch_size], orders[g][config.batch_size:]
        tick = time.time()
        pixels, mask, targets = training_batch(data, indices, rng, config.scales, config.max_size)
        for group, base in zip(optimizer.param_groups, (config.lr, config.lr * 0.1)):
            group["lr"] = base * _lr_factor(step, config)
        outputs = model(pixels, mask)
        loss, parts = criterion(outputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm))
        optimizer.step()
        step += 1
        window.append(time.time() - tick)
        if step % 20 == 0 or step == config.iterations:
            record = {"step": step, "lr": optimizer.param_groups[0]["lr"], "grad_norm": round(grad_norm, 3),
                      "sec_per_step": round(float(np.mean(window)), 3), "elapsed_h": round((time.time() - start_time)
                                                                                            / 3600, 3),
                      **{k: round(v, 4) for k, v in parts.items() if not k.startswith("aux")}}
            window = []
            _log(out / "train.log", record)
            masks = f" mask {parts['mask']:.3f} dice {parts['dice']:.3f}" if "mask" in parts else ""
            log(f"step {step}/{config.iterations} loss {parts['total']:.3f} (class {parts['class']:.3f} "
                f"l1 {parts['l1']:.3f} giou {parts['giou']:.3f}{masks}) {record['sec_per_step']:.2f}s/step")
        if step % config.checkpoint_every == 0 or step == config.iterations:
            tmp = checkpoint.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "torch_rng": torch.get_rng_state(), "numpy_rng": json.dumps(rng.bit_generator.state)}, tmp)
            os.replace(tmp, checkpoint)
        if val is not None and (step % config.eval_every == 0 or step == config.iterations):
            if segmentation:
                stats = evaluate_panoptic(model, val, config.eval_images)
                log(f"step {step}: val PQ {stats['pq']:.3f} SQ {stats['sq']:.3f} RQ {stats['rq']:.3f}")
            else:
                stats = evaluate(model, val, config.eval_images)
                log(f"step {step}: val mAP {stats['mAP']:.3f} mAP50 {stats['mAP50']:.3f}")
            _log(out / "train.log", {"step": step, "eval": stats})
    model.eval()
    return save_inference_weights(model, out / "final.safetensors")
