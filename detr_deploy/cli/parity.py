# SPDX-License-Identifier: Apache-2.0
"""detr-parity: the accuracy gate. A PyTorch reference against exported artifacts on the same images.

Prints a table, writes a JSON report (-o), and exits 1 when an artifact exceeds its tolerances (defaults per
precision: FP32 strict, FP16 and INT8 looser; override with --tolerances), so it can gate a CI pipeline.

Examples:
  detr-parity --model deformable-detr --weights ckpt.pth --artifacts model.onnx model_fp16.onnx --images val/
  detr-parity --model deformable-detr-shapes --artifacts m.onnx --images data/val/images \\
              --coco data/val/annotations.json -o parity.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .._optional import require
from .args import ModelArgs, RuntimeArgs, add_output, log, make_parser, positive_int, probability, run


def build_parser():
    parser = make_parser("detr-parity", __doc__)
    ModelArgs.add(parser)
    parser.add_argument("--artifacts", nargs="+", help="ONNX files and/or TensorRT engines")
    parser.add_argument("--images", nargs="+", help="image files and/or folders")
    parser.add_argument("--coco", default=None, metavar="ANNOTATIONS.json",
                        help="COCO annotations of the images (file_name relative to the --images folder): adds the "
                             "true COCO mAP (needs pycocotools: pip install 'detr-deploy[eval]'); COCO panoptic "
                             "annotations (segments_info per image) add the true PQ of segmentation artifacts")
    parser.add_argument("--panoptic-root", default=None, metavar="DIR",
                        help="folder of the COCO panoptic PNGs (default: the annotations file's path without .json)")
    parser.add_argument("--tolerances", default=None, metavar="FILE", help="JSON overrides of the tolerances")
    add_output(parser, "write the JSON report here", old=("--report",))
    parser.add_argument("--limit", type=positive_int, default=None, help="use the first N images")
    parser.add_argument("--match-threshold", type=probability, default=0.3,
                        help="reference detections above this score must be found again (default 0.3)")
    parser.add_argument("--gt-threshold", type=probability, default=0.5,
                        help="reference detections above this score are the ground truth of 'mAP vs ref' (0.5)")
    RuntimeArgs.add(parser)
    return parser


def images_and_annotations(args) -> tuple[list[str], dict | None, list[int] | None]:
    """The image files (and, with --coco, the annotations and image ids), checked before any work."""
    from ..errors import ConfigError
    from ..runtime.images import find_images

    if not args.coco:
        paths = [str(p) for p in find_images(args.images)]
        return (paths[:args.limit] if args.limit else paths), None, None
    try:
        coco = json.loads(Path(args.coco).read_text())
        entries = coco["images"]
    except FileNotFoundError:
        raise ConfigError(f"{args.coco}: no such file") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{args.coco} is not a COCO annotations file ({type(exc).__name__}: {exc})") from exc
    root = Path(args.images[0])
    if len(args.images) != 1 or not root.is_dir():
        raise ConfigError("with --coco, --images must be the one folder the annotations' file names refer to")
    if not (coco.get("annotations") and "segments_info" in coco["annotations"][0]):
        require("pycocotools", "--coco (true COCO mAP)")
    entries = entries[:args.limit] if args.limit else entries
    paths = [root / e["file_name"] for e in entries]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"{len(missing)} of {len(paths)} images of {args.coco} are not under {root} (e.g. "
                          f"{missing[0]}); --images must be the folder their file_name values are relative to")
    return [str(p) for p in paths], coco, [e["id"] for e in entries]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if ModelArgs.list_models(args):
        return 0
    ModelArgs.require(parser, args)
    if not args.artifacts or not args.images:
        parser.error("--artifacts and --images are required")
    from ..artifact.kinds import artifact_kind
    from ..files import check_output_file, write_json
    from ..parity import ParityCheck, format_report, load_tolerances
    from ..progress import progress

    # inputs and output locations first, the slow model load after
    tolerances = load_tolerances(args.tolerances)
    for path in args.artifacts:
        artifact_kind(path)
    images, coco, image_ids = images_and_annotations(args)
    panoptic_truth = None
    if coco is not None and coco.get("annotations") and "segments_info" in coco["annotations"][0]:
        from ..evaluation import read_coco_panoptic

        require("torchmetrics", "panoptic quality")
        panoptic_truth, _ = read_coco_panoptic(Path(args.coco), Path(args.panoptic_root) if args.panoptic_root
                                               else None, [Path(p).name for p in images])
        coco = None  # the true mAP needs box annotations
    if args.output:
        check_output_file(args.output, "report")
    options = RuntimeArgs.options(args)
    model = ModelArgs.load(args)
    with ParityCheck(model, args.artifacts, tolerances, options, args.match_threshold, args.gt_threshold,
                     backend=args.backend) as check, progress(len(images), "parity") as advance:
        if any(d.metadata.task == "segmentation" for _, d in check.detectors):
            require("torchmetrics", "panoptic quality of segmentation artifacts")
        report = check.run(images, coco, image_ids, progress=advance, panoptic_truth=panoptic_truth)
    print(format_report(report))
    if args.output:
        write_json(args.output, report)
        log(f"report written to {args.output}")
    return 0 if report["passed"] else 1


def entry() -> None:
    sys.exit(run(main))
