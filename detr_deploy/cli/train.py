# SPDX-License-Identifier: Apache-2.0
"""detr-train: train a registered variant from scratch on COCO-format data (CPU-friendly, resumable, seeded).

Writes into -o: last.pt (resume point), train.log (JSON lines), config.json and final.safetensors. Rerunning the
same command resumes from last.pt. Needs scipy (Hungarian matching) and pycocotools (validation mAP):
pip install 'detr-deploy[export,train,eval]'.

Example:
  detr-train --variant deformable-detr-shapes --data data/shapes_train --val-data data/shapes_val -o runs/shapes
"""
from __future__ import annotations

import sys

from .args import add_batch_size, add_output, deprecated_entry, log, make_parser, positive_int, require_output, run


def build_parser():
    parser = make_parser("detr-train", __doc__)
    parser.add_argument("--variant", default="deformable-detr-shapes", help="registered variant to train")
    parser.add_argument("--data", required=True, help="training data: folder with annotations.json + images/")
    parser.add_argument("--val-data", default=None, help="validation data (same layout)")
    add_output(parser, "run folder (checkpoints, log, final weights)", old=("--out",))
    parser.add_argument("--iterations", type=positive_int, default=6000)
    add_batch_size(parser, "training images per step (default 8)", default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--eval-every", type=positive_int, default=1000)
    parser.add_argument("--eval-images", type=positive_int, default=200)
    parser.add_argument("--checkpoint-every", type=positive_int, default=200)
    parser.add_argument("--init-backbone", default=None, metavar="WEIGHTS",
                        help="start the backbone from this weights file's backbone.body.* (e.g. a shipped model)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_output(parser, args)
    from .._optional import require
    from ..files import check_output_dir
    from ..models.registry import resolve_name
    from ..train.trainer import TrainConfig, train

    require("scipy", "Hungarian matching in training")
    resolve_name(args.variant)
    check_output_dir(args.output, "run folder")
    config = TrainConfig(args.variant, args.data, args.output, args.val_data, args.iterations, args.batch_size,
                         args.lr, seed=args.seed, threads=args.threads, eval_every=args.eval_every,
                         eval_images=args.eval_images, checkpoint_every=args.checkpoint_every,
                         init_backbone=args.init_backbone)
    print(train(config, log=log))
    return 0


def deprecated_module_entry(argv: list[str]) -> int:
    """``python -m detr_deploy.train ...`` (the old spelling)."""
    return deprecated_entry("python -m detr_deploy.train", "detr-train", main, argv)


def entry() -> None:
    sys.exit(run(main))
