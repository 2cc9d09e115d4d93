# SPDX-License-Identifier: Apache-2.0
"""detr-export: a DETR or Deformable DETR model to a verified ONNX file.

Examples:
  detr-export --model deformable                        # TensorRT-ready: MSDA plugin node, dynamic shapes
  detr-export --model deformable-detr --msda gridsample # portable: standard ops only (onnxruntime, ...)
  detr-export --model detr-r50 --input-size 800x1333 --batch 1 -o detr_static.onnx
  detr-export --model r50_deformable_detr-checkpoint.pth -o my_model.onnx
"""
from __future__ import annotations

import argparse
import sys

from .args import add_model_args, load_model, log, parse_size, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detr-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser, required=False)
    group = parser.add_argument_group("export")
    group.add_argument("-o", "--output", help="output .onnx (default: <variant>_<msda>_<shape>.onnx)")
    group.add_argument("--msda", choices=["plugin", "gridsample"], default="plugin",
                       help="deformable attention as a TensorRT plugin node (default) or standard ONNX ops")
    group.add_argument("--plugin-version", choices=["1", "2"], default=None,
                       help="plugin_version attribute of NVIDIA's plugin: 2 = IPluginV3, TensorRT >= 10.11 "
                            "(default); 1 = older TensorRT (JetPack 6)")
    group.add_argument("--msda-plugin-name", default=None,
                       help="plugin op type; DetrDeployMSDA_TRT = detr-deploy's plugin (plugins/), default NVIDIA's "
                            "MultiscaleDeformableAttnPlugin_TRT")
    shape = group.add_mutually_exclusive_group()
    shape.add_argument("--dynamic", action="store_true", default=True,
                       help="dynamic batch, height and width (default)")
    shape.add_argument("--input-size", type=parse_size, default=None, metavar="HxW",
                       help="static input size, e.g. 800x1333 (images are resized to fit and padded)")
    group.add_argument("--batch", type=int, default=1, help="batch size of a static export (default 1)")
    group.add_argument("--opset", type=int, default=18, help="ONNX opset, 17..23 (default 18)")
    group.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                       help="fp16: mixed-precision graph (LayerNorm, softmax, heads, positions and MSDA sampling in "
                            "FP32); int8: Q/DQ on Conv/MatMul inputs on top of fp16 (needs --calib)")
    group.add_argument("--msda-fp16", action="store_true",
                       help="fp16/int8: run the MSDA node with half storage (default FP32)")
    calib = parser.add_argument_group("INT8 calibration")
    calib.add_argument("--calib", default=None, metavar="DIR", help="folder of calibration images (int8)")
    calib.add_argument("--calib-size", type=int, default=None, metavar="N",
                       help="use the first N images (default: all); fewer readable images is an error")
    calib.add_argument("--calib-method", choices=["entropy", "percentile", "max"], default="percentile",
                       help="activation range: percentile (99.99, default), entropy (KL, TensorRT's) or max")
    group.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    group.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check against PyTorch")
    return parser


def default_output(variant: str, family: str, msda: str, plugin_version: str | None, size, batch: int,
                   precision: str) -> str:
    form = "" if family == "detr" else (f"_plugin-v{plugin_version or '2'}" if msda == "plugin" else "_gridsample")
    shape = "_dynamic" if size is None else f"_b{batch}-{size[0]}x{size[1]}"
    return f"{variant}{form}_{precision}{shape}.onnx"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_models:
        import detr_deploy

        print("\n".join(detr_deploy.list_models()))
        return 0
    if not args.model:
        build_parser().error("--model is required")
    from ..export import ExportConfig, export_onnx
    from ..export.quantize import CalibrationConfig, calibration_images
    from ..export.verify import verify_onnx
    from ..parity import DEFAULT_TOLERANCES

    static = args.input_size is not None
    calibration = None
    if args.precision == "int8":
        calibration = CalibrationConfig(calibration_images(args.calib, args.calib_size), method=args.calib_method)
    config = ExportConfig(msda=args.msda, plugin_name=args.msda_plugin_name, plugin_version=args.plugin_version,
                          dynamic=not static, input_size=args.input_size or (800, 1066), batch=args.batch,
                          opset=args.opset, precision=args.precision, msda_fp16=args.msda_fp16,
                          calibration=calibration, simplify=not args.no_simplify)
    config.validate()  # fail on bad flags and calibration folders before the (slow) model load
    model = load_model(args)
    output = args.output or default_output(model.variant, model.config.family, args.msda, args.plugin_version,
                                           args.input_size, args.batch, args.precision)
    result = export_onnx(model, output, config, log=log)
    status = 0
    if not args.no_verify:
        tolerance = DEFAULT_TOLERANCES[args.precision]
        diffs = verify_onnx(model, result.path, dynamic=not static, log=log,
                            images=calibration.images if calibration else None)
        problems = [f"{d.label}: {p}" for d in diffs for p in d.violations(tolerance)]
        worst = max(max(d.max_abs_logits, d.max_abs_boxes) for d in diffs)
        if problems:
            log(f"VERIFICATION FAILED ({args.precision} tolerances): " + "; ".join(problems))
            status = 1
        else:
            log(f"verified ({args.precision}): max abs difference {worst:.2e}, within the {args.precision} "
                f"tolerances (logits {tolerance.max_abs_logits:g}, boxes {tolerance.max_abs_boxes:g}, "
                f"top-k agreement >= {tolerance.min_top_k_agreement:.0%})")
    print(result.path)
    return status


def entry() -> None:
    sys.exit(run(main))
