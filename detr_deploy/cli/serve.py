# SPDX-License-Identifier: Apache-2.0
"""detr-serve: start a local Triton Inference Server for a model repository (written by detr-triton), wait until
its models are ready, print the endpoints, and serve until Ctrl-C or SIGTERM (a clean stop, exit status 130).

The server binary: --tritonserver, $TRITONSERVER, tritonserver on PATH, or the nvidia-pytriton wheel of this
environment (bash .ci/triton_server.sh sets one up). Endpoints bind 127.0.0.1 unless --address says otherwise
(--address 0.0.0.0 for every interface). The Python-backend models import from $TRITON_PYTHONPATH (an environment
with numpy < 2 for tritonserver <= 2.52), else from this environment; see docs/serving.md.

Examples:
  detr-serve model_repository
  detr-serve /models --http-port 9000 --grpc-port 9001 --metrics-port 9002
  detr-serve /models --address 0.0.0.0 --server-arg=--backend-config=tensorrt,plugins=/opt/lib/libmsda.so
"""
from __future__ import annotations

import signal
import sys

from .args import log, make_parser, positive_int, run


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        import argparse

        raise argparse.ArgumentTypeError(f"ports are 1..65535, got {text}")
    return value


def build_parser():
    parser = make_parser("detr-serve", __doc__)
    parser.add_argument("repository", help="the model repository folder (detr-triton -o)")
    parser.add_argument("--http-port", type=port, default=8000, help="HTTP/REST port (default 8000)")
    parser.add_argument("--grpc-port", type=port, default=8001, help="gRPC port (default 8001)")
    parser.add_argument("--metrics-port", type=port, default=8002, help="Prometheus metrics port (default 8002)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="address every endpoint binds (default 127.0.0.1: this machine only)")
    parser.add_argument("--tritonserver", default=None, metavar="PATH", help="the tritonserver binary")
    parser.add_argument("--backend-dir", default=None, metavar="DIR",
                        help="Triton's backend folder (default: $TRITON_BACKEND_DIR, or beside the binary)")
    parser.add_argument("--timeout", type=positive_int, default=300, metavar="S",
                        help="seconds to wait for the models to be ready (default 300)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="an extra tritonserver flag, e.g. --server-arg=--log-verbose=1 (repeatable)")
    return parser


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (systemd, Kubernetes, kill): the same clean stop as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..serving.server import TritonServer

    signal.signal(signal.SIGTERM, _stop_on_sigterm)

    server = TritonServer(args.repository, args.http_port, args.grpc_port, args.metrics_port, address=args.address,
                          binary=args.tritonserver, backend_dir=args.backend_dir, extra_args=args.server_arg)
    log(f"starting {server.binary} for {', '.join(server.models)}...")
    try:
        server.start().wait_ready(args.timeout)
        print(f"ready: {', '.join(server.models)}\n  HTTP     {server.http_url}\n  gRPC     {server.grpc_url}\n"
              f"  metrics  {server.metrics_url}", flush=True)
        log("Ctrl-C stops the server")
        status = server.process.wait()
    except KeyboardInterrupt:
        log("stopping tritonserver (Ctrl-C again kills it at once)")
        raise
    finally:
        server.stop()  # after Ctrl-C too: the server never outlives the command
    log(f"error: tritonserver exited by itself with status {status}; its last lines:\n{server.log_tail()}")
    return 2


def entry() -> None:
    sys.exit(run(main))
