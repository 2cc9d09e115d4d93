# SPDX-License-Identifier: Apache-2.0
"""detr-parity: the accuracy gate. A PyTorch reference against exported artefacts on the same images.

Prints a table, writes a JSON report, and exits 1 when an artefact exceeds its tolerances (defaults per
precision: FP32 strict, FP16 and INT8 looser; override with --tolerances), so it can gate a CI pipeline.

Examples:
  detr-parity --model deformable-detr --weights ckpt.pth --artifacts model.onnx model_fp16.onnx --images val/
  detr-parity --model deformable-detr-shapes --artifacts m.onnx --images data/val/images \\
              --coco data/val/annotations.json --report parity.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .args import add_model_args, load_model, log, run, write_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detr-parity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--artifacts", nargs="+", required=True, help="ONNX files and/or TensorRT engines")
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    parser.add_argument("--coco", default=None, metavar="ANNOTATIONS.json",
                        help="COCO annotations of the images (file_name relative to --images): adds true mAP")
    parser.add_argument("--tolerances", default=None, metavar="FILE", help="JSON overrides of the tolerances")
    parser.add_argument("--report", default=None, metavar="FILE", help="write the JSON report here")
    parser.add_argument("--limit", type=int, default=None, help="use the first N images")
    parser.add_argument("--match-threshold", type=float, default=0.3,
                        help="reference detections above this score must be found again (default 0.3)")
    parser.add_argument("--gt-threshold", type=float, default=0.5,
                        help="reference detections above this score are the ground truth of 'mAP vs ref' (0.5)")
    runtime = parser.add_argument_group("runtime")
    runtime.add_argument("--device", choices=["cpu", "cuda", "tensorrt"], default="cpu",
                         help="onnxruntime execution provider for ONNX artefacts (default cpu)")
    runtime.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    runtime.add_argument("--plugins", nargs="*", default=None, help="TensorRT plugin libraries for engines")
    return parser


def _images(args) -> tuple[list[str], dict | None, list[int] | None]:
    from ..errors import ConfigError
    from ..runtime.images import find_images

    if args.coco:
        coco = json.loads(Path(args.coco).read_text())
        if len(args.images) != 1 or not Path(args.images[0]).is_dir():
            raise ConfigError("with --coco, --images must be the one folder the annotations' file names refer to")
        entries = coco["images"][:args.limit] if args.limit else coco["images"]
        return [str(Path(args.images[0]) / e["file_name"]) for e in entries], coco, [e["id"] for e in entries]
    paths = [str(p) for p in find_images(args.images)]
    if not paths:
        raise ConfigError(f"no images found in {args.images}")
    return (paths[:args.limit] if args.limit else paths), None, None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..parity import ParityCheck, format_report, load_tolerances

    tolerances = load_tolerances(args.tolerances)  # validate before the slow parts
    images, coco, image_ids = _images(args)
    model = load_model(args)
    options = {"onnxruntime": {"device": args.device, "threads": args.threads}}
    if args.plugins is not None:
        options["tensorrt"] = {"plugin_libraries": args.plugins}
    check = ParityCheck(model, args.artifacts, tolerances, options, args.match_threshold, args.gt_threshold)
    bar = None
    try:
        from tqdm import tqdm

        bar = tqdm(total=len(images), desc="parity", unit="img", file=sys.stderr, disable=len(images) < 2)
    except ImportError:
        pass
    try:
        report = check.run(images, coco, image_ids, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
        check.close()
    print(format_report(report))
    if args.report:
        write_json(args.report, report)
        log(f"report written to {args.report}")
    return 0 if report["passed"] else 1


def entry() -> None:
    sys.exit(run(main))
