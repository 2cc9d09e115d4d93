# SPDX-License-Identifier: Apache-2.0
"""The accuracy gate: a PyTorch reference against exported artifacts on the same images, with numbers."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .artifact.settings import reference_preprocess
from .compare import DEFAULT_TOLERANCES, TOLERANCE_FIELDS, Tolerance, compare_outputs, detection_map, match_detections
from .errors import ConfigError
from .runtime.backends import BackendOptions
from .runtime.coco import coco_results
from .runtime.detector import Detector
from .runtime.images import load_image
from .runtime.postprocess import postprocess_detections
from .runtime.preprocess import normalization_table, preprocess_images


@dataclass
class ToleranceTable:
    """Per-precision defaults plus overrides by precision or artifact file name."""

    overrides: dict[str, dict[str, float]] = field(default_factory=dict)

    def for_artifact(self, path: str, precision: str) -> Tolerance:
        fields = asdict(DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"]))
        fields.update(self.overrides.get(precision, {}))
        fields.update(self.overrides.get(Path(path).name, {}))
        return Tolerance(**fields)


def load_tolerances(path: str | None) -> ToleranceTable:
    """Read a JSON file ``{"fp16": {"min_matched": 0.95}, "model.onnx": {"max_abs_logits": 0.01}}``.

    Keys are precisions (fp32, fp16, int8) or artifact file names; fields override the precision's defaults. Unknown
    fields and out-of-range values are errors that name the problem.
    """
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
class ArtifactReport:
    """Everything measured for one artifact (see ``ParityCheck.run``)."""

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


def check_model_fits(model, metadata, path: str) -> None:
    """Refuse, before any image runs, a reference model whose outputs cannot be compared with the artifact's."""
    config = model.config
    mine = (config.family, config.num_queries, config.num_classes)
    theirs = (metadata.family, metadata.num_queries, metadata.num_classes)
    if mine != theirs:
        raise ConfigError(
            f"the model does not fit {path}: model {config.family} with {config.num_queries} queries and "
            f"{config.num_classes} classes, artifact {metadata.family} with {metadata.num_queries} queries and "
            f"{metadata.num_classes} classes (variant {metadata.variant}); pass the --model the artifact was "
            "exported from")


