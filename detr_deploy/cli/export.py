# SPDX-License-Identifier: Apache-2.0
"""detr-export: a DETR or Deformable DETR model to a verified ONNX file.

The file is written under -o only after it ran in onnxruntime within the precision's tolerances of PyTorch; a file
that fails verification is kept as <name>.failed-verification.onnx (exit status 1).

Examples:
  detr-export --model deformable-detr-shapes -o shapes.onnx   # shipped weights, TensorRT-ready plugin form
  detr-export --model deformable --msda gridsample            # portable: standard ops only (onnxruntime, ...)
  detr-export --model detr-r50 --input-size 800x1333 -o detr_static.onnx
  detr-export --model deformable-detr-shapes --preprocess-in-graph -o shapes_images.onnx   # uint8 images in
  detr-export --model r50_deformable_detr-checkpoint.pth -o my_model.onnx
  detr-export --model hf-hub:SenseTime/deformable-detr -o deformable.onnx
"""
from __future__ import annotations

import sys
from pathlib import Path

from .._optional import require
from .args import ModelArgs, add_batch_size, add_output, log, make_parser, parse_size, positive_int, run


def build_parser():
    parser = make_parser("detr-export", __doc__)
    ModelArgs.add(parser)
    group = parser.add_argument_group("export")
    add_output(group, "output .onnx (default: <variant>_<msda>_<precision>_<shape>.onnx in the current folder)")
    group.add_argument("--msda", choices=["plugin", "gridsample"], default="plugin",
                       help="deformable attention as a TensorRT plugin node (default) or standard ONNX ops")
    group.add_argument("--plugin-version", choices=["1", "2"], default=None,
                       help="plugin_version attribute of NVIDIA's plugin: 2 = IPluginV3, TensorRT >= 10.11 "
                            "(default); 1 = older TensorRT (JetPack 6)")
    group.add_argument("--msda-plugin-name", default=None,
                       help="plugin op type; DetrDeployMSDA_TRT = detr-deploy's plugin (plugins/), default NVIDIA's "
                            "MultiscaleDeformableAttnPlugin_TRT")
    shape = group.add_mutually_exclusive_group()
    shape.add_argument("--dynamic", action="store_true",
                       help="dynamic batch, height and width (the default when --input-size is not given)")
    shape.add_argument("--input-size", type=parse_size, default=None, metavar="HxW",
                       help="static input size, e.g. 800x1333 (images are resized to fit and padded)")
    add_batch_size(group, "batch size of a static export (default 1)")
    group.add_argument("--opset", type=int, default=18, help="ONNX opset, 17..23 (default 18)")
    group.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                       help="fp16: mixed-precision graph (LayerNorm, softmax, heads, positions and MSDA sampling in "
                            "FP32); int8: Q/DQ on Conv/MatMul inputs on top of fp16 (needs --calib)")
    group.add_argument("--msda-fp16", action="store_true",
                       help="fp16/int8: run the MSDA node with half storage (default FP32)")
    group.add_argument("--preprocess-in-graph", action="store_true",
                       help="the graph takes decoded images (input 'image' uint8 [batch, height, width, 3]) and "
                            "resizes, normalises and pads them itself, as the host does (bit-identical for the same "
                            "output size): on TensorRT the host then only decodes. One call's images share a size")
    group.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    group.add_argument("--no-verify", action="store_true",
                       help="skip the onnxruntime check against PyTorch (the file is written unverified)")
    calib = parser.add_argument_group("INT8 calibration")
    calib.add_argument("--calib", default=None, metavar="DIR", help="folder of calibration images (int8)")
    calib.add_argument("--calib-size", type=positive_int, default=None, metavar="N",
                       help="use the first N images (default: all); fewer readable images is an error")
    calib.add_argument("--calib-method", choices=["entropy", "percentile", "max"], default="percentile",
                       help="activation range: percentile (99.99, default), entropy (KL, TensorRT's) or max")
    return parser


def default_output(variant: str, family: str, msda: str, plugin_version: str | None, size, batch: int,
                   precision: str, images_in: bool = False) -> str:
    form = "" if family == "detr" else (f"_plugin-v{plugin_version or '2'}" if msda == "plugin" else "_gridsample")
    shape = "_dynamic" if size is None else f"_b{batch}-{size[0]}x{size[1]}"
    return f"{variant}{form}_{precision}{shape}{'_imagein' if images_in else ''}.onnx"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if ModelArgs.list_models(args):
        return 0
    ModelArgs.require(parser, args)
    from ..export import ExportConfig
    from ..export.quantize import CalibrationConfig, calibration_images
    from ..export.verify import export_verified
    from ..files import check_output_file

    # everything that can fail fast does, before the model load and the (slow) export
    for module in ("torch", "onnx", "onnxscript", "onnxruntime") + (() if args.no_simplify else ("onnxslim",)):
        require(module, "detr-export")
    if args.msda == "plugin" and not args.no_verify:
        require("onnxruntime_extensions", "verifying plugin-form exports on the CPU")
    check_output_file(args.output or Path.cwd() / "model.onnx", "output file")
    static = args.input_size is not None
    calibration = None
    if args.precision == "int8":
        calibration = CalibrationConfig(calibration_images(args.calib, args.calib_size), method=args.calib_method)
    config = ExportConfig(msda=args.msda, plugin_name=args.msda_plugin_name, plugin_version=args.plugin_version,
                          dynamic=not static, input_size=args.input_size or (800, 1066), batch=args.batch_size,
                          opset=args.opset, precision=args.precision, msda_fp16=args.msda_fp16,
                          calibration=calibration, simplify=not args.no_simplify,
                          preprocess_in_graph=args.preprocess_in_graph)
    config.validate()
    model = ModelArgs.load(args)
    output = args.output or default_output(model.variant, model.config.family, args.msda, args.plugin_version,
                                           args.input_size, args.batch_size, args.precision, args.preprocess_in_graph)
    done = export_verified(model, output, config, verify=not args.no_verify,
                           images=calibration.images if calibration else None, log=log)
    if done.diffs is None:
        log(f"wrote {done.path} (not verified: --no-verify)")
    elif done.problems:
        log(f"VERIFICATION FAILED ({args.precision} tolerances): " + "; ".join(done.problems))
        log(f"the file was kept as {done.path} for inspection; {output} was not written")
        return 1
    else:
        worst = max(max(d.max_abs_logits, d.max_abs_boxes) for d in done.diffs)
        log(f"verified ({args.precision}): max abs difference {worst:.2e}, within the {args.precision} tolerances")
        log(f"wrote {done.path}")
    print(done.path)
    return 0


def entry() -> None:
    sys.exit(run(main))
