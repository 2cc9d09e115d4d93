# SPDX-License-Identifier: Apache-2.0
"""detr-infer: run an exported model (ONNX or TensorRT engine) on images.

Writes into the -o folder: detections.json (COCO results format: image_id, category_id, bbox [x, y, w, h], score),
images.json (image_id -> file) and one annotated image per input. An image that cannot be read is skipped with a
warning; everything else is still written, and the exit status is then 2 (bad input).

Examples:
  detr-infer model.onnx photos/ -o detections
  detr-infer model.engine a.jpg b.png --threshold 0.3 --batch-size 4
"""
from __future__ import annotations

import sys
from pathlib import Path

from .args import RuntimeArgs, add_batch_size, add_output, log, make_parser, probability, run


def build_parser():
    parser = make_parser("detr-infer", __doc__)
    parser.add_argument("artifact", help="model.onnx or model.engine (written by detr-export / detr-build)")
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    add_output(parser, "output folder (default detr_infer_out)", default="detr_infer_out", old=("--out-dir",))
    parser.add_argument("--threshold", type=probability, default=0.5,
                        help="keep detections with score > this, in [0, 1] (default 0.5)")
    add_batch_size(parser, "images per inference call (default 1); a batch is padded to its largest image, which "
                           "changes Deformable DETR's detections: batch images of one size")
    parser.add_argument("--no-draw", action="store_true", help="do not write annotated images")
    RuntimeArgs.add(parser)
    return parser


def image_ids(paths: list[Path]) -> list[int]:
    """COCO-style files (000000039769.jpg) keep their numeric id; otherwise 1..N in order."""
    stems = [p.stem for p in paths]
    if stems and all(s.isdigit() for s in stems) and len(set(stems)) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(paths) + 1))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..errors import ImageError
    from ..files import atomic_output, check_output_dir, write_json
    from ..progress import progress
    from ..runtime import Detector, draw_detections, find_images, load_image
    from ..runtime.coco import coco_results

    paths = find_images(args.images)
    out_dir = check_output_dir(args.output)
    options = RuntimeArgs.options(args)
    ids = image_ids(paths)
    results, failed = [], []
    with Detector(args.artifact, threshold=args.threshold, batch_size=args.batch_size, backend=args.backend,
                  options=options) as detector, progress(len(paths), "detect") as advance:
        out_dir.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(paths), detector.batch_size):
            chunk = []
            for offset, path in enumerate(paths[start:start + detector.batch_size]):
                try:  # decode once: the array feeds both the detector and the drawing
                    chunk.append((ids[start + offset], path, load_image(str(path), detector.max_pixels)))
                except ImageError as exc:
                    failed.append(str(path))
                    log(f"warning: skipped {exc}")
            detections = detector([image for _, _, image in chunk]) if chunk else []
            for (image_id, path, image), det in zip(chunk, detections):
                results += coco_results(image_id, det, decimals=2)
                if not args.no_draw:
                    with atomic_output(out_dir / f"{path.stem}_det.jpg") as tmp:
                        draw_detections(image, det).save(tmp, format="JPEG", quality=92)
            advance(len(paths[start:start + detector.batch_size]))
    write_json(out_dir / "detections.json", results, indent=None)
    write_json(out_dir / "images.json", {str(i): str(p) for i, p in zip(ids, paths)})
    log(f"{len(paths) - len(failed)}/{len(paths)} images, {len(results)} detections -> {out_dir}/detections.json")
    if failed:
        log(f"error: {len(failed)} image(s) could not be read (warnings above); the others were written")
        return 2
    return 0


def entry() -> None:
    sys.exit(run(main))
