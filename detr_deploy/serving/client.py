# SPDX-License-Identifier: Apache-2.0
"""``TritonDetector``: the ``Detector`` call signature against a Triton ensemble written by ``detr-triton``, over
HTTP or gRPC (tritonclient, imported on first use: ``pip install 'detr-deploy[serving]'``).

The protocol: ``protocol`` when given; else the URL's scheme (``http://``, ``https://``, ``grpc://``, ``grpcs://``);
else HTTP. Images travel encoded: files as their bytes (the server decodes them with ``load_image``), PIL images and
numpy arrays as lossless PNG, so the server sees the pixels the local Detector would.
"""
from __future__ import annotations

import io
import json
import os
import re
from typing import Any

import numpy as np

from .._optional import require
from ..errors import ConfigError, ImageError, ServingError
from ..runtime.detector import check_threshold
from ..runtime.images import DEFAULT_MAX_PIXELS, describe, load_image, read_encoded
from . import protocol as P
from .python_models import unpack_detections, unpack_segments

PROTOCOLS = ("http", "grpc")
_SCHEMES = {"http": ("http", False), "https": ("http", True), "grpc": ("grpc", False), "grpcs": ("grpc", True)}
_UNREADABLE = re.compile(re.escape(P.UNREADABLE) + r": image (\d+): (.*)", re.S)


def parse_url(url: str, protocol: str | None = None) -> tuple[str, str, bool]:
    """``(protocol, host:port, ssl)`` from a URL such as ``localhost:8000``, ``grpc://host:8001``, ``https://h``."""
    text = url.strip()
    scheme, ssl = None, False
    if "://" in text:
        scheme, text = text.split("://", 1)
        if scheme.lower() not in _SCHEMES:
            raise ConfigError(f"unknown scheme {scheme}:// in {url!r}; use http://, https://, grpc:// or grpcs://")
        scheme, ssl = _SCHEMES[scheme.lower()]
    text = text.rstrip("/")
    if not text or "/" in text:
        raise ConfigError(f"expected HOST:PORT (optionally with a scheme), got {url!r}")
    if protocol is not None and protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be http or grpc, got {protocol!r}")
    if protocol and scheme and protocol != scheme:
        raise ConfigError(f"{url} says {scheme} but the protocol given is {protocol}; drop one of them")
    return protocol or scheme or "http", text, ssl


