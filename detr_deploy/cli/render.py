# SPDX-License-Identifier: Apache-2.0
"""detr-render: render shapes scenes with COCO annotations (what detr-deploy's own trained models learn from).

Writes -o/images/000001.jpg ... (file name = image id) and -o/annotations.json. Deterministic for a seed.
Needs scikit-image's photographs for the backgrounds: pip install 'detr-deploy[shapes]'.

Examples:
  detr-render -o scenes --count 4 --seed 3
  detr-render -o panoptic_scenes --count 100 --seed 3 --panoptic
  detr-render -o data/val --count 200 --seed 2 --size 480x640
"""
from __future__ import annotations

import sys

from .args import add_output, deprecated_entry, make_parser, parse_size, positive_int, require_output, run


def build_parser(prog: str = "detr-render"):
    parser = make_parser(prog, __doc__)
    add_output(parser, "output folder (images/ and annotations.json)", old=("--out",))
    parser.add_argument("--count", type=positive_int, required=True, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=parse_size, default=None, metavar="HxW",
                        help="fixed image size (default: varied)")
    parser.add_argument("--panoptic", action="store_true",
                        help="add stuff regions (sky, ground, wall) and write COCO panoptic annotations "
                             "(panoptic.json + panoptic/*.png)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_output(parser, args)
    from ..files import check_output_dir
    from ..zoo.shapes import RenderConfig, render_dataset

    check_output_dir(args.output)
    print(render_dataset(args.output, args.count, args.seed, RenderConfig(fixed_size=args.size,
                                                                          stuff=args.panoptic)))
    return 0


def deprecated_module_entry(argv: list[str]) -> int:
    """``python -m detr_deploy.zoo.shapes render ...`` (the old spelling)."""
    argv = argv[1:] if argv[:1] == ["render"] else argv
    return deprecated_entry("python -m detr_deploy.zoo.shapes render", "detr-render", main, argv)


def entry() -> None:
    sys.exit(run(main))
