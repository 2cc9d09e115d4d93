# SPDX-License-Identifier: Apache-2.0
"""detr-build: a detr-export ONNX file -> TensorRT engine (+ <engine>.json sidecar with its metadata).

TensorRT 10.x and 11.x. Plugin libraries are loaded before parsing; a missing plugin is reported by name, version
and namespace with the library to load. Prints the equivalent trtexec command.

Examples:
  detr-build deformable-detr_plugin-v2_fp32_dynamic.onnx -o deformable.engine
  detr-build model.onnx --plugins plugins/build/libdetr_deploy_plugins.so --shapes 1x320x320/1x800x1066/4x1333x1333
"""
from __future__ import annotations

import sys

from .args import add_output, device, log, make_parser, run


def build_parser():
    parser = make_parser("detr-build", __doc__)
    parser.add_argument("onnx", help="ONNX file written by detr-export")
    add_output(parser, "engine path (default: the ONNX path with .engine)")
    parser.add_argument("--plugins", nargs="*", default=[], metavar="LIB.so",
                        help="plugin libraries to load before parsing (e.g. libdetr_deploy_plugins.so)")
    parser.add_argument("--shapes", default=None, metavar="MIN/OPT/MAX",
                        help="optimization profile as BxHxW/BxHxW/BxHxW (default for dynamic files: "
                             "1xNxN/1x800x1066/1x1333x1333, N = the model's minimum size)")
    parser.add_argument("--workspace", type=int, default=None, metavar="MiB", help="workspace memory pool limit")
    parser.add_argument("--timing-cache", default=None, metavar="FILE",
                        help="timing cache to read and update (speeds up rebuilds)")
    parser.add_argument("--strongly-typed", action="store_true",
                        help="TensorRT 10.x: take precision from the graph instead of builder flags (always on 11.x)")
    parser.add_argument("--device", type=device, default="cuda", metavar="cuda|cuda:N",
                        help="the GPU to build for (default cuda = GPU 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.device.startswith("cuda"):
        parser.error(f"--device {args.device}: engines are built on a GPU (cuda or cuda:N)")
    from ..export.trt_build import build_engine, parse_shapes
    from ..runtime.backends import BackendOptions

    shapes = parse_shapes(args.shapes) if args.shapes else None
    device_id = BackendOptions(device=args.device).device_id
    result = build_engine(args.onnx, args.output, args.plugins, shapes, args.workspace, args.timing_cache,
                          args.strongly_typed, device_id, log=log)
    print(result.engine)
    return 0


def entry() -> None:
    sys.exit(run(main))
