# SPDX-License-Identifier: Apache-2.0
"""ONNX -> TensorRT engine for TensorRT 10.x and 11.x, plus a sidecar JSON with everything the runtime needs.

TensorRT 10.x: the network is weakly typed by default and FP16/INT8 builder flags follow the ONNX file's precision
metadata (``strongly_typed=True`` uses the graph's types instead). TensorRT 11.x is strongly typed only (the
precision flags are gone): precision comes from the graph, as exported by ``detr-export --precision``.
Everything except :func:`build_engine` is pure Python and tested without TensorRT.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._optional import require
from ..artifact.kinds import sidecar_path
from ..artifact.metadata import ArtifactMetadata, read_onnx_metadata
from ..artifact.msda import NVIDIA_PLUGIN, OUR_PLUGIN_LIBRARY
from ..artifact.tensorrt import describe_gpu, engine_metadata, load_plugin_libraries
from ..errors import ArtifactError, ConfigError
from ..files import atomic_output, check_output_file, write_bytes, write_json
from ..runtime.images import MIN_SIDE
from ..runtime.preprocess import IMAGE_INPUT

DEFAULT_OPT = (800, 1066)
DEFAULT_IMAGE_OPT = (480, 640)  # in-graph pre-processing: decoded image sizes
DEFAULT_IMAGE_MAX = (4096, 4096)
DEFAULT_MAX = (1333, 1333)  # shortest edge 800 / longest 1333, both orientations
NVIDIA_V2_MIN_VERSION = (10, 11)


@dataclass(frozen=True)
class Profile:
    """Optimization profile: (batch, height, width) at min, opt and max; ``images``: of the decoded images an
    artifact with in-graph pre-processing takes (its ``image`` input), else of ``pixel_values``/``pixel_mask``."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]
    images: bool = False

    def input_shapes(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """Per input name: (min, opt, max) full shapes."""
        if self.images:
            return {IMAGE_INPUT: tuple((b, h, w, 3) for b, h, w in (self.min, self.opt, self.max))}

        def values(b, h, w):
            return (b, 3, h, w)

        def mask(b, h, w):
            return (b, h, w)

        return {"pixel_values": (values(*self.min), values(*self.opt), values(*self.max)),
                "pixel_mask": (mask(*self.min), mask(*self.opt), mask(*self.max))}

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max),
                "inputs": {k: [list(s) for s in v] for k, v in self.input_shapes().items()}}


def parse_shapes(text: str) -> Profile:
    """"BxHxW/BxHxW/BxHxW" (min/opt/max), e.g. "1x320x320/1x800x1066/4x1333x1333"."""
    parts = text.split("/")
    if len(parts) != 3:
        raise ConfigError(f"--shapes takes min/opt/max as BxHxW/BxHxW/BxHxW, got {text!r}")
    triples = []
    for part in parts:
        try:
            b, h, w = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--shapes: {part!r} is not BxHxW (batch x height x width)") from None
        triples.append((b, h, w))
    return Profile(*triples)


def derive_profile(metadata: ArtifactMetadata, shapes: Profile | None = None) -> Profile:
    """The profile to build: the user's (validated) or the default for the artifact.

    Static artifacts: their fixed shape. Dynamic: batch 1, height/width from the model's minimum to 1333, optimised
    for 800x1066 (a 4:3 photo under the reference resize rule). In-graph pre-processing: the decoded images' sizes,
    8x8 to 4096x4096, optimised for a 480x640 photo (the front end's intermediates grow with the reduction factor).
    """
    if metadata.preprocess.in_graph:
        return _image_profile(metadata, shapes)
    batch, _, height, width = metadata.inputs["pixel_values"]["shape"]
    if isinstance(height, int) and isinstance(width, int):
        fixed = (batch if isinstance(batch, int) else 1, height, width)
        if shapes is not None and (shapes.min != shapes.max or shapes.min[1:] != fixed[1:] or
                                   (isinstance(batch, int) and shapes.min[0] != batch)):
            raise ConfigError(f"this ONNX file has a static input {fixed[0]}x3x{height}x{width}; --shapes cannot "
                              "change it (export with --dynamic for a range of sizes)")
        return shapes or Profile(fixed, fixed, fixed)
    low = int(metadata.extra.get("min_size", 65))
    high = int(metadata.extra.get("max_size", 4096))
    profile = shapes or Profile((1, low, low), (1, *DEFAULT_OPT), (1, *DEFAULT_MAX))
    for axis, name in ((0, "batch"), (1, "height"), (2, "width")):
        lo, mid, hi = profile.min[axis], profile.opt[axis], profile.max[axis]
        if not lo <= mid <= hi:
            raise ConfigError(f"--shapes: {name} must satisfy min <= opt <= max, got {lo}/{mid}/{hi}")
        if axis == 0 and lo < 1:
            raise ConfigError("--shapes: batch must be >= 1")
        if axis > 0 and (lo < low or hi > high):
            raise ConfigError(f"--shapes: {name} {lo}..{hi} is outside what this model accepts ({low}..{high})")
    if isinstance(batch, int) and (profile.min[0] != batch or profile.max[0] != batch):
        raise ConfigError(f"this ONNX file has a static batch of {batch}")
    return profile


