# SPDX-License-Identifier: Apache-2.0
"""Comparing a reference and an artefact on the same inputs: numbers, not just pass/fail. numpy only."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def detection_scores(logits: np.ndarray, family: str) -> np.ndarray:
    """Per-(query, class) scores ``[B, Q, C']``: softmax without no-object (DETR) or sigmoid (Deformable)."""
    logits = logits.astype(np.float64)
    if family == "detr":
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True))[..., :-1]
    return _sigmoid(logits)


def top_k_pairs(logits: np.ndarray, family: str, k: int) -> list[set[tuple[int, int]]]:
    """Per image, the k highest-scoring (query, label) pairs as the post-processing would rank them."""
    scores = detection_scores(logits, family)
    result = []
    for img in scores:
        if family == "detr":  # one detection per query: its best label
            labels = img.argmax(-1)
            best = img.max(-1)
            order = np.argsort(-best, kind="stable")[:k]
            result.append({(int(q), int(labels[q])) for q in order})
        else:
            flat = img.reshape(-1)
            order = np.argsort(-flat, kind="stable")[:k]
            result.append({(int(i) // img.shape[1], int(i) % img.shape[1]) for i in order})
    return result


@dataclass(frozen=True)
class Tolerance:
    """Limits an artefact must meet against the PyTorch reference.

    Attributes: max_abs_logits, max_abs_boxes (raw outputs), min_top_k_agreement (fraction of the reference's
    top-k (query, label) pairs), min_matched (detections matched at IoU >= 0.9 with the same label),
    max_score_delta (matched detections), max_map_drop (COCO mAP of the artefact against the reference's detections,
    below the reference's own), max_coco_map_drop (true COCO mAP with --coco, below the reference's).
    """

    max_abs_logits: float
    max_abs_boxes: float
    min_top_k_agreement: float
    min_matched: float = 0.0
    max_score_delta: float = 1.0
    max_map_drop: float = 1.0
    max_coco_map_drop: float = 1.0


# Defaults per precision. FP32 differs from PyTorch by float rounding only; FP16 and INT8 limits come from the
# measurements in benchmarks/precision.py (worst case over the test models, with margin).
DEFAULT_TOLERANCES = {
    "fp32": Tolerance(1e-3, 1e-3, 0.99, min_matched=0.99, max_score_delta=1e-3, max_map_drop=0.01,
                      max_coco_map_drop=0.005),
    "fp16": Tolerance(0.5, 0.05, 0.85, min_matched=0.9, max_score_delta=0.05, max_map_drop=0.05,
                      max_coco_map_drop=0.02),
    # INT8 max limits sit above the worst outlier of a good graph (the shapes model, percentile calibration: max
    # |dbox| 0.21, max score delta 0.44 over 1314 detections, COCO mAP -0.002); matched and mAP drop catch bad ones
    "int8": Tolerance(3.0, 0.3, 0.5, min_matched=0.6, max_score_delta=0.5, max_map_drop=0.25,
                      max_coco_map_drop=0.1),
}


@dataclass
class OutputDiff:
    """Raw-output agreement of one input batch."""

    label: str
    max_abs_logits: float
    max_abs_boxes: float
    mean_abs_logits: float
    mean_abs_boxes: float
    top_k: int
    top_k_agreement: float  # fraction of the reference's top-k (query, label) pairs the artefact also has

    def violations(self, tolerance: Tolerance) -> list[str]:
        """Which raw-output limits this batch exceeds."""
        problems = []
        if self.max_abs_logits > tolerance.max_abs_logits:
            problems.append(f"max |dlogit| {self.max_abs_logits:.2e} > {tolerance.max_abs_logits:.0e}")
        if self.max_abs_boxes > tolerance.max_abs_boxes:
            problems.append(f"max |dbox| {self.max_abs_boxes:.2e} > {tolerance.max_abs_boxes:.0e}")
        if self.top_k_agreement < tolerance.min_top_k_agreement:
            problems.append(f"top-k agreement {self.top_k_agreement:.1%} < {tolerance.min_top_k_agreement:.0%}")
        return problems

    def row(self) -> str:
        return (f"  {self.label:<26} {self.max_abs_logits:>12.2e} {self.max_abs_boxes:>12.2e} "
                f"{self.mean_abs_logits:>12.2e} {100 * self.top_k_agreement:>9.1f}%")


TABLE_HEADER = f"  {'input':<26} {'max|dlogit|':>12} {'max|dbox|':>12} {'mean|dlogit|':>12} {'top-k agr':>10}"


def compare_outputs(label: str, reference: dict[str, np.ndarray], artefact: dict[str, np.ndarray], family: str,
                    top_k: int = 100) -> OutputDiff:
    """Compare ``{"logits", "pred_boxes"}`` of a reference and an artefact (``[B,Q,C]``, ``[B,Q,4]``)."""
    ref_l, art_l = reference["logits"].astype(np.float64), artefact["logits"].astype(np.float64)
    ref_b, art_b = reference["pred_boxes"].astype(np.float64), artefact["pred_boxes"].astype(np.float64)
    if ref_l.shape != art_l.shape or ref_b.shape != art_b.shape:
        raise ValueError(f"output shapes differ: reference {ref_l.shape}/{ref_b.shape}, "
                         f"artefact {art_l.shape}/{art_b.shape}")
    k = min(top_k, ref_l.shape[1] * (ref_l.shape[2] if family != "detr" else 1))
    ref_pairs, art_pairs = top_k_pairs(ref_l, family, k), top_k_pairs(art_l, family, k)
    agreement = float(np.mean([len(a & b) / k for a, b in zip(ref_pairs, art_pairs)]))
    return OutputDiff(label, float(np.abs(ref_l - art_l).max()), float(np.abs(ref_b - art_b).max()),
                      float(np.abs(ref_l - art_l).mean()), float(np.abs(ref_b - art_b).mean()), k, agreement)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N,4]`` x ``[M,4]`` xyxy -> ``[N,M]`` IoU."""
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class DetectionMatch:
    """Reference detections found again in the artefact's (same label, IoU >= threshold), greedy by score."""

    reference: int
    matched: int
    score_deltas: list[float]
    box_l1: list[float]  # mean abs corner difference of matched boxes, in pixels

    @property
    def fraction(self) -> float:
        return self.matched / self.reference if self.reference else 1.0


def match_detections(reference: dict, artefact: dict, iou_threshold: float = 0.9) -> DetectionMatch:
    """Match runtime results (``boxes`` xyxy, ``scores``, ``labels``) of one image."""
    ref_boxes, art_boxes = np.asarray(reference["boxes"], np.float64), np.asarray(artefact["boxes"], np.float64)
    if len(ref_boxes) == 0:
        return DetectionMatch(0, 0, [], [])
    if len(art_boxes) == 0:
        return DetectionMatch(len(ref_boxes), 0, [], [])
    iou = box_iou(ref_boxes, art_boxes)
    same = np.asarray(reference["labels"])[:, None] == np.asarray(artefact["labels"])[None, :]
    iou = np.where(same, iou, 0.0)
    used = np.zeros(len(art_boxes), bool)
    deltas, l1 = [], []
    for i in np.argsort(-np.asarray(reference["scores"]), kind="stable"):
        candidates = np.where(~used & (iou[i] >= iou_threshold))[0]
        if len(candidates) == 0:
            continue
        j = candidates[np.argmax(iou[i, candidates])]
        used[j] = True
        deltas.append(abs(float(reference["scores"][i]) - float(artefact["scores"][j])))
        l1.append(float(np.abs(ref_boxes[i] - art_boxes[j]).mean()))
    return DetectionMatch(len(ref_boxes), len(deltas), deltas, l1)


# --- the parity check: a PyTorch reference against artefacts on images ------------------------------------------
TOLERANCE_FIELDS = set(Tolerance.__dataclass_fields__)


@dataclass
class ToleranceTable:
    """Per-precision defaults plus overrides by precision or artefact file name."""

    overrides: dict[str, dict[str, float]] = field(default_factory=dict)

    def for_artefact(self, path: str, precision: str) -> Tolerance:
        from pathlib import Path

        fields = dict(DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"]).__dict__)
        fields.update(self.overrides.get(precision, {}))
        fields.update(self.overrides.get(Path(path).name, {}))
        return Tolerance(**fields)


def load_tolerances(path: str | None) -> ToleranceTable:
    """Read a JSON file ``{"fp16": {"min_matched": 0.95}, "model.onnx": {"max_abs_logits": 0.01}}``.

    Keys are precisions (fp32, fp16, int8) or artefact file names; fields override the precision's defaults. Unknown
    fields and out-of-range values are errors that name the problem.
    """
    import json
    from pathlib import Path

    from .errors import ConfigError

    if path is None:
        return ToleranceTable()
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"tolerance file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"tolerance file {path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"tolerance file {path} must hold an object: {{precision or file name: {{field: value}}}}")
    for key, fields in data.items():
        if not isinstance(fields, dict):
            raise ConfigError(f"tolerance file {path}: {key!r} must map to an object of fields")
        unknown = sorted(set(fields) - TOLERANCE_FIELDS)
        if unknown:
            raise ConfigError(f"tolerance file {path}: unknown field(s) {unknown} under {key!r}; known: "
                              f"{sorted(TOLERANCE_FIELDS)}")
        for name, value in fields.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"tolerance file {path}: {key}.{name} must be a number >= 0, got {value!r}")
            if (name.startswith("min_") or name.endswith("_drop")) and value > 1:
                raise ConfigError(f"tolerance file {path}: {key}.{name} is a fraction (0..1), got {value}")
    return ToleranceTable({k: {f: float(v) for f, v in fields.items()} for k, fields in data.items()})


@dataclass
class ArtefactReport:
    """Everything measured for one artefact (see ``ParityCheck.run``)."""

    path: str
    backend: str
    precision: str
    raw: dict
    detections: dict
    pseudo_map: dict
    coco: dict | None
    tolerance: dict
    violations: list

    @property
    def passed(self) -> bool:
        return not self.violations


def _detections_gt(detections: list[dict], image_ids: list[int], sizes: list[tuple[int, int]],
                   id2label: dict[int, str], threshold: float) -> dict:
    """Reference detections above ``threshold`` as a COCO ground-truth dict."""
    images = [{"id": i, "width": w, "height": h, "file_name": str(i)} for i, (h, w) in zip(image_ids, sizes)]
    annotations = []
    for image_id, det in zip(image_ids, detections):
        for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
            if score > threshold:
                x0, y0, x1, y1 = (float(v) for v in box)
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                    "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": int(k), "name": v} for k, v in id2label.items()]}


