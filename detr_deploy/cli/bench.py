# SPDX-License-Identifier: Apache-2.0
"""detr-bench: latency and throughput of an artifact, with pre-processing, inference and post-processing apart.

Per batch size: p50/p90/p99 latency of each stage and of the whole, images per second. The input is a real-looking
image of --input-size (the source image; the artifact's preprocessing resizes it as in production), or --image.

Examples:
  detr-bench model.onnx --batch-sizes 1 2 4 --threads 2
  detr-bench model.engine --batch-sizes 1 8 --iterations 200 -o bench.json
"""
from __future__ import annotations

import sys
import time

import numpy as np

from .args import RuntimeArgs, add_deprecated, add_output, log, make_parser, parse_size, positive_int, run


def build_parser():
    parser = make_parser("detr-bench", __doc__)
    parser.add_argument("artifact", help="model.onnx or model.engine")
    parser.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[1], metavar="N",
                        help="batch sizes to measure (default 1)")
    add_deprecated(parser, "--batch", "batch_sizes", "--batch-sizes", type=positive_int, nargs="+")
    parser.add_argument("--input-size", type=parse_size, default=(480, 640), metavar="HxW",
                        help="source image size before preprocessing (default 480x640)")
    parser.add_argument("--image", default=None, help="benchmark on this image instead of a synthetic one")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per batch size (default 3)")
    parser.add_argument("--iterations", type=positive_int, default=20, help="timed runs per batch size (default 20)")
    add_output(parser, "also write the results as JSON", old=("--json",))
    RuntimeArgs.add(parser)
    return parser


def synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth structure plus texture (compresses and resizes like a photograph, unlike pure noise)."""
    from .._optional import require

    Image = require("PIL.Image", "synthetic benchmark images")

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC)).astype(np.int16)
    return np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)


def percentiles(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean())}


def benchmark(detector, image: np.ndarray, batch: int, warmup: int, iterations: int) -> dict:
    """Timed runs of one batch size; returns per-stage percentiles (ms) and images/s."""
    images = [image] * batch
    stages = {"preprocess": [], "inference": [], "postprocess": [], "total": []}
    for i in range(warmup + iterations):
        t0 = time.perf_counter()
        prepared = detector.preprocess(images)
        t1 = time.perf_counter()
        outputs = detector.infer(prepared)
        t2 = time.perf_counter()
        detector.postprocess(outputs, prepared, batch, detector.threshold)
        t3 = time.perf_counter()
        if i >= warmup:
            for name, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                stages[name].append(value)
    result = {name: percentiles(values) for name, values in stages.items()}
    result["images_per_second"] = batch / (result["total"]["mean"] / 1e3)
    result["input_shape"] = list(prepared.input_shape)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..errors import ConfigError
    from ..files import check_output_file, write_json
    from ..runtime import Detector, load_image

    if args.output:
        check_output_file(args.output, "results file")
    options = RuntimeArgs.options(args)
    image = load_image(args.image) if args.image else synthetic_photo(*args.input_size)
    rows = {}
    with Detector(args.artifact, backend=args.backend, options=options) as detector:
        for batch in args.batch_sizes:
            if detector.static_batch and batch != detector.static_batch:
                raise ConfigError(f"{args.artifact} has a static batch of {detector.static_batch}; --batch-sizes "
                                  f"{batch} needs a dynamic export")
            log(f"batch {batch}: {args.warmup} warm-up + {args.iterations} timed runs...")
            rows[batch] = benchmark(detector, image, batch, args.warmup, args.iterations)
        backend = detector.backend.name
    print(f"{args.artifact} ({backend}, {options.device}), source image "
          f"{image.shape[0]}x{image.shape[1]}; milliseconds p50 / p90 / p99")
    print(f"{'batch':>5} {'model input':>18} {'preprocess':>22} {'inference':>24} {'postprocess':>20} "
          f"{'total':>24} {'img/s':>7}")
    for batch, r in rows.items():
        def cell(stage, r=r):
            return f"{r[stage]['p50']:.1f}/{r[stage]['p90']:.1f}/{r[stage]['p99']:.1f}"

        shape = "x".join(str(v) for v in r["input_shape"])
        print(f"{batch:>5} {shape:>18} {cell('preprocess'):>22} {cell('inference'):>24} {cell('postprocess'):>20} "
              f"{cell('total'):>24} {r['images_per_second']:>7.2f}")
    if args.output:
        write_json(args.output, {"artifact": args.artifact, "backend": backend, "results": rows})
    return 0


def entry() -> None:
    sys.exit(run(main))