def _image_profile(metadata: ArtifactMetadata, shapes: Profile | None) -> Profile:
    batch = metadata.inputs[IMAGE_INPUT]["shape"][0]
    fixed = batch if isinstance(batch, int) else 1
    profile = shapes or Profile((fixed, MIN_SIDE, MIN_SIDE), (fixed, *DEFAULT_IMAGE_OPT), (fixed, *DEFAULT_IMAGE_MAX))
    profile = Profile(profile.min, profile.opt, profile.max, images=True)
    for axis, name in ((0, "batch"), (1, "image height"), (2, "image width")):
        lo, mid, hi = profile.min[axis], profile.opt[axis], profile.max[axis]
        if not lo <= mid <= hi:
            raise ConfigError(f"--shapes: {name} must satisfy min <= opt <= max, got {lo}/{mid}/{hi}")
        if lo < (1 if axis == 0 else MIN_SIDE):
            raise ConfigError(f"--shapes: {name} must be >= {1 if axis == 0 else MIN_SIDE}")
    if isinstance(batch, int) and (profile.min[0] != batch or profile.max[0] != batch):
        raise ConfigError(f"this ONNX file has a static batch of {batch}")
    return profile


def tensorrt_version(trt_version: str) -> tuple[int, int]:
    major, minor = (int(v) for v in trt_version.split(".")[:2])
    return major, minor


def check_plugins(metadata: ArtifactMetadata, trt_version: str, plugin_libraries: list[str]) -> None:
    """Refuse, before parsing, a plugin-form model that this TensorRT cannot build, with the fix."""
    msda = metadata.msda
    if msda is None or msda.form != "plugin":
        return
    version = tensorrt_version(trt_version)
    if msda.plugin_name == NVIDIA_PLUGIN and msda.plugin_version == "2" and version < NVIDIA_V2_MIN_VERSION:
        raise ArtifactError(
            f"the model uses {NVIDIA_PLUGIN} version 2 (IPluginV3), which TensorRT {trt_version} does not have "
            "(added in 10.11): re-export with --plugin-version 1, or with --msda-plugin-name DetrDeployMSDA_TRT and "
            "build with --plugins libdetr_deploy_plugins.so (works on TensorRT 10.0+)")
    if msda.plugin_name != NVIDIA_PLUGIN and not plugin_libraries:
        raise ArtifactError(
            f"the model uses plugin {msda.plugin_name} version {msda.plugin_version} (namespace "
            f"'{msda.plugin_namespace or ''}'), which is not part of TensorRT: pass its library with --plugins "
            f"({msda.plugin_library or OUR_PLUGIN_LIBRARY}; build ours with cmake -S plugins -B "
            "plugins/build)")


def explain_parser_errors(errors: list[str], metadata: ArtifactMetadata, plugin_libraries: list[str]) -> str:
    """TensorRT's parser errors, plus the fix when a plugin was not found."""
    text = "\n  ".join(errors)
    msda = metadata.msda
    if msda is not None and msda.form == "plugin" and any("plugin" in e.lower() and "not" in e.lower()
                                                          for e in errors):
        where = ("libnvinfer_plugin (loaded automatically; version 2 needs TensorRT >= 10.11)"
                 if msda.plugin_name == NVIDIA_PLUGIN else (msda.plugin_library or "its plugin library"))
        loaded = ", ".join(plugin_libraries) or "none"
        text += (f"\nThe model's MSDA plugin is {msda.plugin_name} version {msda.plugin_version} namespace "
                 f"'{msda.plugin_namespace or ''}', provided by {where}. Libraries loaded: {loaded}. "
                 "Pass --plugins LIB.so, or re-export with another --plugin-version / --msda-plugin-name.")
    return text


