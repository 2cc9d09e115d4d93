# SPDX-License-Identifier: Apache-2.0
"""detr-infer: run an exported model (ONNX or TensorRT engine) on images.

Writes into the -o folder: detections.json (COCO results format: image_id, category_id, bbox [x, y, w, h], score),
images.json (image_id -> file) and one annotated image per input. An image that cannot be read is skipped with a
warning; everything else is still written, and the exit status is then 2 (bad input).

Segmentation artifacts (DETR panoptic): panoptic/<name>.png (COCO panoptic id-to-RGB encoding) and panoptic.json
(COCO panoptic predictions: segments_info with COCO category ids), <name>_seg.jpg overlays, and with
--instance-masks instances.json (COCO results with RLE masks). --task detection gives boxes instead.

With --triton the images go to a Triton server instead (a repository written by detr-triton, served by
detr-serve or any tritonserver): no artifact is given, the outputs are a local run's (detections, or for a
segmentation ensemble the panoptic/instance files, as its --task was written). The protocol is
--triton-protocol, else the URL's scheme (http://, https://, grpc://, grpcs://), else HTTP.

Examples:
  detr-infer model.onnx photos/ -o detections
  detr-infer model.engine a.jpg b.png --threshold 0.3 --batch-size 4
  detr-infer --triton localhost:8000 --triton-model shapes photos/ -o detections
  detr-infer --triton grpc://localhost:8001 --triton-model shapes a.jpg --batch-size 4
"""
from __future__ import annotations

import sys
from pathlib import Path

from .._optional import require
from ..errors import ConfigError
from .args import RuntimeArgs, SegmentationArgs, add_batch_size, add_output, log, make_parser, probability, run


def build_parser():
    parser = make_parser("detr-infer", __doc__)
    parser.usage = "detr-infer [options] ARTIFACT IMAGES...  |  detr-infer --triton URL [options] IMAGES..."
    parser.add_argument("inputs", nargs="+", metavar="[ARTIFACT] IMAGES",
                        help="model.onnx or model.engine (written by detr-export / detr-build; not with --triton), "
                             "then image files and/or folders (searched recursively)")
    add_output(parser, "output folder (default detr_infer_out)", default="detr_infer_out", old=("--out-dir",))
    parser.add_argument("--threshold", type=probability, default=0.5,
                        help="keep detections with score > this, in [0, 1] (default 0.5)")
    add_batch_size(parser, "images per inference call (default 1); a batch is padded to its largest image, which "
                           "changes Deformable DETR's detections: batch images of one size")
    parser.add_argument("--no-draw", action="store_true", help="do not write annotated images")
    seg = SegmentationArgs.add(parser)
    seg.add_argument("--instance-masks", action="store_true",
                     help="also write instances.json: COCO results with one RLE mask per thing segment")
    RuntimeArgs.add(parser)
    triton = parser.add_argument_group("Triton server (instead of a local artifact)")
    triton.add_argument("--triton", default=None, metavar="URL",
                        help="HOST:PORT of a Triton server, optionally with a scheme (e.g. localhost:8000, "
                             "grpc://localhost:8001)")
    triton.add_argument("--triton-model", default="detr", metavar="NAME",
                        help="the ensemble's name (detr-triton --name; default detr)")
    triton.add_argument("--triton-protocol", choices=["http", "grpc"], default=None,
                        help="default: the URL's scheme, else http")
    triton.add_argument("--triton-timeout", type=float, default=60.0, metavar="S",
                        help="seconds for connecting and for each request (default 60)")
    return parser


def split_inputs(parser, args) -> None:
    """``inputs`` -> ``args.artifact`` (None with --triton) and ``args.images``."""
    if args.triton:
        if any(v is not None for v in (args.backend, args.device, args.threads, args.plugins)):
            parser.error("--backend, --device, --threads and --plugins are for local artifacts; the server decides "
                         "how its model runs (drop them with --triton)")
        if args.task is not None or args.mask_threshold != 0.5 or args.overlap_threshold != 0.8:
            parser.error("--task, --mask-threshold and --overlap-threshold are chosen when the repository is written "
                         "(detr-triton --task ...); drop them with --triton")
        args.artifact, args.images = None, list(args.inputs)
        return
    if len(args.inputs) < 2:
        parser.error("give an artifact and at least one image (or --triton URL and images)")
    args.artifact, args.images = args.inputs[0], list(args.inputs[1:])


def image_ids(paths: list[Path]) -> list[int]:
    """COCO-style files (000000039769.jpg) keep their numeric id; otherwise 1..N in order."""
    stems = [p.stem for p in paths]
    if stems and all(s.isdigit() for s in stems) and len(set(stems)) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(paths) + 1))


