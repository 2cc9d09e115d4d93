# SPDX-License-Identifier: Apache-2.0
"""The accuracy gate: a PyTorch reference against exported artifacts on the same images, with numbers."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..artifact.settings import reference_preprocess
from ..compare import compare_outputs, detection_map, match_detections, panoptic_agreement
from ..errors import ConfigError
from ..runtime.backends import BackendOptions
from ..runtime.coco import coco_results
from ..runtime.detector import Detector
from ..runtime.images import load_image
from ..runtime.postprocess import postprocess_detections
from ..runtime.preprocess import normalization_table, preprocess_images
from ..runtime.segmentation import segment_image
from .tolerances import ToleranceTable


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
    segmentation: dict | None = None

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
      max/mean abs difference of logits and boxes (and mask logits), top-k agreement. An artifact with
      pre-processing in its graph is fed the image, the model what that graph computes from it (run alone in
      onnxruntime), and ``preprocess_vs_host`` records how those pixel values compare with the host's;
    - end to end: the reference pipeline (reference preprocessing + model + reference postprocessing) against the
      artifact's Detector (its recorded pre/post-processing): reference detections above ``match_threshold``
      found again at IoU >= ``iou`` with the same label, score deltas, and COCO-style mAP of the artifact with the
      reference's detections above ``gt_threshold`` as ground truth; with COCO annotations, the true mAP of both.
      Segmentation artifacts add the panoptic maps (``segment_thresholds``: score, mask, overlap): pixel agreement,
      matched-segment IoU and PQ / SQ / RQ with the reference's maps as ground truth; with COCO panoptic
      annotations (``panoptic_truth``), the true PQ of both.

    Args:
        model: the PyTorch reference (``create_model``), eval mode.
        artifacts: ONNX files and/or engines.
        options: how the artifacts run (one :class:`BackendOptions` for all; engines use its device and plugins).
        backend: force a backend (None: by artifact kind).
    """

    def __init__(self, model, artifacts: list[str], tolerances: ToleranceTable | None = None,
                 options: BackendOptions | None = None, match_threshold: float = 0.3, gt_threshold: float = 0.5,
                 iou: float = 0.9, backend: str | None = None,
                 segment_thresholds: tuple[float, float, float] = (0.5, 0.5, 0.8)):
        self.model = model.eval()
        self.tolerances = tolerances or ToleranceTable()
        self.match_threshold, self.gt_threshold, self.iou = match_threshold, gt_threshold, iou
        self.segment_thresholds = segment_thresholds
        self.detectors: list[tuple[str, Detector]] = []
        self._fronts: dict = {}  # in-graph pre-processing run alone, per artifact
        try:
            for path in artifacts:
                detector = Detector(path, threshold=segment_thresholds[0], backend=backend, options=options,
                                    mask_threshold=segment_thresholds[1],
                                    overlap_mask_area_threshold=segment_thresholds[2])
                self.detectors.append((str(path), detector))
                check_model_fits(model, detector.metadata, str(path))
        except BaseException:
            self.close()
            raise

    def run(self, images: list[str], coco: dict | None = None, image_ids: list[int] | None = None,
            progress=None, panoptic_truth: list[dict] | None = None) -> dict:
        """Measure every artifact on ``images``; returns the report dict (see README, "detr-parity").

        ``coco``: COCO detection annotations of the images (true mAP); ``panoptic_truth``: per image a panoptic
        result-like dict (``segmentation``, ``segments_info`` with ``label_id``) for the true PQ.
        """
        image_ids = image_ids or list(range(1, len(images) + 1))
        state = {path: {"raw": [], "ref": [], "art": [], "ref_seg": [], "art_seg": []} for path, _ in self.detectors}
        reference_cache: dict = {}
        for path_index, source in enumerate(images):
            image = load_image(source)
            for path, detector in self.detectors:
                meta = detector.metadata
                batch = detector.preprocess([image])
                artifact_out = detector.infer(batch)
                reference_out = self.model.predict_numpy(*self._model_inputs(path, detector, batch, image, state))
                state[path]["raw"].append(compare_outputs(
                    str(source), {k: v[:1] for k, v in reference_out.items()},
                    {k: v[:1] for k, v in artifact_out.items()}, meta.postprocess))
                state[path]["art"].append(self._detections(artifact_out, meta, batch))
                if meta.task == "segmentation":
                    state[path]["art_seg"].append(detector.postprocess(artifact_out, batch, 1, detector.threshold)[0])
                pre = reference_preprocess(self.model.config, meta.preprocess)
                key = (path_index, repr(pre), repr(meta.postprocess))
                if key not in reference_cache:
                    ref_batch = preprocess_images([image], pre, pre.input_size, normalization_table(pre))
                    out = self.model.predict_numpy(ref_batch.pixel_values, ref_batch.pixel_mask)
                    segments = None
                    if meta.task == "segmentation":
                        segments = segment_image(out, 0, ref_batch.resized_sizes[0], ref_batch.original_sizes[0],
                                                 "panoptic", *self.segment_thresholds, meta.stuff_ids,
                                                 self.model.config.id2label)
                    reference_cache[key] = (self._detections(out, meta, ref_batch), segments)
                detections, segments = reference_cache[key]
                state[path]["ref"].append(detections)
                if segments is not None:
                    state[path]["ref_seg"].append(segments)
            if progress is not None:
                progress(1)
        reports = [self._report(path, detector, state[path], image_ids, coco, panoptic_truth)
                   for path, detector in self.detectors]
        return {"model": self.model.variant, "weights": self.model.weights_info, "images": len(images),
                "match_threshold": self.match_threshold, "gt_threshold": self.gt_threshold, "iou": self.iou,
                "artifacts": [asdict(r) | {"passed": r.passed} for r in reports],
                "passed": all(r.passed for r in reports)}

    def _detections(self, outputs: dict, meta, batch) -> dict:
        """Every detection of the first image (threshold 0), as the reference post-processing gives them."""
        return postprocess_detections(outputs["logits"][:1], outputs["pred_boxes"][:1], meta.postprocess,
                                      batch.original_sizes[:1], 0.0, self.model.config.id2label)[0]

    def _segmentation(self, meta, state: dict, panoptic_truth: list[dict] | None) -> dict:
        from ..evaluation import panoptic_quality

        agreements = [panoptic_agreement(r, a) for r, a in zip(state["ref_seg"], state["art_seg"])]
        stuffs = set(meta.stuff_ids)
        things = set(meta.id2label) - stuffs
        summary = {"pixel_agreement": float(np.mean([a["pixel_agreement"] for a in agreements])),
                   "matched_iou": float(np.mean([a["matched_iou"] for a in agreements])),
                   "reference_segments": sum(a["reference_segments"] for a in agreements),
                   "artifact_segments": sum(a["artifact_segments"] for a in agreements),
                   "pq_vs_reference": panoptic_quality(state["ref_seg"], state["art_seg"], things, stuffs),
                   "coco_panoptic": None}
        if panoptic_truth is not None:
            ref, art = (panoptic_quality(panoptic_truth, state[k], things, stuffs) for k in ("ref_seg", "art_seg"))
            summary["coco_panoptic"] = {"reference": ref, "artifact": art, "drop": ref["pq"] - art["pq"]}
        return summary

    def _model_inputs(self, path: str, detector: Detector, batch, image, state: dict):
        """The pixel tensors the artifact's model part sees: the batch's; with pre-processing in the graph, what its
        graph computes (that pre-processing alone in onnxruntime), whose agreement with the host's is recorded."""
        if batch.image is None:
            return batch.pixel_values, batch.pixel_mask
        from ..runtime.preprocess_graph import GraphPreprocess

        if path not in self._fronts:
            self._fronts[path] = GraphPreprocess(detector.metadata.preprocess)
        pixels, mask = self._fronts[path](batch.image)
        meta = detector.metadata
        host = preprocess_images([image], meta.preprocess, meta.static_input_size, normalization_table(meta.preprocess))
        same = host.pixel_values.shape[1:] == pixels.shape[1:]
        state[path].setdefault("pre", []).append(
            float(np.abs(host.pixel_values[:1] - pixels[:1]).max()) if same else None)
        return pixels, mask

    def _report(self, path: str, detector: Detector, state: dict, image_ids: list[int], coco: dict | None,
                panoptic_truth: list[dict] | None):
        meta = detector.metadata
        tolerance = self.tolerances.for_artifact(path, meta.precision)
        raw = state["raw"]
        raw_summary = {"max_abs_logits": max(d.max_abs_logits for d in raw),
                       "mean_abs_logits": float(np.mean([d.mean_abs_logits for d in raw])),
                       "max_abs_boxes": max(d.max_abs_boxes for d in raw),
                       "mean_abs_boxes": float(np.mean([d.mean_abs_boxes for d in raw])),
                       "top_k_agreement": float(np.mean([d.top_k_agreement for d in raw]))}
        if "pre" in state:  # in-graph pre-processing: its pixel values against the host's on the same images
            same = [d for d in state["pre"] if d is not None]
            raw_summary["preprocess_vs_host"] = {"max_abs_pixel": max(same) if same else None,
                                                 "size_differences": len(state["pre"]) - len(same)}
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
            from ..evaluation import coco_map

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
        segmentation = None
        if meta.task == "segmentation":
            segmentation = self._segmentation(meta, state, panoptic_truth)
            raw_summary["max_abs_masks"] = max(d.max_abs_masks for d in raw)
            checks += [("max |dmask|", raw_summary["max_abs_masks"], tolerance.max_abs_masks, "above"),
                       ("panoptic pixel agreement", segmentation["pixel_agreement"], tolerance.min_pixel_agreement,
                        "below")]
            if segmentation["pq_vs_reference"] is not None:  # None: the reference found no segment
                checks.append(("PQ vs reference", segmentation["pq_vs_reference"]["pq"],
                               tolerance.min_pq_vs_reference, "below"))
            if segmentation["coco_panoptic"]:
                checks.append(("COCO PQ drop", segmentation["coco_panoptic"]["drop"], tolerance.max_pq_drop,
                               "above"))
        violations = [f"{name} {value:.4g} is {worse} the {meta.precision} limit {limit:.4g}"
                      for name, value, limit, worse in checks
                      if not (value <= limit if worse == "above" else value >= limit)]  # NaN fails
        return ArtifactReport(path, detector.backend.name, meta.precision, raw_summary, detections, pseudo,
                              coco_summary, asdict(tolerance), violations, segmentation)

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
        if a.get("segmentation"):
            seg = a["segmentation"]
            pq = seg["pq_vs_reference"]
            quality = "-" if pq is None else f"{pq['pq']:.3f} (SQ {pq['sq']:.3f}, RQ {pq['rq']:.3f})"
            line = (f"      panoptic: pixel agreement {seg['pixel_agreement']:.2%}, matched-segment IoU "
                    f"{seg['matched_iou']:.3f} ({seg['artifact_segments']} / {seg['reference_segments']} segments), "
                    f"PQ vs reference {quality}")
            if seg["coco_panoptic"]:
                line += (f"; COCO PQ {seg['coco_panoptic']['artifact']['pq']:.3f} "
                         f"(reference {seg['coco_panoptic']['reference']['pq']:.3f})")
            lines.append(line)
        for violation in a["violations"]:
            lines.append(f"      - {violation}")
    lines.append("PASSED" if report["passed"] else "FAILED: tolerances exceeded (see above)")
    return "\n".join(lines)
