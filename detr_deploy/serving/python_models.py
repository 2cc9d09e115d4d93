# SPDX-License-Identifier: Apache-2.0
"""The Python-backend models of a repository written by ``detr-triton``: the generated ``model.py`` files import one
of these classes as ``TritonPythonModel``. They run detr-deploy's own runtime code (decoding, pre-processing,
onnxruntime backend, post-processing) with the artifact's recorded settings (``artifact.json`` beside model.py), so
the server's detections are the local ``Detector``'s.

Triton's ``triton_python_backend_utils`` exists only inside the backend's stub process: it is imported in
``initialize``. Tensor names and shapes: see ``protocol``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact.metadata import ArtifactMetadata
from ..errors import DetrDeployError, ImageError, ServingError
from ..runtime.backends import BackendOptions
from ..runtime.detector import check_threshold
from ..runtime.images import DEFAULT_MAX_PIXELS, load_image
from ..runtime.postprocess import postprocess_detections
from ..runtime.preprocess import normalization_table, preprocess_for, preprocess_images
from . import protocol as P

NUMPY2_OVERRIDE = "DETR_DEPLOY_TRITON_NUMPY2"


def check_numpy_for_backend() -> None:
    """Python backends built with pybind11 < 2.12 (tritonserver 2.51/2.52, e.g. nvidia-pytriton 0.7) corrupt string
    tensors under numpy 2 and the stub process dies on the first request: refuse to load instead, with the fix."""
    if int(np.__version__.split(".")[0]) >= 2 and os.environ.get(NUMPY2_OVERRIDE) != "1":
        raise ServingError(f"the server's Python environment has numpy {np.__version__}; Triton's Python backend up to "
                           "tritonserver 2.52 needs numpy < 2 (it crashes on string tensors). Give the server an "
                           "environment with numpy<2 (bash .ci/triton_server.sh makes one; docs/serving.md), or set "
                           f"{NUMPY2_OVERRIDE}=1 if your backend is built with pybind11 >= 2.12")


class _Unreadable(DetrDeployError):
    """An input that is not a usable image: the request gets an error response, the model goes on."""


class _PythonModel:
    """What the three models share: config parameters, the artifact's metadata, one response per request (an error
    response for a request that fails, so one bad request never takes the others of its batch down)."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        check_numpy_for_backend()
        self.pb = pb_utils
        self.model_config = json.loads(args["model_config"])
        self.folder = Path(args["model_repository"]) / str(args["model_version"])
        self.params = {key: value.get("string_value", "")
                       for key, value in (self.model_config.get("parameters") or {}).items()}
        where = self.folder / P.METADATA_FILE
        self.metadata = ArtifactMetadata.from_json(where.read_text(), str(where))
        self.setup()

    def setup(self) -> None:
        """Per-model initialisation, after the metadata is read."""

    def inputs(self, request, *names: str, optional: tuple[str, ...] = ()) -> list[np.ndarray | None]:
        arrays = []
        for name in names + optional:
            tensor = self.pb.get_input_tensor_by_name(request, name)
            if tensor is None and name not in optional:
                raise ServingError(f"request has no input {name}")
            arrays.append(None if tensor is None else tensor.as_numpy())
        return arrays

    def response(self, outputs: dict[str, np.ndarray]):
        return self.pb.InferenceResponse(output_tensors=[self.pb.Tensor(k, v) for k, v in outputs.items()])

    def error(self, message: str):
        return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(message))

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                responses.append(self.response(self.run(request)))
            except DetrDeployError as exc:  # bad input: the message is for the client
                responses.append(self.error(str(exc)))
            except Exception as exc:  # a bug or the environment: still one response per request, with the type
                responses.append(self.error(f"{type(exc).__name__}: {exc}"))
        return responses

    def run(self, request) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def finalize(self) -> None:
        pass


class PreprocessModel(_PythonModel):
    """``IMAGE [n, 1]`` encoded bytes -> ``pixel_values [n, 3, H, W]``, ``pixel_mask [n, H, W]``,
    ``original_size [n, 2]`` (height, width). Decoding is ``load_image``'s, with its errors: a request with an
    unreadable image gets ``"unreadable input: image I: <problem>"``. With ``fill_batch`` (a native model of fixed
    batch b) the pixel tensors are filled to b rows with copies, as the local Detector does."""

    def setup(self) -> None:
        self.fill = self.params.get("fill_batch") == "true"
        self.resized = self.params.get("resized_size") == "true"  # segmentation: the post-processing crops masks
        self.table = normalization_table(self.metadata.preprocess)
        self.max_pixels = int(self.params.get("max_pixels") or DEFAULT_MAX_PIXELS)

    def run(self, request) -> dict[str, np.ndarray]:
        (encoded,) = self.inputs(request, P.IMAGE)
        images = []
        for index, item in enumerate(encoded.reshape(-1)):
            try:
                images.append(load_image(bytes(item), self.max_pixels, name=f"image {index}"))
            except ImageError as exc:
                raise _Unreadable(f"{P.UNREADABLE}: {exc}") from exc
        if self.fill:
            batch = preprocess_for(images, self.metadata, self.table)
        else:  # the Python model batches and fills itself: exactly one row per image here
            batch = preprocess_images(images, self.metadata.preprocess, self.metadata.static_input_size, self.table)
        outputs = {P.PIXEL_VALUES: batch.pixel_values, P.PIXEL_MASK: batch.pixel_mask,
                   P.ORIGINAL_SIZE: np.asarray(batch.original_sizes[:len(images)], dtype=np.int32).reshape(-1, 2)}
        if self.resized:
            outputs[P.RESIZED_SIZE] = np.asarray(batch.resized_sizes[:len(images)], dtype=np.int32).reshape(-1, 2)
        return outputs


