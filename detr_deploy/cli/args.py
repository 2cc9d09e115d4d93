# SPDX-License-Identifier: Apache-2.0
"""What the commands share: argument groups (each owns its flags, their parsing and their meaning), value types,
deprecated spellings, and the entry wrapper that turns every failure into the documented exit status.

One meaning per flag across commands:
  --model / --weights / --set   the reference model (a variant name, a checkpoint path, or hf-hub:ORG/NAME)
  -o / --output                 what the command writes (a file or a folder, per command)
  --batch-size N                images per inference batch (a static export's batch; images per call)
  --device cpu|cuda|cuda:N      where an artifact runs (or an engine is built)
  --backend                     which runtime runs an artifact (default: by artifact kind)
  --threshold                   a score in [0, 1]
"""
from __future__ import annotations

import argparse
import ast
import sys
import warnings
from collections.abc import Callable

from ..errors import DetrDeployError

EXIT_CODES = ("exit status: 0 success; 1 a verification or tolerance failure; 2 bad input or environment (one line "
              "naming the problem and the fix); 130 interrupted (nothing half-written is left); 3 an internal error "
              "(a bug: the traceback is printed, please report it)")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error of the exit contract (argparse prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def make_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A command's parser: its module docstring as the description, the exit codes as the epilog."""
    return _Parser(prog=prog, description=doc, epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)


# --- value types ------------------------------------------------------------------------------------------------
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


def probability(text: str) -> float:
    """A score threshold in [0, 1] (35 for 0.35 is a mistake, not a setting)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1]; scores are probabilities (e.g. 0.35)")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def device(text: str) -> str:
    """cpu, cuda or cuda:N. The old spellings (a bare GPU index; 'tensorrt' for onnxruntime's TensorRT provider)
    still work this release, with a deprecation note."""
    value = text.strip().lower()
    if value.isdigit():
        deprecated(f"--device {text}", f"--device cuda:{value}")
        return f"cuda:{value}"
    if value == "tensorrt":
        deprecated("--device tensorrt", "--device cuda --execution-provider tensorrt")
        return "tensorrt"
    if value in ("cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")


# --- deprecated spellings ---------------------------------------------------------------------------------------
def deprecated(old: str, new: str) -> None:
    log(f"warning: {old} is deprecated and will be removed in a later release; use {new}")


class _Deprecated(argparse.Action):
    """An old flag spelling: stores into the new destination and says what to write instead."""

    def __init__(self, option_strings, dest, new_flag: str = "", **kwargs):
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        deprecated(option_string, self.new_flag)
        setattr(namespace, self.dest, values)


def add_deprecated(parser, old: str, dest: str, new_flag: str, **kwargs) -> None:
    parser.add_argument(old, dest=dest, action=_Deprecated, new_flag=new_flag, help=argparse.SUPPRESS, **kwargs)


def require_output(parser, args) -> None:
    """Commands whose output has no sensible default (a folder of many files) need -o."""
    if not args.output:
        parser.error("-o/--output is required")


def deprecated_entry(old: str, new: str, main, argv: list[str]) -> int:
    """An old ``python -m ...`` spelling: run ``main`` after saying what to write instead."""
    deprecated(old, new)
    return run(main, argv)


# --- argument groups --------------------------------------------------------------------------------------------
def add_output(parser, help_text: str, default=None, required: bool = False, old: tuple[str, ...] = ()) -> None:
    """``-o/--output``: the one output flag of every command (a file or a folder, as ``help_text`` says)."""
    parser.add_argument("-o", "--output", default=default, required=required, metavar="PATH", help=help_text)
    for flag in old:
        add_deprecated(parser, flag, "output", "-o/--output")


def add_batch_size(parser, help_text: str, default: int = 1) -> None:
    """``--batch-size N``: images per inference batch (old spelling ``--batch``)."""
    parser.add_argument("--batch-size", type=positive_int, default=default, metavar="N", help=help_text)
    add_deprecated(parser, "--batch", "batch_size", "--batch-size", type=positive_int)


class ModelArgs:
    """``--model``, ``--weights``, ``--set``, ``--list-models``: the reference model."""

    @staticmethod
    def add(parser) -> None:
        group = parser.add_argument_group("model")
        group.add_argument("--model", help="variant name (see --list-models), a checkpoint path (official .pth, "
                                           "Hugging Face folder or file), or hf-hub:ORG/NAME")
        group.add_argument("--weights", default=None,
                           help="for a variant name: auto (published weights, else random with a warning; default), "
                                "random, a checkpoint path, or hf-hub:ORG/NAME")
        group.add_argument("--set", dest="overrides", type=parse_override, action="append", default=[],
                           metavar="KEY=VALUE", help="model config override, e.g. --set num_classes=20 (repeatable)")
        group.add_argument("--list-models", action="store_true", help="print the variant names and exit")

    @staticmethod
    def list_models(args) -> bool:
        """Print the variants if asked; True when the command should stop there."""
        if not args.list_models:
            return False
        import detr_deploy

        print("\n".join(detr_deploy.list_models()))
        return True

    @staticmethod
    def require(parser, args) -> None:
        if not args.model:
            parser.error("--model is required (or --list-models)")

    @staticmethod
    def load(args):
        """The model the group names, with what it is on stderr."""
        from ..factory import create_model

        log(f"loading {args.model} (weights: {args.weights or 'auto'})...")
        model = create_model(args.model, weights=args.weights, **dict(args.overrides))
        log(f"  {model.variant}: {model.num_parameters() / 1e6:.1f}M parameters, weights: "
            f"{model.weights_info.get('source')}")
        return model


class SegmentationArgs:
    """``--task``, ``--mask-threshold``, ``--overlap-threshold``: what a segmentation artifact predicts (detr-infer
    locally, detr-triton for the ensemble it writes)."""

    TASKS = ("panoptic", "instance", "detection")

    @staticmethod
    def add(parser, title: str = "segmentation artifacts"):
        group = parser.add_argument_group(title)
        group.add_argument("--task", choices=SegmentationArgs.TASKS, default=None,
                           help="what a segmentation artifact predicts (default panoptic; detection: boxes only)")
        group.add_argument("--mask-threshold", type=probability, default=0.5,
                           help="a pixel belongs to a segment above this score-weighted mask probability (0.5)")
        group.add_argument("--overlap-threshold", type=probability, default=0.8,
                           help="a segment must keep more than this fraction of its mask after overlaps (0.8)")
        return group


class RuntimeArgs:
    """``--backend``, ``--device``, ``--execution-provider``, ``--threads``, ``--plugins``: how artifacts run."""

    @staticmethod
    def add(parser) -> None:
        group = parser.add_argument_group("runtime")
        group.add_argument("--backend", choices=["onnxruntime", "tensorrt"], default=None,
                           help="default: by artifact kind (ONNX file: onnxruntime; engine: TensorRT)")
        group.add_argument("--device", type=device, default=None, metavar="cpu|cuda|cuda:N",
                           help="where artifacts run (default: cpu for ONNX files, cuda for engines)")
        group.add_argument("--execution-provider", choices=["auto", "cpu", "cuda", "tensorrt"], default="auto",
                           help="onnxruntime's provider (default auto: CPU on cpu, CUDA on cuda)")
        group.add_argument("--threads", type=positive_int, default=None,
                           help="CPU threads of onnxruntime and the native MSDA kernel")
        group.add_argument("--plugins", nargs="*", default=None, metavar="LIB.so",
                           help="TensorRT plugin libraries (engines, and onnxruntime's TensorRT provider)")

    @staticmethod
    def options(args):
        from ..runtime.backends import BackendOptions

        chosen, provider = args.device, args.execution_provider
        if chosen == "tensorrt":  # the old --device tensorrt
            chosen, provider = "cuda", "tensorrt"
        if chosen is None:
            chosen = "cuda" if args.backend == "tensorrt" or provider in ("cuda", "tensorrt") else "cpu"
        return BackendOptions.from_kwargs(device=chosen, execution_provider=provider, threads=args.threads,
                                          plugin_libraries=args.plugins)


# --- running a command ------------------------------------------------------------------------------------------
def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())
    log(f"warning: {text}")


def interrupted(exc: BaseException) -> bool:
    """True when ``exc`` is, or was raised while handling, a Ctrl-C (libraries such as torch's exporter wrap it)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a command with the exit-status contract (``EXIT_CODES``): DetrDeployError and operating-system errors
    -> one line and 2; Ctrl-C -> 130; anything else is a bug -> its traceback and 3. Warnings print one line each."""
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        return main(argv)
    except DetrDeployError as exc:
        log(f"error: {exc}")
        return 2
    except OSError as exc:  # permissions, full disks, vanished files: the environment, not a bug
        if interrupted(exc):
            log("interrupted; nothing half-written was left behind")
            return 130
        where = f": {exc.filename}" if exc.filename else ""
        log(f"error: {exc.strerror or exc}{where}")
        return 2
    except KeyboardInterrupt:
        log("interrupted; nothing half-written was left behind")
        return 130
    except Exception as exc:
        if interrupted(exc):
            log("interrupted; nothing half-written was left behind")
            return 130
        import traceback

        traceback.print_exc()
        log(f"internal error: {type(exc).__name__}: {exc}. This is a bug in detr-deploy or a library it uses; "
            "please report it with the traceback above")
        return 3
    finally:
        warnings.showwarning = previous
