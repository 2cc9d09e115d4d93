# SPDX-License-Identifier: Apache-2.0
"""A Triton model repository from any detr-deploy artifact (ONNX file or TensorRT engine).

Layout written under the repository folder (``NAME`` defaults to "detr"):

  NAME/config.pbtxt               ensemble: IMAGE (encoded bytes), THRESHOLD (optional) -> BOXES, SCORES, LABELS,
  NAME/1/                         NAMES, NUM_DETECTIONS, or for a segmentation task SEGMENTATION, SEGMENTS (see
                                  ``protocol``); class names in its parameters
  NAME_preprocess/config.pbtxt    Python backend: decode + resize + normalise with the artifact's recorded settings
  NAME_preprocess/1/model.py, artifact.json
  NAME_model/config.pbtxt         tensorrt_plan (model.plan), onnxruntime_onnx (model.onnx) or Python backend
  NAME_model/1/...                (model.onnx + model.py: detr-deploy's onnxruntime backend); artifact.json
  NAME_postprocess/config.pbtxt   Python backend: scores, top-k / threshold, boxes in original pixels (segmentation:
                                  the panoptic or instance maps at the original size, as the local Detector)
  NAME_postprocess/1/model.py, artifact.json

Batching. Triton's dynamic batcher stacks requests along a batch dimension, so every image of a batch must have the
same shape. A static artifact (exported with ``--input-size HxW``) pads every image to one size, so batching changes
nothing in its outputs: that is the artifact to serve. A dynamic artifact's batch would be padded to its largest
image, and padding changes Deformable DETR's detections (and DETR's, slightly): it is refused with batching on
(``max_batch_size`` > 1) and served with ``max_batch_size`` 1 (concurrency through instances).

A static artifact's batch is fixed (``--batch-size`` of the export). The Python-backend model runs any dynamic
batch in chunks of that size (filling the last chunk), so Triton batches freely. Triton's native TensorRT and
onnxruntime backends need a dynamic first dimension to batch: for a fixed batch they get ``max_batch_size: 0``
(requests of up to that many images, no dynamic batching; instances for concurrency).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..artifact.kinds import artifact_kind, sidecar_path
from ..artifact.metadata import ArtifactMetadata, read_onnx_metadata
from ..errors import ArtifactError, ConfigError
from ..files import atomic_output, check_output_dir, write_text
from . import protocol as P

MODEL_BACKENDS = ("auto", "tensorrt", "onnxruntime", "python")
PLATFORMS = {"tensorrt": "tensorrt_plan", "onnxruntime": "onnxruntime_onnx"}
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
                "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class RepositoryConfig:
    """What ``write_repository`` writes.

    Attributes:
        name: the ensemble's name; its steps are ``NAME_preprocess``, ``NAME_model``, ``NAME_postprocess``.
        max_batch_size: the largest batch Triton forms (and the most images one request may carry).
        instances: instances of each step (Python models: processes; native models: copies on each GPU).
        model_backend: "auto" (engine: tensorrt; ONNX file: python), "tensorrt", "onnxruntime" or "python".
        queue_delay_us: how long the dynamic batcher waits for more requests to fill a batch.
        default_threshold: the score threshold for requests without THRESHOLD, in [0, 1].
        plugin_libraries: TensorRT plugin libraries for onnxruntime_onnx's TensorRT accelerator (plugin-form
            graphs); engines record theirs and the server loads them (see docs/serving.md).
        threads: onnxruntime intra-op threads of the Python-backend model (None: onnxruntime's default).
        task: what the ensemble outputs for a segmentation artifact: "panoptic" (None: the default), "instance"
            or "detection" (boxes); detection artifacts serve "detection" only.
        mask_threshold, overlap_mask_area_threshold: the segmentation post-processing's (``Detector``'s) settings.
    """

    name: str = "detr"
    max_batch_size: int = 8
    instances: int = 1
    model_backend: str = "auto"
    queue_delay_us: int = 2000
    default_threshold: float = 0.5
    plugin_libraries: list[str] | None = None
    threads: int | None = None
    task: str | None = None
    mask_threshold: float = 0.5
    overlap_mask_area_threshold: float = 0.8

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"model name {self.name!r} is not usable: letters, digits, '_', '-' and '.' only, "
                              "starting with a letter or digit")
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.instances < 1:
            raise ConfigError(f"instances must be >= 1, got {self.instances}")
        if self.model_backend not in MODEL_BACKENDS:
            raise ConfigError(f"model backend must be one of {', '.join(MODEL_BACKENDS)}, got {self.model_backend!r}")
        if self.queue_delay_us < 0:
            raise ConfigError(f"queue delay must be >= 0 microseconds, got {self.queue_delay_us}")
        if not 0.0 <= self.default_threshold <= 1.0:
            raise ConfigError(f"threshold {self.default_threshold} is outside [0, 1]; scores are probabilities")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.task not in (None, "detection", *P.SEGMENTATION_TASKS):
            raise ConfigError(f"task must be detection, {' or '.join(P.SEGMENTATION_TASKS)}, got {self.task!r}")
        for what, value in (("mask threshold", self.mask_threshold),
                            ("overlap threshold", self.overlap_mask_area_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{what} {value} is outside [0, 1]")


@dataclass
class Plan:
    """The decisions for one artifact: ``backend`` "tensorrt" / "onnxruntime" / "python"; ``batch`` the
    ``max_batch_size`` of every model (0: Triton does not batch); ``images_per_request`` the most images a
    request may carry; ``task`` what the ensemble outputs ("detection", "panoptic", "instance"); ``notes`` what
    the caller should tell the user."""

    artifact: Path
    kind: str
    metadata: ArtifactMetadata
    backend: str
    batch: int
    images_per_request: int
    task: str = "detection"
    notes: list[str] = field(default_factory=list)

    @property
    def segments(self) -> bool:
        """The ensemble outputs segmentation maps (the model step then also gives ``pred_masks``)."""
        return self.task in P.SEGMENTATION_TASKS

    @property
    def static_batch(self) -> int | None:
        return self.metadata.static_batch


def read_metadata(artifact: str | os.PathLike) -> tuple[str, ArtifactMetadata]:
    """("onnx" | "engine", metadata) of an artifact: an ONNX file's embedded document, an engine's sidecar."""
    kind = artifact_kind(artifact)
    if kind == "engine":
        sidecar = sidecar_path(artifact)
        if not sidecar.is_file():
            raise ArtifactError(f"{artifact} has no sidecar {sidecar.name} with its metadata; build engines with "
                                "detr-build")
        return kind, ArtifactMetadata.from_json(sidecar.read_text(), str(sidecar))
    from ..runtime.backends.onnxruntime import load_onnx  # onnx, only for ONNX files

    return kind, read_onnx_metadata(load_onnx(artifact), str(artifact))


def plan_repository(artifact: str | os.PathLike, config: RepositoryConfig) -> Plan:
    """Check the artifact against the configuration and decide backend and batching (see the module docstring).
    ConfigError / ArtifactError name the problem and the fix."""
    config.validate()
    kind, metadata = read_metadata(artifact)
    if metadata.task == "segmentation":
        task = config.task or "panoptic"
    elif config.task not in (None, "detection"):
        raise ConfigError(f"{artifact} is a detection artifact; --task {config.task} needs a segmentation artifact "
                          "(DETR panoptic)")
    else:
        task = "detection"
    backend = config.model_backend
    if backend == "auto":
        backend = "tensorrt" if kind == "engine" else "python"
    if kind == "engine" and backend != "tensorrt":
        raise ConfigError(f"{artifact} is a TensorRT engine; only --model-backend tensorrt serves it (give the ONNX "
                          "file for onnxruntime or python)")
    if kind == "onnx" and backend == "tensorrt":
        raise ConfigError(f"{artifact} is an ONNX file; build an engine with detr-build for --model-backend tensorrt, "
                          "or use onnxruntime / python")
    if metadata.static_input_size is None and config.max_batch_size > 1:
        raise ConfigError(f"{artifact} has dynamic shapes: Triton would pad the images of a batch to the largest, "
                          "which changes Deformable DETR's detections. Export a static artifact (detr-export "
                          "--input-size HxW) to batch, or pass --max-batch-size 1")
    static_batch = metadata.static_batch
    notes = []
    if backend == "python" or static_batch is None:
        batch = config.max_batch_size
        images = batch
    else:
        batch, images = 0, static_batch
        notes.append(f"the artifact's batch is fixed at {static_batch}: Triton's {PLATFORMS[backend]} backend cannot "
                     f"batch requests into it, so every model gets max_batch_size 0 (requests of up to "
                     f"{static_batch} image(s); --instances for concurrency; --model-backend python batches)")
    if backend == "onnxruntime" and metadata.msda is not None and metadata.msda.form == "plugin":
        libraries = config.plugin_libraries or ([metadata.msda.plugin_library] if metadata.msda.plugin_library else [])
        notes.append("plugin-form MSDA: onnxruntime_onnx runs it through the TensorRT execution provider "
                     + (f"with {', '.join(libraries)}" if libraries else "and TensorRT's built-in plugin")
                     + " (GPU only; a CPU server uses --model-backend python)")
    return Plan(Path(artifact), kind, metadata, backend, batch, images, task, notes)


# --- config.pbtxt text ----------------------------------------------------------------------------------------------
def _dims(dims) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor(name: str, data_type: str, dims, optional: bool = False) -> str:
    extra = " optional: true" if optional else ""
    return f'  {{ name: "{name}" data_type: {data_type} dims: {_dims(dims)}{extra} }}'


def _tensors(key: str, tensors: list[str]) -> str:
    return f"{key} [\n" + ",\n".join(tensors) + "\n]"


def _quote(text: str) -> str:
    """A protobuf text-format string literal (UTF-8 kept as is; JSON's \\u escapes are not text format)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _parameters(values: dict[str, str]) -> str:
    return "\n".join(f"parameters {{ key: {_quote(k)} value: {{ string_value: {_quote(v)} }} }}"
                      for k, v in values.items())


def _header(plan: Plan, what: str) -> str:
    return (f"# Written by detr-triton (detr-deploy {__version__}) from {plan.artifact.name} "
            f"({plan.metadata.variant}): {what}\n")


def _dim(value) -> int:
    return value if isinstance(value, int) and value > 0 else -1


def _shapes(plan: Plan) -> dict[str, list[int]]:
    """Per-image dims (no batch dimension) of the tensors between the steps."""
    md = plan.metadata
    height, width = md.static_input_size or (-1, -1)
    shapes = {P.PIXEL_VALUES: [3, height, width], P.PIXEL_MASK: [height, width]}
    for name in _model_outputs(plan):
        shapes[name] = [_dim(d) for d in md.outputs[name]["shape"][1:]]
    return shapes


def _model_outputs(plan: Plan) -> list[str]:
    """The model step's outputs: the artifact's (``pred_masks`` too for a segmentation artifact)."""
    names = [P.LOGITS, P.PRED_BOXES]
    return names + [P.PRED_MASKS] if P.PRED_MASKS in plan.metadata.outputs else names


def _types(plan: Plan) -> dict[str, str]:
    """Triton data types of the model's inputs and outputs, from the metadata (fp32 / int32 by default)."""
    md, types = plan.metadata, {}
    for name, default in ((P.PIXEL_VALUES, "float32"), (P.PIXEL_MASK, "int32")):
        types[name] = TRITON_TYPES[(md.inputs.get(name) or {}).get("dtype", default)]
    for name in _model_outputs(plan):
        types[name] = TRITON_TYPES[(md.outputs.get(name) or {}).get("dtype", "float32")]
    return types


def _batched(plan: Plan, dims: list[int], fixed: int | None = None) -> list[int]:
    """Dims as the config states them: per image when Triton batches, else with the leading batch dimension
    (``fixed`` where the model needs exactly that many)."""
    return list(dims) if plan.batch > 0 else [fixed or -1] + list(dims)


def _batching(plan: Plan, config: RepositoryConfig, preferred: bool) -> str:
    if plan.batch <= 1:
        return ""
    sizes = []
    if preferred:  # powers of two up to the maximum, multiples of a fixed artifact batch (no half-filled chunks)
        step = plan.static_batch or 1
        sizes = sorted({s for s in [2 ** i for i in range(1, 12)] + [plan.batch] if s <= plan.batch and s % step == 0})
    preferred_text = f"preferred_batch_size: {_dims(sizes)} " if sizes else ""
    return f"dynamic_batching {{ {preferred_text}max_queue_delay_microseconds: {config.queue_delay_us} }}\n"


def _instances(config: RepositoryConfig, kind: str) -> str:
    return f"instance_group [ {{ kind: {kind} count: {config.instances} }} ]\n"


def preprocess_config(plan: Plan, config: RepositoryConfig) -> str:
    shapes, types = _shapes(plan), _types(plan)
    fill = plan.batch == 0 and plan.static_batch is not None  # the native model needs exactly its fixed batch
    fixed = plan.static_batch if fill else None
    outputs = [_tensor(P.PIXEL_VALUES, types[P.PIXEL_VALUES], _batched(plan, shapes[P.PIXEL_VALUES], fixed)),
               _tensor(P.PIXEL_MASK, types[P.PIXEL_MASK], _batched(plan, shapes[P.PIXEL_MASK], fixed)),
               _tensor(P.ORIGINAL_SIZE, "TYPE_INT32", _batched(plan, [2]))]
    if plan.segments:
        outputs.append(_tensor(P.RESIZED_SIZE, "TYPE_INT32", _batched(plan, [2])))
    return (_header(plan, "decode, resize, normalise") + f'name: "{config.name}_preprocess"\nbackend: "python"\n'
            f"max_batch_size: {plan.batch}\n"
            + _tensors("input", [_tensor(P.IMAGE, "TYPE_STRING", _batched(plan, [1]))]) + "\n"
            + _tensors("output", outputs) + "\n" + _batching(plan, config, preferred=False)
            + _instances(config, "KIND_CPU") + _parameters({"fill_batch": "true" if fill else "false",
                                                           "resized_size": "true" if plan.segments else "false"})
            + "\n")


def postprocess_config(plan: Plan, config: RepositoryConfig) -> str:
    shapes, types = _shapes(plan), _types(plan)
    fixed = plan.static_batch if plan.batch == 0 else None
    inputs = [_tensor(n, types[n], _batched(plan, shapes[n], fixed)) for n in _postprocess_inputs(plan)]
    sizes = [P.ORIGINAL_SIZE, P.RESIZED_SIZE] if plan.segments else [P.ORIGINAL_SIZE]
    inputs += [_tensor(n, "TYPE_INT32", _batched(plan, [2])) for n in sizes]
    inputs.append(_tensor(P.THRESHOLD, "TYPE_FP32", _batched(plan, [1]), optional=True))
    params = {P.PARAM_DEFAULT_THRESHOLD: repr(float(config.default_threshold)), P.PARAM_TASK: plan.task,
              P.PARAM_MASK_THRESHOLD: repr(float(config.mask_threshold)),
              P.PARAM_OVERLAP_THRESHOLD: repr(float(config.overlap_mask_area_threshold))}
    what = (f"{plan.task} segmentation maps at the original size" if plan.segments
            else "scores, top-k and threshold, boxes in original pixels")
    return (_header(plan, what) + f'name: "{config.name}_postprocess"\nbackend: "python"\n'
            f"max_batch_size: {plan.batch}\n" + _tensors("input", inputs) + "\n"
            + _tensors("output", _ensemble_outputs(plan)) + "\n" + _batching(plan, config, preferred=False)
            + _instances(config, "KIND_CPU") + _parameters(params) + "\n")


def _postprocess_inputs(plan: Plan) -> list[str]:
    return [P.LOGITS, P.PRED_MASKS] if plan.segments else [P.LOGITS, P.PRED_BOXES]


def _ensemble_outputs(plan: Plan) -> list[str]:
    if plan.segments:
        return [_tensor(P.SEGMENTATION, "TYPE_INT32", _batched(plan, [-1, -1])),
                _tensor(P.SEGMENTS, "TYPE_STRING", _batched(plan, [1]))]
    return [_tensor(P.BOXES, "TYPE_FP32", _batched(plan, [-1, 4])),
            _tensor(P.SCORES, "TYPE_FP32", _batched(plan, [-1])),
            _tensor(P.LABELS, "TYPE_INT64", _batched(plan, [-1])),
            _tensor(P.NAMES, "TYPE_STRING", _batched(plan, [-1])),
            _tensor(P.NUM_DETECTIONS, "TYPE_INT32", _batched(plan, [1]))]


def model_config(plan: Plan, config: RepositoryConfig) -> str:
    shapes, types = _shapes(plan), _types(plan)
    fixed = plan.static_batch if plan.batch == 0 else None
    inputs = [_tensor(n, types[n], _batched(plan, shapes[n], fixed)) for n in (P.PIXEL_VALUES, P.PIXEL_MASK)]
    outputs = [_tensor(n, types[n], _batched(plan, shapes[n], fixed)) for n in _model_outputs(plan)]
    body = _tensors("input", inputs) + "\n" + _tensors("output", outputs) + "\n"
    name = f'name: "{config.name}_model"\n'
    if plan.backend == "python":
        params = {"threads": str(config.threads or 0)}
        return (_header(plan, "the artifact in detr-deploy's onnxruntime backend (CPU)") + name + 'backend: "python"\n'
                f"max_batch_size: {plan.batch}\n" + body + _batching(plan, config, preferred=True)
                + _instances(config, "KIND_CPU") + _parameters(params) + "\n")
    batching = _batching(plan, config, preferred=True)
    if plan.backend == "tensorrt":
        info = plan.metadata.tensorrt or {}
        libraries = info.get("plugin_libraries") or []
        comment = ("# TensorRT plugin libraries are loaded by the server, not by this file: tritonserver "
                   "--backend-config=tensorrt,plugins=\"" + ";".join(libraries or ["/path/libplugin.so"]) + "\" (or "
                   "LD_PRELOAD). NVIDIA's built-in MSDA plugin needs nothing when the engine's TensorRT version "
                   f"({info.get('version', 'unknown')}) is the server's.\n"
                   "# Engines are specific to a GPU: add model_<cc>.plan files and cc_model_filenames entries for "
                   "other GPUs.\n")
        capability = info.get("compute_capability")
        cc = f'cc_model_filenames {{ key: "{capability}" value: "model.plan" }}\n' if capability else ""
        return (_header(plan, f"TensorRT engine built with TensorRT {info.get('version', '?')} on "
                              f"{info.get('gpu_name') or 'an unrecorded GPU'}") + comment + name
                + 'platform: "tensorrt_plan"\ndefault_model_filename: "model.plan"\n' + cc
                + f"max_batch_size: {plan.batch}\n" + body + batching + _instances(config, "KIND_GPU"))
    precision = "FP16" if plan.metadata.precision in ("fp16", "int8") else "FP32"
    accelerator = ['name : "tensorrt"', f'parameters {{ key: "precision_mode" value: "{precision}" }}']
    msda = plan.metadata.msda
    if msda is not None and msda.form == "plugin":
        libraries = config.plugin_libraries or ([msda.plugin_library] if msda.plugin_library else [])
        if libraries:  # the TensorRT execution provider loads them before it parses the plugin nodes
            paths = ";".join(libraries)
            accelerator.append(f'parameters {{ key: "trt_extra_plugin_lib_paths" value: "{paths}" }}')
    optimization = ("optimization { execution_accelerators { gpu_execution_accelerator : [ { "
                    + " ".join(accelerator) + " } ] } }\n")
    return (_header(plan, "the ONNX file in Triton's onnxruntime backend, TensorRT execution provider") + name
            + 'platform: "onnxruntime_onnx"\ndefault_model_filename: "model.onnx"\n'
            + f"max_batch_size: {plan.batch}\n" + body + batching + _instances(config, "KIND_GPU") + optimization)


def ensemble_config(plan: Plan, config: RepositoryConfig) -> str:
    name = config.name
    inputs = [_tensor(P.IMAGE, "TYPE_STRING", _batched(plan, [1])),
              _tensor(P.THRESHOLD, "TYPE_FP32", _batched(plan, [1]), optional=True)]

    def step(model: str, inputs: list[str], outputs: list[str]) -> str:
        maps = [f'input_map {{ key: "{t}" value: "{t}" }}' for t in inputs]
        maps += [f'output_map {{ key: "{t}" value: "{t}" }}' for t in outputs]
        return f'    {{ model_name: "{model}" model_version: -1 ' + " ".join(maps) + " }"

    sizes = [P.ORIGINAL_SIZE, P.RESIZED_SIZE] if plan.segments else [P.ORIGINAL_SIZE]
    steps = [step(f"{name}_preprocess", [P.IMAGE], [P.PIXEL_VALUES, P.PIXEL_MASK, *sizes]),
             step(f"{name}_model", [P.PIXEL_VALUES, P.PIXEL_MASK], _postprocess_inputs(plan)),
             step(f"{name}_postprocess", [*_postprocess_inputs(plan), *sizes, P.THRESHOLD],
                  list(P.outputs_for(plan.task)))]
    md = plan.metadata
    params = {P.PARAM_ID2LABEL: json.dumps({str(k): v for k, v in sorted(md.id2label.items())},
                                             ensure_ascii=False),
              P.PARAM_MAX_IMAGES: str(plan.images_per_request),
              P.PARAM_DEFAULT_THRESHOLD: repr(float(config.default_threshold)),
              P.PARAM_VARIANT: md.variant, P.PARAM_TASK: plan.task, P.PARAM_MODEL: f"{name}_model",
              P.PARAM_STUFF_IDS: json.dumps(sorted(int(i) for i in md.stuff_ids or ())),
              "detr_deploy_version": __version__}
    what = "segments" if plan.segments else "detections"
    return (_header(plan, f"images in, {what} out") + f'name: "{name}"\nplatform: "ensemble"\n'
            f"max_batch_size: {plan.batch}\n" + _tensors("input", inputs) + "\n"
            + _tensors("output", _ensemble_outputs(plan)) + "\n"
            + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n" + _parameters(params) + "\n")


# --- model.py of the Python-backend models --------------------------------------------------------------------------
MODEL_PY = '''# Written by detr-triton (detr-deploy {version}). Triton's Python backend runs this file; the work is done
# by detr_deploy.serving.python_models with this model's config.pbtxt and the artifact.json beside this file.
import os
import site
import sys

# The backend's embedded Python ignores PYTHONPATH: add its folders as site folders (their .pth files too, so an
# editable install is found), ahead of the system's, before importing detr_deploy.
_system = list(sys.path)
for _folder in filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)):
    site.addsitedir(_folder)
sys.path[:] = [p for p in sys.path if p not in _system] + _system

from detr_deploy.serving.python_models import {cls} as TritonPythonModel  # noqa: E402,F401
'''


def model_py(cls: str) -> str:
    return MODEL_PY.format(version=__version__, cls=cls)


# --- writing --------------------------------------------------------------------------------------------------------
def _copy(source: Path, target: Path) -> None:
    with atomic_output(target) as tmp:
        shutil.copyfile(source, tmp)


def write_repository(artifact: str | os.PathLike, output: str | os.PathLike, config: RepositoryConfig | None = None,
                     log: Callable[[str], None] = lambda message: None) -> Plan:
    """Write the four models of ``config.name`` into the repository folder ``output`` (created if needed; other
    models in it are left alone, earlier versions of these four are replaced whole). Returns the :class:`Plan`.

    Each model is assembled in a temporary folder inside ``output`` and renamed into place, so an interrupted run
    leaves the previous models, never half-written ones.
    """
    config = config or RepositoryConfig()
    repo = check_output_dir(output, "model repository")
    plan = plan_repository(artifact, config)
    for note in plan.notes:
        log(f"note: {note}")
    repo.mkdir(parents=True, exist_ok=True)
    metadata_json = json.dumps(json.loads(plan.metadata.to_json()), indent=2, sort_keys=True)
    name = config.name
    models: dict[str, Callable[[Path], None]] = {}

    def python_model(cls: str, text: str) -> Callable[[Path], None]:
        def fill(folder: Path) -> None:
            write_text(folder / "config.pbtxt", text)
            write_text(folder / "1" / "model.py", model_py(cls))
            write_text(folder / "1" / P.METADATA_FILE, metadata_json)
        return fill

    def main_model(folder: Path) -> None:
        write_text(folder / "config.pbtxt", model_config(plan, config))
        version = folder / "1"
        if plan.backend == "tensorrt":
            _copy(plan.artifact, version / "model.plan")
            _copy(sidecar_path(plan.artifact), version / "model.plan.json")
        else:
            _copy(plan.artifact, version / "model.onnx")
        if plan.backend == "python":
            write_text(version / "model.py", model_py("OnnxRuntimeModel"))
        write_text(version / P.METADATA_FILE, metadata_json)

    def ensemble(folder: Path) -> None:
        write_text(folder / "config.pbtxt", ensemble_config(plan, config))
        (folder / "1").mkdir(parents=True, exist_ok=True)  # Triton wants a version folder, empty for ensembles

    models[f"{name}_preprocess"] = python_model("PreprocessModel", preprocess_config(plan, config))
    models[f"{name}_model"] = main_model
    models[f"{name}_postprocess"] = python_model("PostprocessModel", postprocess_config(plan, config))
    models[name] = ensemble
    staging = Path(tempfile.mkdtemp(dir=repo, prefix=".detr-triton-"))
    try:
        for model, fill in models.items():
            fill(staging / model)
        for model in models:
            target = repo / model
            if target.exists():
                old = staging / f"{model}.old"
                os.replace(target, old)
                log(f"replaced {target}")
            os.replace(staging / model, target)  # the model folders were made with normal modes (mkdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"{name}: ensemble of {name}_preprocess -> {name}_model ({_backend_label(plan)}) -> {name}_postprocess, "
        f"max_batch_size {plan.batch}, {config.instances} instance(s) -> {repo}")
    return plan


def _backend_label(plan: Plan) -> str:
    return "python: detr-deploy's onnxruntime backend" if plan.backend == "python" else PLATFORMS[plan.backend]

