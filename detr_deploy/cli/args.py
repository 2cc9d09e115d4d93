# SPDX-License-Identifier: Apache-2.0
"""Argument groups shared by the commands, value parsers, and the error-handling entry wrapper."""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import DetrDeployError


def parse_size(text: str) -> tuple[int, int]:
    """"800x1066" -> (800, 1066)."""
    try:
        h, w = (int(v) for v in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 800x1066, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return h, w


def parse_override(text: str) -> tuple[str, object]:
    """"num_classes=20" -> ("num_classes", 20); values are Python literals, else strings."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


def add_model_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", required=required,
                       help="variant name (see --list-models), or a checkpoint: official .pth, Hugging Face folder "
                            "or file, Hub id")
    group.add_argument("--weights", default=None,
                       help="for a variant name: auto (published weights, else random with a warning; default), "
                            "random, a checkpoint path or a Hub id")
    group.add_argument("--set", dest="overrides", type=parse_override, action="append", default=[],
                       metavar="KEY=VALUE", help="model config override, e.g. --set num_classes=20 (repeatable)")
    group.add_argument("--list-models", action="store_true", help="print the variant names and exit")


def load_model(args: argparse.Namespace):
    """The model named by the model argument group, with progress on stderr."""
    import detr_deploy

    log(f"loading {args.model} (weights: {args.weights or 'auto'})...")
    model = detr_deploy.create_model(args.model, weights=args.weights, **dict(args.overrides))
    source = model.weights_info.get("source")
    log(f"  {model.variant}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, weights: {source}")
    return model


def write_json(path: str | os.PathLike, data, indent: int | None = 2) -> None:
    """Atomic JSON write (temporary file in the same folder, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=indent, default=float)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a command: DetrDeployError -> one-line message and exit 2; Ctrl-C -> exit 130 (nothing half-written)."""
    try:
        return main(argv)
    except DetrDeployError as exc:
        log(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted; no partial output was left behind")
        return 130