class OnnxRuntimeModel(_PythonModel):
    """``NAME_model`` on the Python backend: the artifact in detr-deploy's onnxruntime backend (CPU; plugin-form
    MSDA through onnxruntime-extensions). The whole dynamic batch Triton formed (all requests of one ``execute``) is
    run in chunks of the artifact's fixed batch, the last one filled with copies."""

    def setup(self) -> None:
        from ..runtime.backends.onnxruntime import OnnxRuntimeBackend

        threads = int(self.params.get("threads") or 0) or None
        self.backend = OnnxRuntimeBackend(self.folder / "model.onnx", BackendOptions(threads=threads))
        self.output_names = [name for name in (P.LOGITS, P.PRED_BOXES, P.PRED_MASKS) if name in self.metadata.outputs]

    def execute(self, requests: list) -> list:
        feeds, responses = [], [None] * len(requests)
        for index, request in enumerate(requests):
            try:
                feeds.append((index, *self.inputs(request, P.PIXEL_VALUES, P.PIXEL_MASK)))
            except DetrDeployError as exc:
                responses[index] = self.error(str(exc))
        # a static artifact pads every image to one size: the whole batch stacks. A dynamic one (served without
        # batching) runs request by request, as the local Detector runs image by image.
        groups = [feeds] if self.metadata.static_input_size else [[feed] for feed in feeds]
        for group in groups:
            try:
                outputs = self.run_batch(np.concatenate([f[1] for f in group]), np.concatenate([f[2] for f in group]))
            except Exception as exc:  # every request of the batch shares the failure
                message = str(exc) if isinstance(exc, DetrDeployError) else f"{type(exc).__name__}: {exc}"
                for index, *_ in group:
                    responses[index] = self.error(message)
                continue
            start = 0
            for index, values, _ in group:
                responses[index] = self.response({k: v[start:start + len(values)] for k, v in outputs.items()})
                start += len(values)
        return responses

    def run_batch(self, pixel_values: np.ndarray, pixel_mask: np.ndarray) -> dict[str, np.ndarray]:
        """``[N, 3, H, W]``, ``[N, H, W]`` -> ``{"logits": [N, Q, C], "pred_boxes": [N, Q, 4]}`` (segmentation
        artifacts: also ``"pred_masks": [N, Q, H/4, W/4]``)."""
        total = len(pixel_values)
        step = self.metadata.static_batch or total
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.output_names}
        for start in range(0, total, step):
            values, mask = pixel_values[start:start + step], pixel_mask[start:start + step]
            count = len(values)
            if count < step:  # a fixed batch: fill with copies of the first image (their outputs are dropped)
                values = np.concatenate([values, np.repeat(values[:1], step - count, axis=0)])
                mask = np.concatenate([mask, np.repeat(mask[:1], step - count, axis=0)])
            out = self.backend({P.PIXEL_VALUES: values, P.PIXEL_MASK: mask})
            for name in parts:
                parts[name].append(out[name][:count])
        return {name: np.concatenate(chunks) for name, chunks in parts.items()}

    def finalize(self) -> None:
        self.backend.close()