def canonical_preprocess(model_config, artefact_pre):
    """The reference pipeline's preprocessing: the model's image size and ImageNet constants, HF rounding, and the
    artefact's geometry (dynamic shortest-edge, or a static artefact's fit-and-pad size)."""
    from .runtime.metadata import IMAGENET_MEAN, IMAGENET_STD, Preprocess

    return Preprocess(resize=artefact_pre.resize, shortest_edge=model_config.image_size[0],
                      longest_edge=model_config.image_size[1], rounding="hf", input_size=artefact_pre.input_size,
                      rescale=1 / 255, mean=IMAGENET_MEAN, std=IMAGENET_STD)


class ParityCheck:
    """A PyTorch reference model against exported artefacts, on the same images.

    For each artefact, two levels:
    - raw: the artefact's own preprocessed batch through both the model and the artefact (conversion error only):
      max/mean abs difference of logits and boxes, top-k agreement;
    - end to end: the reference pipeline (canonical preprocessing + model + reference postprocessing) against the
      artefact's Detector (its recorded pre/post-processing): reference detections above ``match_threshold``
      found again at IoU >= ``iou`` with the same label, score deltas, and COCO mAP of the artefact with the
      reference's detections above ``gt_threshold`` as ground truth; with COCO annotations, the true mAP of both.

    Args:
        model: the PyTorch reference (``create_model``), eval mode.
        artefacts: ONNX files and/or engines.
        backend_options: per-backend options for the Detectors (``{"onnxruntime": {...}, "tensorrt": {...}}``).
    """

    def __init__(self, model, artefacts: list[str], tolerances: ToleranceTable | None = None,
                 backend_options: dict | None = None, match_threshold: float = 0.3, gt_threshold: float = 0.5,
                 iou: float = 0.9):
        from .runtime.detector import Detector

        self.model = model.eval()
        self.tolerances = tolerances or ToleranceTable()
        self.match_threshold, self.gt_threshold, self.iou = match_threshold, gt_threshold, iou
        options = backend_options or {}
        self.detectors = []
        for path in artefacts:
            engine = str(path).endswith((".engine", ".plan", ".trt"))
            self.detectors.append((str(path), Detector(path, threshold=0.0,
                                                       **options.get("tensorrt" if engine else "onnxruntime", {}))))

    def _reference(self, pixel_values, pixel_mask) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            out = self.model(torch.from_numpy(pixel_values), torch.from_numpy(pixel_mask))
        return {"logits": out["logits"].numpy(), "pred_boxes": out["pred_boxes"].numpy()}

    def run(self, images: list[str], coco: dict | None = None, image_ids: list[int] | None = None,
            progress=None) -> dict:
        """Measure every artefact on ``images``; returns the report dict (see README, "detr-parity")."""
        from .evaluation import coco_map, to_coco_results
        from .runtime.images import load_image
        from .runtime.postprocess import postprocess
        from .runtime.preprocess import normalization_table, preprocess

        config = self.model.config
        image_ids = image_ids or list(range(1, len(images) + 1))
        state = {path: {"raw": [], "ref": [], "art": []} for path, _ in self.detectors}
        reference_cache: dict = {}
        sizes = []
        for path_index, source in enumerate(images):
            image = load_image(source)
            sizes.append(image.shape[:2])
            for path, detector in self.detectors:
                meta = detector.metadata
                batch = detector.preprocess([image])
                artefact_out = detector.infer(batch)
                reference_out = self._reference(batch.pixel_values, batch.pixel_mask)
                state[path]["raw"].append(compare_outputs(
                    str(source), {k: v[:1] for k, v in reference_out.items()},
                    {k: artefact_out[k][:1] for k in ("logits", "pred_boxes")}, meta.family, meta.postprocess.top_k))
                state[path]["art"].append(detector.postprocess(artefact_out, batch, 1, 0.0)[0])
                pre = canonical_preprocess(config, meta.preprocess)
                key = (path_index, repr(pre), repr(meta.postprocess))
                if key not in reference_cache:
                    ref_batch = preprocess([image], pre, tuple(pre.input_size) if pre.input_size else None,
                                           normalization_table(pre))
                    out = self._reference(ref_batch.pixel_values, ref_batch.pixel_mask)
                    reference_cache[key] = postprocess(out["logits"], out["pred_boxes"], meta.postprocess,
                                                       ref_batch.original_sizes, 0.0, config.id2label)[0]
                state[path]["ref"].append(reference_cache[key])
            if progress is not None:
                progress(1)
        reports = []
        for path, detector in self.detectors:
            meta = detector.metadata
            tolerance = self.tolerances.for_artefact(path, meta.precision)
            raw = state[path]["raw"]
            raw_summary = {"max_abs_logits": max(d.max_abs_logits for d in raw),
                           "mean_abs_logits": float(np.mean([d.mean_abs_logits for d in raw])),
                           "max_abs_boxes": max(d.max_abs_boxes for d in raw),
                           "mean_abs_boxes": float(np.mean([d.mean_abs_boxes for d in raw])),
                           "top_k_agreement": float(np.mean([d.top_k_agreement for d in raw]))}
            matches = []
            for ref, art in zip(state[path]["ref"], state[path]["art"]):
                keep = np.asarray(ref["scores"]) > self.match_threshold
                ref_kept = {k: np.asarray(ref[k])[keep] for k in ("boxes", "scores", "labels")}
                matches.append(match_detections(ref_kept, art, self.iou))
            deltas = [d for m in matches for d in m.score_deltas]
            total = sum(m.reference for m in matches)
            detections = {"reference": total, "matched": (sum(m.matched for m in matches) / total) if total else 1.0,
                          "score_delta_mean": float(np.mean(deltas)) if deltas else 0.0,
                          "score_delta_max": float(np.max(deltas)) if deltas else 0.0,
                          "box_l1_mean": float(np.mean([v for m in matches for v in m.box_l1])) if deltas else 0.0}
            gt = _detections_gt(state[path]["ref"], image_ids, sizes, config.id2label, self.gt_threshold)
            art_results = [r for i, d in zip(image_ids, state[path]["art"]) for r in to_coco_results(i, d)]
            ref_results = [r for i, d in zip(image_ids, state[path]["ref"]) for r in to_coco_results(i, d)]
            if gt["annotations"]:
                ref_self = coco_map(gt, ref_results)["mAP"]
                art_map = coco_map(gt, art_results)["mAP"]
                pseudo = {"gt_detections": len(gt["annotations"]), "reference": ref_self, "artefact": art_map,
                          "drop": ref_self - art_map}
            else:
                pseudo = {"gt_detections": 0, "reference": None, "artefact": None, "drop": 0.0}
            coco_summary = None
            if coco is not None:
                ref_true, art_true = coco_map(coco, ref_results, image_ids), coco_map(coco, art_results, image_ids)
                coco_summary = {"reference": ref_true, "artefact": art_true,
                                "drop": ref_true["mAP"] - art_true["mAP"]}
            violations = []
            for name, value, limit, worse in [
                ("max |dlogit|", raw_summary["max_abs_logits"], tolerance.max_abs_logits, "above"),
                ("max |dbox|", raw_summary["max_abs_boxes"], tolerance.max_abs_boxes, "above"),
                ("top-k agreement", raw_summary["top_k_agreement"], tolerance.min_top_k_agreement, "below"),
                ("matched detections", detections["matched"], tolerance.min_matched, "below"),
                ("max score delta", detections["score_delta_max"], tolerance.max_score_delta, "above"),
                ("mAP drop vs reference detections", pseudo["drop"], tolerance.max_map_drop, "above"),
            ] + ([("COCO mAP drop", coco_summary["drop"], tolerance.max_coco_map_drop, "above")]
                 if coco_summary else []):
                if (worse == "above" and value > limit) or (worse == "below" and value < limit):
                    violations.append(f"{name} {value:.4g} is {worse} the {meta.precision} limit {limit:.4g}")
            reports.append(ArtefactReport(path, detector.backend.name, meta.precision, raw_summary, detections,
                                          pseudo, coco_summary, dict(tolerance.__dict__), violations))
        return {"model": getattr(self.model, "variant", "custom"), "weights": getattr(self.model, "weights_info", {}),
                "images": len(images), "match_threshold": self.match_threshold, "gt_threshold": self.gt_threshold,
                "iou": self.iou, "artefacts": [r.__dict__ | {"passed": r.passed} for r in reports],
                "passed": all(r.passed for r in reports)}

    def close(self) -> None:
        for _, detector in self.detectors:
            detector.close()