class ParityCheck:
    """A PyTorch reference model against exported artifacts, on the same images.

    For each artifact, two levels:
    - raw: the artifact's own preprocessed batch through both the model and the artifact (conversion error only):
      max/mean abs difference of logits and boxes, top-k agreement;
    - end to end: the reference pipeline (reference preprocessing + model + reference postprocessing) against the
      artifact's Detector (its recorded pre/post-processing): reference detections above ``match_threshold``
      found again at IoU >= ``iou`` with the same label, score deltas, and COCO-style mAP of the artifact with the
      reference's detections above ``gt_threshold`` as ground truth; with COCO annotations, the true mAP of both.

    Args:
        model: the PyTorch reference (``create_model``), eval mode.
        artifacts: ONNX files and/or engines.
        options: how the artifacts run (one :class:`BackendOptions` for all; engines use its device and plugins).
        backend: force a backend (None: by artifact kind).
    """

    def __init__(self, model, artifacts: list[str], tolerances: ToleranceTable | None = None,
                 options: BackendOptions | None = None, match_threshold: float = 0.3, gt_threshold: float = 0.5,
                 iou: float = 0.9, backend: str | None = None):
        self.model = model.eval()
        self.tolerances = tolerances or ToleranceTable()
        self.match_threshold, self.gt_threshold, self.iou = match_threshold, gt_threshold, iou
        self.detectors: list[tuple[str, Detector]] = []
        try:
            for path in artifacts:
                detector = Detector(path, threshold=0.0, backend=backend, options=options)
                self.detectors.append((str(path), detector))
                check_model_fits(model, detector.metadata, str(path))
        except BaseException:
            self.close()
            raise

    def run(self, images: list[str], coco: dict | None = None, image_ids: list[int] | None = None,
            progress=None) -> dict:
        """Measure every artifact on ``images``; returns the report dict (see README, "detr-parity")."""
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
                artifact_out = detector.infer(batch)
                reference_out = self.model.predict_numpy(batch.pixel_values, batch.pixel_mask)
                state[path]["raw"].append(compare_outputs(
                    str(source), {k: v[:1] for k, v in reference_out.items()},
                    {k: v[:1] for k, v in artifact_out.items()}, meta.postprocess))
                state[path]["art"].append(detector.postprocess(artifact_out, batch, 1, 0.0)[0])
                pre = reference_preprocess(config, meta.preprocess)
                key = (path_index, repr(pre), repr(meta.postprocess))
                if key not in reference_cache:
                    ref_batch = preprocess_images([image], pre, pre.input_size, normalization_table(pre))
                    out = self.model.predict_numpy(ref_batch.pixel_values, ref_batch.pixel_mask)
                    reference_cache[key] = postprocess_detections(out["logits"], out["pred_boxes"], meta.postprocess,
                                                                  ref_batch.original_sizes, 0.0, config.id2label)[0]
                state[path]["ref"].append(reference_cache[key])
            if progress is not None:
                progress(1)
        reports = [self._report(path, detector, state[path], image_ids, coco) for path, detector in self.detectors]
        return {"model": self.model.variant, "weights": self.model.weights_info, "images": len(images),
                "match_threshold": self.match_threshold, "gt_threshold": self.gt_threshold, "iou": self.iou,
                "artifacts": [asdict(r) | {"passed": r.passed} for r in reports],
                "passed": all(r.passed for r in reports)}

    def _report(self, path: str, detector: Detector, state: dict, image_ids: list[int], coco: dict | None):
        meta = detector.metadata
        tolerance = self.tolerances.for_artifact(path, meta.precision)
        raw = state["raw"]
        raw_summary = {"max_abs_logits": max(d.max_abs_logits for d in raw),
                       "mean_abs_logits": float(np.mean([d.mean_abs_logits for d in raw])),
                       "max_abs_boxes": max(d.max_abs_boxes for d in raw),
                       "mean_abs_boxes": float(np.mean([d.mean_abs_boxes for d in raw])),
                       "top_k_agreement": float(np.mean([d.top_k_agreement for d in raw]))}
        matches = []
        for ref, art in zip(state["ref"], state["art"]):
            keep = np.asarray(ref["scores"]) > self.match_threshold
            matches.append(match_detections({k: np.asarray(ref[k])[keep] for k in ("boxes", "scores", "labels")},
                                            art, self.iou))
        deltas = [d for m in matches for d in m.score_deltas]
        total = sum(m.reference for m in matches)
        detections = {"reference": total, "matched": (sum(m.matched for m in matches) / total) if total else 1.0,
                      "score_delta_mean": float(np.mean(deltas)) if deltas else 0.0,
                      "score_delta_max": float(np.max(deltas)) if deltas else 0.0,
                      "box_l1_mean": float(np.mean([v for m in matches for v in m.box_l1])) if deltas else 0.0}
        # the reference's confident detections as ground truth, in image-id order (the COCO evaluation's order)
        order = np.argsort(image_ids, kind="stable")
        ground_truth = []
        for i in order:
            ref = state["ref"][i]
            keep = np.asarray(ref["scores"]) > self.gt_threshold
            ground_truth.append({k: np.asarray(ref[k])[keep] for k in ("boxes", "labels")})
        ref_map = detection_map(ground_truth, [state["ref"][i] for i in order])
        art_map = detection_map(ground_truth, [state["art"][i] for i in order])
        pseudo = {"gt_detections": int(sum(len(g["labels"]) for g in ground_truth)), "reference": ref_map,
                  "artifact": art_map, "drop": (ref_map - art_map) if ref_map is not None else 0.0}
        coco_summary = None
        if coco is not None:
            from .evaluation import coco_map

            art_results = [r for i, d in zip(image_ids, state["art"]) for r in coco_results(i, d)]
            ref_results = [r for i, d in zip(image_ids, state["ref"]) for r in coco_results(i, d)]
            ref_true, art_true = coco_map(coco, ref_results, image_ids), coco_map(coco, art_results, image_ids)
            coco_summary = {"reference": ref_true, "artifact": art_true, "drop": ref_true["mAP"] - art_true["mAP"]}
        checks = [("max |dlogit|", raw_summary["max_abs_logits"], tolerance.max_abs_logits, "above"),
                  ("max |dbox|", raw_summary["max_abs_boxes"], tolerance.max_abs_boxes, "above"),
                  ("top-k agreement", raw_summary["top_k_agreement"], tolerance.min_top_k_agreement, "below"),
                  ("matched detections", detections["matched"], tolerance.min_matched, "below"),
                  ("max score delta", detections["score_delta_max"], tolerance.max_score_delta, "above"),
                  ("mAP drop vs reference detections", pseudo["drop"], tolerance.max_map_drop, "above")]
        if coco_summary:
            checks.append(("COCO mAP drop", coco_summary["drop"], tolerance.max_coco_map_drop, "above"))
        violations = [f"{name} {value:.4g} is {worse} the {meta.precision} limit {limit:.4g}"
                      for name, value, limit, worse in checks
                      if (worse == "above" and value > limit) or (worse == "below" and value < limit)]
        return ArtifactReport(path, detector.backend.name, meta.precision, raw_summary, detections, pseudo,
                              coco_summary, asdict(tolerance), violations)

    def close(self) -> None:
        for _, detector in self.detectors:
            detector.close()

    def __enter__(self) -> ParityCheck:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def format_report(report: dict) -> str:
    """The printed table of a ParityCheck report."""
    lines = [f"parity of {len(report['artifacts'])} artifact(s) against {report['model']} on {report['images']} "
             f"images (detections: score > {report['match_threshold']}, IoU >= {report['iou']})",
             f"  {'artifact':<34} {'prec':<5} {'max|dlogit|':>11} {'max|dbox|':>10} {'top-k':>6} {'matched':>8} "
             f"{'max dscore':>10} {'mAP vs ref':>10} {'COCO mAP':>15}  result"]
    for a in report["artifacts"]:
        pseudo = "-" if a["pseudo_map"]["artifact"] is None else f"{a['pseudo_map']['artifact']:.3f}"
        coco = "-" if not a["coco"] else f"{a['coco']['artifact']['mAP']:.3f} ({a['coco']['reference']['mAP']:.3f})"
        lines.append(f"  {Path(a['path']).name[:34]:<34} {a['precision']:<5} {a['raw']['max_abs_logits']:>11.2e} "
                     f"{a['raw']['max_abs_boxes']:>10.2e} {a['raw']['top_k_agreement']:>6.1%} "
                     f"{a['detections']['matched']:>8.1%} {a['detections']['score_delta_max']:>10.4f} {pseudo:>10} "
                     f"{coco:>15}  {'PASS' if a['passed'] else 'FAIL'}")
        for violation in a["violations"]:
            lines.append(f"      - {violation}")
    lines.append("PASSED" if report["passed"] else "FAILED: tolerances exceeded (see above)")
    return "\n".join(lines)