def trtexec_command(onnx_path: str, engine_path: str, profile: Profile, precision: str, major: int,
                    plugin_libraries: list[str], workspace_mib: int | None, timing_cache: str | None,
                    strongly_typed: bool) -> str:
    """The equivalent trtexec command line."""
    def shapes(index: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in dims[index])}"
                        for name, dims in profile.input_shapes().items())

    parts = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}", f"--minShapes={shapes(0)}",
             f"--optShapes={shapes(1)}", f"--maxShapes={shapes(2)}"]
    if major < 11:
        if strongly_typed:
            parts.append("--stronglyTyped")
        elif precision in ("fp16", "int8"):
            parts.append("--fp16")
            if precision == "int8":
                parts.append("--int8")
    parts += [f"--dynamicPlugins={lib}" for lib in plugin_libraries]
    if workspace_mib:
        parts.append(f"--memPoolSize=workspace:{workspace_mib}M")
    if timing_cache:
        parts.append(f"--timingCacheFile={timing_cache}")
    return " ".join(parts)


@dataclass
class BuildResult:
    engine: Path
    sidecar: Path
    metadata: ArtifactMetadata
    trtexec: str


def write_engine(engine_bytes: bytes, output: Path, metadata: ArtifactMetadata) -> Path:
    """Engine and sidecar, each written atomically; the sidecar last, so an engine never lacks metadata."""
    write_bytes(output, engine_bytes)
    sidecar = sidecar_path(output)
    write_json(sidecar, json.loads(metadata.to_json()))
    return sidecar


def build_engine(onnx_path: str | os.PathLike, output: str | os.PathLike | None = None,
                 plugin_libraries: list[str] | None = None, shapes: Profile | None = None,
                 workspace_mib: int | None = None, timing_cache: str | None = None, strongly_typed: bool = False,
                 device_id: int = 0, log: Callable[[str], None] = print) -> BuildResult:
    """Build a TensorRT engine from a detr-export ONNX file (needs TensorRT and a GPU)."""
    onnx = require("onnx", "reading the ONNX file")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path}: no such file")
    metadata = read_onnx_metadata(onnx.load(str(onnx_path), load_external_data=False), str(onnx_path))
    output = check_output_file(Path(output) if output else onnx_path.with_suffix(".engine"), "engine")
    plugin_libraries = [str(Path(p).resolve()) for p in (plugin_libraries or [])]
    profile = derive_profile(metadata, shapes)
    trt = require("tensorrt", "building TensorRT engines")
    major, _ = tensorrt_version(trt.__version__)
    check_plugins(metadata, trt.__version__, plugin_libraries)

    logger = trt.Logger(trt.Logger.WARNING)
    load_plugin_libraries(trt, plugin_libraries, logger)
    builder = trt.Builder(logger)
    typed = major >= 11 or strongly_typed
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if typed and major < 11 else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    log(f"parsing {onnx_path} with TensorRT {trt.__version__}...")
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ArtifactError(f"TensorRT could not parse {onnx_path}:\n  "
                            + explain_parser_errors(errors, metadata, plugin_libraries))
    config = builder.create_builder_config()
    if workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if not typed and metadata.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        if metadata.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    trt_profile = builder.create_optimization_profile()
    for name, (low, mid, high) in profile.input_shapes().items():
        trt_profile.set_shape(name, low, mid, high)
    config.add_optimization_profile(trt_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    log(f"building (profile min {profile.min} opt {profile.opt} max {profile.max}, "
        f"{'strongly typed' if typed else 'precision flags: ' + metadata.precision})...")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ArtifactError("TensorRT failed to build the engine (see its log above)")
    if cache_path is not None:
        with atomic_output(cache_path) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    engine_meta = engine_metadata(metadata, trt.__version__, describe_gpu(device_id), plugin_libraries,
                                  profile.to_dict())
    sidecar = write_engine(bytes(serialized), output, engine_meta)
    command = trtexec_command(str(onnx_path), str(output), profile, metadata.precision, major, plugin_libraries,
                              workspace_mib, timing_cache, strongly_typed)
    log(f"wrote {output} and {sidecar.name}")
    log(f"equivalent trtexec command:\n  {command}")
    return BuildResult(output, sidecar, engine_meta, command)