def format_report(report: dict) -> str:
    """The printed table of a ParityCheck report."""
    lines = [f"parity of {len(report['artefacts'])} artefact(s) against {report['model']} on {report['images']} "
             f"images (detections: score > {report['match_threshold']}, IoU >= {report['iou']})",
             f"  {'artefact':<34} {'prec':<5} {'max|dlogit|':>11} {'max|dbox|':>10} {'top-k':>6} {'matched':>8} "
             f"{'max dscore':>10} {'mAP vs ref':>10} {'COCO mAP':>15}  result"]
    for a in report["artefacts"]:
        from pathlib import Path

        pseudo = "-" if a["pseudo_map"]["artefact"] is None else f"{a['pseudo_map']['artefact']:.3f}"
        coco = "-" if not a["coco"] else f"{a['coco']['artefact']['mAP']:.3f} ({a['coco']['reference']['mAP']:.3f})"
        lines.append(f"  {Path(a['path']).name[:34]:<34} {a['precision']:<5} {a['raw']['max_abs_logits']:>11.2e} "
                     f"{a['raw']['max_abs_boxes']:>10.2e} {a['raw']['top_k_agreement']:>6.1%} "
                     f"{a['detections']['matched']:>8.1%} {a['detections']['score_delta_max']:>10.4f} {pseudo:>10} "
                     f"{coco:>15}  {'PASS' if a['passed'] else 'FAIL'}")
        for violation in a["violations"]:
            lines.append(f"      - {violation}")
    lines.append("PASSED" if report["passed"] else "FAILED: tolerances exceeded (see above)")
    return "\n".join(lines)