def write_segments(out_dir: Path, image_id: int, path: Path, image, result: dict, detector, args,
                   instances: list) -> dict:
    """One image's segmentation outputs (PNG, overlay, RLE instances); returns its COCO panoptic annotation."""
    from ..files import atomic_output
    from ..runtime.coco import coco_panoptic_annotation, coco_rle
    from ..runtime.drawing import draw_segments
    from ..runtime.segmentation import id_to_rgb

    Image = require("PIL.Image", "writing panoptic PNGs")
    png = f"{path.stem}.png"
    (out_dir / "panoptic").mkdir(exist_ok=True)
    with atomic_output(out_dir / "panoptic" / png) as tmp:
        Image.fromarray(id_to_rgb(result["segmentation"])).save(tmp, format="PNG")
    if not args.no_draw:
        if image is None:  # through Triton: decoded here only for the overlay
            from ..runtime import load_image

            image = load_image(str(path), detector.max_pixels)
        with atomic_output(out_dir / f"{path.stem}_seg.jpg") as tmp:
            draw_segments(image, result).save(tmp, format="JPEG", quality=92)
    if args.instance_masks:
        for entry in result["segments_info"]:
            if entry["label_id"] not in detector.stuff_ids:
                instances.append({"image_id": image_id, "category_id": entry["label_id"], "score": entry["score"],
                                  "segmentation": coco_rle(result["segmentation"] == entry["id"])})
    return coco_panoptic_annotation(image_id, png, result["segmentation"], result["segments_info"])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    split_inputs(parser, args)
    from ..errors import ImageError
    from ..files import atomic_output, check_output_dir, write_json
    from ..progress import progress
    from ..runtime import Detector, draw_detections, find_images, load_image
    from ..runtime.coco import coco_results

    paths = find_images(args.images)
    out_dir = check_output_dir(args.output)
    ids = image_ids(paths)
    results, failed, panoptic, instances = [], [], [], []
    if args.triton:  # the server decodes the files' bytes; they are decoded here only for the drawings
        from ..serving.client import TritonDetector

        runner = TritonDetector(args.triton, args.triton_model, protocol=args.triton_protocol,
                                threshold=args.threshold, batch_size=args.batch_size, timeout=args.triton_timeout)
    else:
        runner = Detector(args.artifact, threshold=args.threshold, batch_size=args.batch_size, backend=args.backend,
                          options=RuntimeArgs.options(args), task=args.task, mask_threshold=args.mask_threshold,
                          overlap_mask_area_threshold=args.overlap_threshold)
    with runner as detector, progress(len(paths), "detect") as advance:
        segments = detector.task != "detection"
        if args.instance_masks and not segments:
            raise ConfigError("--instance-masks needs a segmentation artifact (and --task panoptic or instance)")
        out_dir.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(paths), detector.batch_size):
            chunk = []
            for offset, path in enumerate(paths[start:start + detector.batch_size]):
                if args.triton:
                    chunk.append((ids[start + offset], path, None))
                    continue
                try:  # decode once: the array feeds both the detector and the drawing
                    chunk.append((ids[start + offset], path, load_image(str(path), detector.max_pixels)))
                except ImageError as exc:
                    failed.append(str(path))
                    log(f"warning: skipped {exc}")
            detections = detector([str(p) if img is None else img for _, p, img in chunk]) if chunk else []
            for (image_id, path, image), det in zip(chunk, detections):
                if "error" in det:  # the server (or the client) could not read it
                    failed.append(str(path))
                    log(f"warning: skipped {det['error']}")
                    continue
                if segments:
                    panoptic.append(write_segments(out_dir, image_id, path, image, det, detector, args,
                                                   instances))
                    continue
                results += coco_results(image_id, det, decimals=2)
                if image is None and not args.no_draw:
                    image = load_image(str(path), detector.max_pixels)
                if not args.no_draw:
                    with atomic_output(out_dir / f"{path.stem}_det.jpg") as tmp:
                        draw_detections(image, det).save(tmp, format="JPEG", quality=92)
            advance(len(paths[start:start + detector.batch_size]))
    write_json(out_dir / "images.json", {str(i): str(p) for i, p in zip(ids, paths)})
    if segments:
        categories = [{"id": i, "name": name, "isthing": int(i not in detector.stuff_ids)}
                      for i, name in detector.id2label.items() if name != "N/A"]
        write_json(out_dir / "panoptic.json", {"annotations": panoptic, "categories": categories}, indent=None)
        if args.instance_masks:
            write_json(out_dir / "instances.json", instances, indent=None)
        count = sum(len(a["segments_info"]) for a in panoptic)
        log(f"{len(paths) - len(failed)}/{len(paths)} images, {count} segments -> {out_dir}/panoptic.json")
    else:
        write_json(out_dir / "detections.json", results, indent=None)
        log(f"{len(paths) - len(failed)}/{len(paths)} images, {len(results)} detections -> "
            f"{out_dir}/detections.json")
    if failed:
        log(f"error: {len(failed)} image(s) could not be read (warnings above); the others were written")
        return 2
    return 0


def entry() -> None:
    sys.exit(run(main))