def encode(source: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """What the ensemble's IMAGE input carries for ``source``: a file's bytes (checked like ``load_image`` for
    missing, folder and empty paths), bytes as given, a PIL image or numpy array as PNG. ImageError otherwise."""
    if isinstance(source, (str, os.PathLike)):
        return read_encoded(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    array = load_image(source, max_pixels)  # checks type, dtype, shape and size as the local Detector does
    Image = require("PIL.Image", "encoding images for Triton")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)  # lossless; level 1: speed over size
    return buffer.getvalue()


class TritonDetector:
    """Run images through a detr-deploy ensemble on a Triton server.

    Args:
        url: ``host:port`` of the server's HTTP (default 8000) or gRPC (8001) endpoint, optionally with a scheme.
        model: the ensemble's name (``detr-triton --name``).
        protocol: "http" or "grpc"; None: from the URL's scheme, else http.
        threshold: default score threshold (``score > threshold`` is kept), in [0, 1].
        batch_size: images per request (at most the ensemble's ``max_images_per_request``).
        timeout: seconds for connecting and for each request; a server that goes away gives ServingError in
            about this time, never a hang.

    ``detector(images, threshold=None) -> list[dict]``, one per image in order, as ``Detector``: ``"boxes"`` float32
    [K,4] xyxy in original pixels, ``"scores"`` [K], ``"labels"`` int64 [K], ``"names"`` list[str], by score; for a
    segmentation ensemble (``task`` "panoptic" or "instance", chosen by ``detr-triton --task``) ``"segmentation"``
    int32 [H, W] at the original size, ``"segments_info"`` and ``"names"``, as the local Detector's. An
    image that cannot be read (here or by the server) gives ``{"error": message, "source": name}``; the others
    still run. One client per thread (tritonclient's clients are not shared between threads).
    """

    def __init__(self, url: str, model: str = "detr", protocol: str | None = None, threshold: float = 0.5,
                 batch_size: int = 1, timeout: float = 30.0, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.protocol, self.url, ssl = parse_url(url, protocol)
        self.model = model
        self.threshold = check_threshold(threshold)
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        self.timeout = float(timeout)
        self.max_pixels = max_pixels
        self.lib = require(f"tritonclient.{self.protocol}", "talking to a Triton server")
        self.utils = require("tritonclient.utils", "talking to a Triton server")
        try:
            if self.protocol == "http":
                self.client = self.lib.InferenceServerClient(self.url, connection_timeout=self.timeout,
                                                             network_timeout=self.timeout, ssl=ssl)
            else:
                self.client = self.lib.InferenceServerClient(self.url, ssl=ssl)
        except Exception as exc:
            raise ServingError(f"cannot create a {self.protocol} client for {self.url}: {exc}") from exc
        self.config = self._call("reading the model configuration", self._model_config)
        params = {k: v.get("string_value", "") for k, v in (self.config.get("parameters") or {}).items()}
        if P.PARAM_ID2LABEL not in params:
            raise ServingError(f"model {model!r} on {self.url} was not written by detr-triton (its config has no "
                               f"{P.PARAM_ID2LABEL} parameter); give the ensemble's name (--triton-model)")
        self.id2label = {int(k): v for k, v in json.loads(params[P.PARAM_ID2LABEL]).items()}
        self.max_images = int(params.get(P.PARAM_MAX_IMAGES) or 1)
        self.model_step = params.get(P.PARAM_MODEL) or f"{model}_model"
        self.task = params.get(P.PARAM_TASK) or "detection"
        if self.task not in ("detection", *P.SEGMENTATION_TASKS):  # "segmentation": an older repository's value
            raise ServingError(f"model {model!r} on {self.url} serves task {self.task!r}, which this client does "
                               "not read; write the repository again with detr-triton")
        self.stuff_ids = tuple(json.loads(params.get(P.PARAM_STUFF_IDS) or "[]"))
        self.batch_size = min(int(batch_size), self.max_images)

    # --- transport ---------------------------------------------------------------------------------------------
    def _call(self, what: str, fn, *args, **kwargs):
        """Run a tritonclient call; every transport or server failure becomes one ServingError naming it."""
        try:
            return fn(*args, **kwargs)
        except self.utils.InferenceServerException as exc:
            text = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
            if _UNREADABLE.search(text or ""):
                raise
            status = str(exc.status() if callable(getattr(exc, "status", None)) else "")
            if status.endswith(("UNAVAILABLE", "DEADLINE_EXCEEDED")):  # gRPC's way of saying no server answered
                raise ServingError(f"Triton at {self.url} ({self.protocol}) is not reachable while {what} ({text}); "
                                   "is the server running? (detr-serve REPO starts one)") from exc
            raise ServingError(f"Triton at {self.url} ({self.protocol}) failed {what}: {text}") from exc
        except Exception as exc:  # refused connections, timeouts, resets: the server is not (or no longer) there
            detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise ServingError(f"Triton at {self.url} ({self.protocol}) is not reachable while {what} ({detail}); "
                               "is the server running? (detr-serve REPO starts one)") from exc

    def _model_config(self) -> dict:
        if self.protocol == "http":
            return self.client.get_model_config(self.model)
        return self.client.get_model_config(self.model, as_json=True, client_timeout=self.timeout)["config"]

    def _infer(self, encoded: list[bytes], threshold: float) -> list[dict]:
        lib = self.lib
        images = np.array(encoded, dtype=np.object_).reshape(-1, 1)
        thresholds = np.full((len(encoded), 1), threshold, dtype=np.float32)
        inputs = [lib.InferInput(P.IMAGE, list(images.shape), "BYTES"),
                  lib.InferInput(P.THRESHOLD, list(thresholds.shape), "FP32")]
        inputs[0].set_data_from_numpy(images)
        inputs[1].set_data_from_numpy(thresholds)
        names = P.outputs_for(self.task)
        outputs = [lib.InferRequestedOutput(name) for name in names]
        if self.protocol == "http":
            result = self.client.infer(self.model, inputs, outputs=outputs)
        else:
            result = self.client.infer(self.model, inputs, outputs=outputs, client_timeout=self.timeout)
        arrays = {name: result.as_numpy(name) for name in names}
        return unpack_segments(arrays) if self.task in P.SEGMENTATION_TASKS else unpack_detections(arrays)

    def infer_encoded(self, encoded: list[bytes], threshold: float | None = None) -> list[dict]:
        """One request of encoded images (at most ``max_images``): the detections, in order. ServingError for a
        failed request (an unreadable image included: ``__call__`` isolates those)."""
        threshold = self.threshold if threshold is None else check_threshold(threshold)
        return self._call("running inference", self._infer, list(encoded), threshold)

    # --- the Detector signature ------------------------------------------------------------------------------------
    def __call__(self, images: Any, threshold: float | None = None) -> list[dict]:
        if not isinstance(images, (list, tuple)):
            images = [images]
        threshold = self.threshold if threshold is None else check_threshold(threshold)
        results: list[dict] = [{}] * len(images)
        pending: list[tuple[int, bytes]] = []
        for index, source in enumerate(images):
            try:
                pending.append((index, encode(source, self.max_pixels)))
            except ImageError as exc:
                results[index] = {"error": str(exc), "source": describe(source, index)}
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start:start + self.batch_size]
            while chunk:  # the server names an unreadable image by its place: drop it, send the others again
                try:
                    detections = self._call("running inference", self._infer, [data for _, data in chunk], threshold)
                except self.utils.InferenceServerException as exc:
                    text = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
                    match = _UNREADABLE.search(text)
                    bad = int(match.group(1))
                    index = chunk[bad][0]
                    results[index] = {"error": f"{describe(images[index], index)}: {match.group(2).strip()}",
                                      "source": describe(images[index], index)}
                    chunk = chunk[:bad] + chunk[bad + 1:]
                    continue
                for (index, _), det in zip(chunk, detections):
                    results[index] = det
                break
        return results

    # --- statistics ------------------------------------------------------------------------------------------------
    def statistics(self, model: str | None = None) -> dict:
        """Triton's statistics of ``model`` (default: the ``NAME_model`` step) as a JSON dict."""
        name = model or self.model_step
        if self.protocol == "http":
            return self._call("reading statistics", self.client.get_inference_statistics, name)
        return self._call("reading statistics", self.client.get_inference_statistics, name, as_json=True,
                          client_timeout=self.timeout)

    def batch_sizes(self, model: str | None = None) -> dict[int, int]:
        """``{batch size: executions}`` that Triton actually formed for ``model`` (its ``batch_stats``)."""
        return batch_sizes(self.statistics(model))

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a client whose server is gone must not raise
            pass

    def __enter__(self) -> TritonDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def batch_sizes(statistics: dict) -> dict[int, int]:
    """``{batch size: executions}`` from a statistics document (gRPC's JSON has its integers as strings)."""
    sizes: dict[int, int] = {}
    for model in statistics.get("model_stats", []):
        for entry in model.get("batch_stats", []):
            count = int((entry.get("compute_infer") or {}).get("count", 0))
            sizes[int(entry["batch_size"])] = sizes.get(int(entry["batch_size"]), 0) + count
    return dict(sorted(sizes.items()))
