# SPDX-License-Identifier: Apache-2.0
"""detr-triton: a Triton Inference Server model repository from an artifact (ONNX file or TensorRT engine).

Writes into the -o repository folder four models: NAME (an ensemble: encoded images in, boxes/scores/labels/names
out; for a segmentation artifact the panoptic or instance map and its segments, --task), NAME_preprocess and
NAME_postprocess (Python backend, detr-deploy's own runtime code with the artifact's recorded settings), and
NAME_model (tensorrt_plan for an engine; for an ONNX file the Python backend running
detr-deploy's onnxruntime backend, or Triton's onnxruntime_onnx with --model-backend onnxruntime). Other models in
the folder are left alone; earlier versions of these four are replaced.

Batching needs a static artifact (detr-export --input-size HxW): the images of a batch are then all padded to one
size and the detections equal a local run's. A dynamic artifact is refused with --max-batch-size above 1 (padding
to the largest image of a batch changes Deformable DETR's detections). See docs/serving.md.

Examples:
  detr-triton shapes.onnx -o model_repository --name shapes
  detr-triton model.engine -o /models --max-batch-size 16 --instances 2
  detr-triton panoptic.onnx -o model_repository --name panoptic --task panoptic
  detr-serve model_repository
"""
from __future__ import annotations

import sys

from .args import SegmentationArgs, add_output, log, make_parser, positive_int, probability, run


def build_parser():
    parser = make_parser("detr-triton", __doc__)
    parser.add_argument("artifact", help="model.onnx or model.engine (written by detr-export / detr-build)")
    add_output(parser, "the model repository folder (created if needed)", required=True)
    parser.add_argument("--name", default="detr", help="the ensemble's name (default detr); its steps are "
                                                       "NAME_preprocess, NAME_model, NAME_postprocess")
    parser.add_argument("--max-batch-size", type=positive_int, default=8, metavar="N",
                        help="largest batch Triton forms from concurrent requests (default 8)")
    parser.add_argument("--instances", type=positive_int, default=1, metavar="N",
                        help="instances of each model (default 1): Python models are processes, native models "
                             "copies per GPU")
    parser.add_argument("--model-backend", choices=["auto", "tensorrt", "onnxruntime", "python"], default="auto",
                        help="what runs NAME_model (default auto: engine -> tensorrt; ONNX file -> python, "
                             "detr-deploy's onnxruntime backend, which runs everywhere)")
    parser.add_argument("--queue-delay-us", type=int, default=2000, metavar="US",
                        help="how long the dynamic batcher waits to fill a batch, in microseconds (default 2000)")
    parser.add_argument("--threshold", type=probability, default=0.5,
                        help="score threshold for requests that do not send THRESHOLD (default 0.5)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="onnxruntime threads of each Python-backend model instance (default: onnxruntime's)")
    parser.add_argument("--plugins", nargs="*", default=None, metavar="LIB.so",
                        help="TensorRT plugin libraries for onnxruntime_onnx's TensorRT accelerator (plugin-form "
                             "graphs); engines: load plugins in the server (docs/serving.md)")
    SegmentationArgs.add(parser, "segmentation artifacts (what the ensemble outputs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..serving.repository import RepositoryConfig, write_repository

    config = RepositoryConfig(name=args.name, max_batch_size=args.max_batch_size, instances=args.instances,
                              model_backend=args.model_backend, queue_delay_us=args.queue_delay_us,
                              default_threshold=args.threshold, plugin_libraries=args.plugins, threads=args.threads,
                              task=args.task, mask_threshold=args.mask_threshold,
                              overlap_mask_area_threshold=args.overlap_threshold)
    write_repository(args.artifact, args.output, config, log=log)
    log(f"serve it: detr-serve {args.output}   (then: detr-infer --triton localhost:8000 --triton-model {args.name} "
        "IMAGES...)")
    return 0


def entry() -> None:
    sys.exit(run(main))