class PostprocessModel(_PythonModel):
    """The model's outputs (n rows, or a fixed batch of which the first n are real), ``original_size [n, 2]`` and
    the optional ``THRESHOLD [n, 1]`` -> the ensemble's outputs for its ``task`` (``protocol``).

    "detection": ``logits``, ``pred_boxes`` -> detections padded to the request's largest count K (at least 1):
    ``BOXES [n, K, 4]``, ``SCORES [n, K]``, ``LABELS [n, K]`` (-1 padding), ``NAMES [n, K]`` (b"" padding),
    ``NUM_DETECTIONS [n, 1]``. "panoptic" / "instance": ``logits``, ``pred_masks``, ``resized_size [n, 2]`` ->
    ``SEGMENTATION [n, H, W]`` (0-padded to the request's largest image), ``SEGMENTS [n, 1]`` (JSON), through
    the local Detector's ``segment_image``."""

    def setup(self) -> None:
        self.default_threshold = check_threshold(float(self.params.get(P.PARAM_DEFAULT_THRESHOLD) or 0.5))
        self.task = self.params.get(P.PARAM_TASK) or "detection"
        self.mask_threshold = float(self.params.get(P.PARAM_MASK_THRESHOLD) or 0.5)
        self.overlap_threshold = float(self.params.get(P.PARAM_OVERLAP_THRESHOLD) or 0.8)

    def run(self, request) -> dict[str, np.ndarray]:
        segments = self.task in P.SEGMENTATION_TASKS
        names = (P.LOGITS, P.PRED_MASKS, P.RESIZED_SIZE) if segments else (P.LOGITS, P.PRED_BOXES)
        *arrays, sizes, thresholds = self.inputs(request, *names, P.ORIGINAL_SIZE, optional=(P.THRESHOLD,))
        sizes = sizes.reshape(-1, 2)
        count = len(sizes)
        if thresholds is None:
            thresholds = np.full(count, self.default_threshold, dtype=np.float32)
        thresholds = thresholds.reshape(-1)
        if len(thresholds) != count:
            raise ServingError(f"THRESHOLD has {len(thresholds)} values for {count} images; give one per image")
        originals = [(int(sizes[i, 0]), int(sizes[i, 1])) for i in range(count)]
        limits = [check_threshold(float(t)) for t in thresholds]
        if segments:
            from ..runtime.segmentation import segment_image

            outputs = {P.LOGITS: arrays[0], P.PRED_MASKS: arrays[1]}
            resized = arrays[2].reshape(-1, 2)
            return pack_segments([segment_image(outputs, i, (int(resized[i, 0]), int(resized[i, 1])), originals[i],
                                                self.task, limits[i], self.mask_threshold, self.overlap_threshold,
                                                self.metadata.stuff_ids, self.metadata.id2label)
                                  for i in range(count)])
        logits, boxes = arrays
        return pack_detections([postprocess_detections(logits[i:i + 1], boxes[i:i + 1], self.metadata.postprocess,
                                                       [originals[i]], limits[i], self.metadata.id2label)[0]
                                for i in range(count)])


def pack_detections(detections: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-image detections (``postprocess_detections``' dicts) -> the padded ensemble outputs (``protocol``)."""
    count = len(detections)
    width = max([1] + [len(d["scores"]) for d in detections])
    boxes = np.zeros((count, width, 4), np.float32)
    scores = np.zeros((count, width), np.float32)
    labels = np.full((count, width), -1, np.int64)
    names = np.full((count, width), b"", dtype=np.object_)
    found = np.zeros((count, 1), np.int32)
    for i, det in enumerate(detections):
        k = len(det["scores"])
        boxes[i, :k], scores[i, :k], labels[i, :k] = det["boxes"], det["scores"], det["labels"]
        names[i, :k] = [name.encode() for name in det["names"]]
        found[i, 0] = k
    return {P.BOXES: boxes, P.SCORES: scores, P.LABELS: labels, P.NAMES: names, P.NUM_DETECTIONS: found}


def unpack_detections(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The ensemble outputs of one request -> per image ``{"boxes" [K,4] float32, "scores" [K], "labels" int64 [K],
    "names" list[str]}``, the ``Detector``'s dicts."""
    found = outputs[P.NUM_DETECTIONS].reshape(-1)
    results = []
    for i, k in enumerate(found):
        k = int(k)
        names = outputs[P.NAMES][i, :k]
        results.append({"boxes": np.asarray(outputs[P.BOXES][i, :k], np.float32).reshape(k, 4),
                        "scores": np.asarray(outputs[P.SCORES][i, :k], np.float32),
                        "labels": np.asarray(outputs[P.LABELS][i, :k], np.int64),
                        "names": [n.decode() if isinstance(n, bytes) else str(n) for n in names]})
    return results


def _plain(value):
    """numpy scalars and bools of a segments_info entry as JSON's types."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    return value


def pack_segments(results: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-image segmentation results (``segment_image``'s dicts) -> ``SEGMENTATION [n, H, W]`` int32 (0-padded to
    the largest map) and ``SEGMENTS [n, 1]`` JSON bytes (``protocol``)."""
    height = max([1] + [r["segmentation"].shape[0] for r in results])
    width = max([1] + [r["segmentation"].shape[1] for r in results])
    maps = np.zeros((len(results), height, width), np.int32)
    documents = np.full((len(results), 1), b"", dtype=np.object_)
    for i, result in enumerate(results):
        h, w = result["segmentation"].shape
        maps[i, :h, :w] = result["segmentation"]
        info = [{k: _plain(v) for k, v in entry.items()} for entry in result["segments_info"]]
        documents[i, 0] = json.dumps({"height": h, "width": w, "segments_info": info,
                                      "names": list(result.get("names", []))}).encode()
    return {P.SEGMENTATION: maps, P.SEGMENTS: documents}


def unpack_segments(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The segmentation outputs of one request -> per image ``{"segmentation": int32 [H, W], "segments_info":
    [{"id", "label_id", "score", ...}], "names": [...]}``, the ``Detector``'s dicts."""
    results = []
    for i, document in enumerate(outputs[P.SEGMENTS].reshape(-1)):
        data = json.loads(document.decode() if isinstance(document, bytes) else str(document))
        segmentation = np.ascontiguousarray(outputs[P.SEGMENTATION][i, :data["height"], :data["width"]], np.int32)
        results.append({"segmentation": segmentation, "segments_info": data["segments_info"],
                        "names": data["names"]})
    return results
