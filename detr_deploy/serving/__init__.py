# SPDX-License-Identifier: Apache-2.0
"""Serving detr-deploy artifacts on NVIDIA Triton Inference Server.

Modules: ``repository`` (a model repository from an artifact: an ensemble of pre-processing, the model and
post-processing, with their ``config.pbtxt``), ``python_models`` (what the generated ``model.py`` files of the Python
backend run: detr-deploy's own runtime code), ``client`` (:class:`TritonDetector`, the ``Detector`` call signature
over HTTP or gRPC), ``server`` (finding, starting and stopping a local ``tritonserver``).

Nothing here imports tritonclient or Triton's ``triton_python_backend_utils`` at import time.
"""
from .repository import RepositoryConfig, write_repository

__all__ = ["RepositoryConfig", "TritonDetector", "TritonServer", "write_repository"]


def __getattr__(name: str):
    # the client and server are imported on first use: writing a repository needs neither
    if name == "TritonDetector":
        from .client import TritonDetector

        return TritonDetector
    if name == "TritonServer":
        from .server import TritonServer

        return TritonServer
    raise AttributeError(name)
