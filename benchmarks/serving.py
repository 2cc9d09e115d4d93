# SPDX-License-Identifier: Apache-2.0
"""Serving throughput and latency: one local Detector against a Triton server (a repository written by detr-triton,
on free loopback ports) at 1, 4 and 8 concurrent clients, in the same run, on the same images.

Each client is a thread with its own TritonDetector sending one image per request; throughput = images / wall time,
latency = one request's round trip (p50 / p99). The local Detector runs the same images one by one. Ratios are
Triton / local. The server: $TRITONSERVER and $TRITON_PYTHONPATH (eval "$(bash .ci/triton_server.sh)"), else the
repository's .venv-triton.

Usage (from the repository root):
  python benchmarks/serving.py                         # the shipped shapes model, exported static 256x416
  python benchmarks/serving.py --artifact model.onnx --requests 50 --clients 1 4 8 16 --instances 2
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


def server_environment() -> tuple[str | None, str | None]:
    binary, pythonpath = os.environ.get("TRITONSERVER"), os.environ.get("TRITON_PYTHONPATH")
    sites = sorted((REPO / ".venv-triton" / "lib").glob("python3*/site-packages"))
    if sites:
        wheel = sites[0] / "pytriton" / "tritonserver" / "bin" / "tritonserver"
        binary = binary or (str(wheel) if wheel.is_file() else None)
        pythonpath = pythonpath or str(sites[0])
    return binary, pythonpath


def photographs() -> list[bytes]:
    """scikit-image's photographs as JPEG bytes (what a client sends)."""
    import io

    import skimage.data
    from PIL import Image

    images = []
    for name in PHOTOS:
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(buffer, format="JPEG", quality=95)
        images.append(buffer.getvalue())
    return images


def client_loop(url: str, args, images: list[bytes], k: int, latencies: list[float], failures: list) -> None:
    """One client: ``args.requests`` requests of one image each; round-trip times into ``latencies``."""
    from detr_deploy.serving import TritonDetector

    try:
        with TritonDetector(url, "bench", protocol=args.protocol, timeout=120) as client:
            for i in range(args.requests):
                started = time.perf_counter()
                result = client([images[(k + i) % len(images)]])[0]
                (failures if "error" in result else latencies).append(time.perf_counter() - started)
    except Exception as exc:  # counted, printed with the row
        failures.append(exc)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", default=None, help="an ONNX file (default: export the shipped shapes model)")
    parser.add_argument("--requests", type=int, default=12, help="requests per client (default 12)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8], help="concurrency levels")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    args = parser.parse_args()

    from detr_deploy.runtime import Detector
    from detr_deploy.serving import RepositoryConfig, TritonDetector, TritonServer, write_repository

    binary, pythonpath = server_environment()
    if not binary or not pythonpath:
        sys.exit('no tritonserver: run eval "$(bash .ci/triton_server.sh)" first')
    work = Path(tempfile.mkdtemp(prefix="detr_serving_bench_"))
    artifact = args.artifact
    if artifact is None:
        import detr_deploy
        from detr_deploy.export import ExportConfig, export_onnx

        artifact = work / "shapes.onnx"
        print("exporting deformable-detr-shapes, static 256x416 (plugin-form MSDA)...", flush=True)
        export_onnx(detr_deploy.create_model("deformable-detr-shapes"), artifact,
                    ExportConfig(msda="plugin", dynamic=False, input_size=(256, 416)), log=lambda m: None)
    images = photographs()
    write_repository(artifact, work / "repo", RepositoryConfig(name="bench", max_batch_size=args.max_batch_size,
                                                                instances=args.instances))
    rows = []
    with Detector(artifact, threshold=0.5) as detector:
        detector([images[0]])  # warm-up
        count = args.requests * max(args.clients) // 2 or 1
        latencies = []
        started = time.perf_counter()
        for i in range(count):
            t = time.perf_counter()
            detector([images[i % len(images)]])
            latencies.append(time.perf_counter() - t)
        local = (count / (time.perf_counter() - started), percentile(latencies, 50), percentile(latencies, 99))
    print(f"local Detector: {count} images one by one", flush=True)

    with TritonServer(work / "repo", 0, 0, 0, binary=binary, pythonpath=[pythonpath, str(REPO)]) as server:
        server.wait_ready(timeout=300)
        url = server.http_url if args.protocol == "http" else server.grpc_url
        with TritonDetector(url, "bench", protocol=args.protocol, timeout=120) as warm:
            warm([images[0]])
            before = warm.batch_sizes()
        for clients in args.clients:
            latencies: list[float] = []
            failures: list = []
            threads = [threading.Thread(target=client_loop, args=(url, args, images, k, latencies, failures),
                                        daemon=True) for k in range(clients)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=1800)
            wall = time.perf_counter() - started
            with TritonDetector(url, "bench", protocol=args.protocol, timeout=120) as probe:
                after = probe.batch_sizes()
            formed = {s: after.get(s, 0) - before.get(s, 0) for s in after if after.get(s, 0) > before.get(s, 0)}
            before = after
            rows.append((clients, len(latencies), len(failures), len(latencies) / wall, percentile(latencies, 50),
                         percentile(latencies, 99), formed))
            print(f"{clients} client(s) done", flush=True)

    print(f"\n{Path(artifact).name}: {args.protocol}, max_batch_size {args.max_batch_size}, {args.instances} "
          f"instance(s), {os.cpu_count()} CPU cores; {args.requests} requests per client, 1 image per request")
    print(f"{'':22} {'img/s':>7} {'p50 ms':>8} {'p99 ms':>8}   {'x local img/s':>13} {'x local p50':>11}   batches "
          "formed {size: executions}")
    print(f"{'local Detector':22} {local[0]:7.2f} {local[1] * 1e3:8.1f} {local[2] * 1e3:8.1f}")
    for clients, _, failed, rate, p50, p99, formed in rows:
        label = f"Triton, {clients} client(s)"
        print(f"{label:22} {rate:7.2f} {p50 * 1e3:8.1f} {p99 * 1e3:8.1f}   {rate / local[0]:13.2f} "
              f"{p50 / local[1]:11.2f}   {formed}" + (f"  ({failed} failed)" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
