# SPDX-License-Identifier: Apache-2.0
"""detr-infer: run an exported model (ONNX or TensorRT engine) on images.

Writes detections.json (COCO results format: image_id, category_id, bbox [x, y, w, h], score), images.json
(image_id -> file) and one annotated image per input into --out-dir. Unreadable images are skipped with a
warning; the exit status is then 1 (everything else is still written).

Examples:
  detr-infer model.onnx photos/ --out-dir detections
  detr-infer model.engine a.jpg b.png --threshold 0.3 --batch 4
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .args import log, run, write_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detr-infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", help="model.onnx or model.engine (written by detr-export / detr-build)")
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--out-dir", default="detr_infer_out", help="output folder (default detr_infer_out)")
    parser.add_argument("--threshold", type=float, default=0.5, help="keep detections with score > this (0.5)")
    parser.add_argument("--batch", type=int, default=1,
                        help="images per inference call (default 1); a batch is padded to its largest image, which "
                        "changes Deformable DETR's detections: batch images of one size")
    parser.add_argument("--no-draw", action="store_true", help="do not write annotated images")
    runtime = parser.add_argument_group("runtime")
    runtime.add_argument("--backend", choices=["onnxruntime", "tensorrt"], default=None,
                         help="default: by file suffix")
    runtime.add_argument("--device", choices=["cpu", "cuda", "tensorrt"], default="cpu",
                         help="onnxruntime execution provider (default cpu)")
    runtime.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    runtime.add_argument("--plugins", nargs="*", default=None, help="TensorRT plugin libraries to load")
    return parser


def _image_ids(paths: list[Path]) -> list[int]:
    """COCO-style files (000000039769.jpg) keep their numeric id; otherwise 1..N in order."""
    stems = [p.stem for p in paths]
    if stems and all(s.isdigit() for s in stems) and len(set(stems)) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(paths) + 1))


def _progress(total: int):
    try:
        from tqdm import tqdm

        return tqdm(total=total, unit="img", file=sys.stderr, disable=total < 2)
    except ImportError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..errors import ImageError
    from ..runtime import Detector, draw_detections, find_images, load_image

    paths = find_images(args.images)
    if not paths:
        log(f"error: no images found in {args.images}")
        return 2
    options = {}
    if args.backend == "tensorrt" or Path(args.artifact).suffix in (".engine", ".plan", ".trt"):
        if args.plugins is not None:
            options["plugin_libraries"] = args.plugins
    else:
        options.update(device=args.device, threads=args.threads)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = _image_ids(paths)
    results, failed = [], 0
    bar = _progress(len(paths))
    with Detector(args.artifact, threshold=args.threshold, batch_size=args.batch, backend=args.backend,
                  **options) as detector:
        for start in range(0, len(paths), detector.batch_size):
            chunk = []
            for offset, path in enumerate(paths[start:start + detector.batch_size]):
                try:  # decode once: the array feeds both the detector and the drawing
                    chunk.append((ids[start + offset], path, load_image(str(path), detector.max_pixels)))
                except ImageError as exc:
                    failed += 1
                    log(f"warning: skipped {exc}")
            detections = detector([image for _, _, image in chunk]) if chunk else []
            for (image_id, path, image), det in zip(chunk, detections):
                for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
                    x0, y0, x1, y1 = (float(v) for v in box)
                    results.append({"image_id": image_id, "category_id": int(label),
                                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                                    "score": round(float(score), 5)})
                if not args.no_draw:
                    draw_detections(image, det).save(out_dir / f"{path.stem}_det.jpg", quality=92)
            if bar is not None:
                bar.update(len(paths[start:start + detector.batch_size]))
    if bar is not None:
        bar.close()
    write_json(out_dir / "detections.json", results, indent=None)
    write_json(out_dir / "images.json", {str(i): str(p) for i, p in zip(ids, paths)})
    log(f"{len(paths) - failed}/{len(paths)} images, {len(results)} detections -> {out_dir}/detections.json")
    if failed:
        log(f"{failed} image(s) could not be read (see the warnings above)")
    return 1 if failed else 0


def entry() -> None:
    sys.exit(run(main))
