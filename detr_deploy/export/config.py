# SPDX-License-Identifier: Apache-2.0
"""Typed export settings (the CLI maps its flags onto these)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .quantize import CalibrationConfig

MIN_OPSET = 17  # LayerNormalization is opset 17; GridSample 16
MAX_OPSET = 23


@dataclass
class ExportConfig:
    """What ``export_onnx`` writes.

    Attributes:
        msda: "plugin" (one TensorRT plugin node per deformable attention; default) or "gridsample" (standard
            ONNX ops only, runs anywhere). Ignored for DETR, which has no deformable attention.
        plugin_name: None = NVIDIA's ``MultiscaleDeformableAttnPlugin_TRT``; ``DetrDeployMSDA_TRT`` = ours.
        plugin_version: "2" (NVIDIA IPluginV3, TensorRT >= 10.11) or "1" (older TensorRT, JetPack 6).
        dynamic: batch, height and width are dynamic (``input_size`` is then only the tracing example).
        input_size: (H, W) of a static export; default (800, 1066) as the example of a dynamic one.
        batch: batch size of a static export.
        opset: ONNX opset (>= 17).
        precision: "fp32", "fp16" (mixed: see detr_deploy.export.precision) or "int8" (Q/DQ on top of fp16).
        msda_fp16: in FP16/INT8 graphs, run the MSDA node with half storage (default: FP32, so sampling
            locations keep full precision).
        calibration: INT8 only: the images and method for activation ranges.
        simplify: run onnxslim on the exported graph.
        max_size: upper bound of dynamic height/width.
        preprocess_in_graph: the graph takes decoded images (``image`` uint8 ``[batch, height, width, 3]``) and does
            the resize, normalisation and padding itself, bit-identical to the host's for the same output size
            (``detr_deploy.runtime.preprocess_graph``): on TensorRT the host then only decodes.
    """

    msda: str = "plugin"
    plugin_name: str | None = None
    plugin_version: str | None = None
    dynamic: bool = True
    input_size: tuple[int, int] = (800, 1066)
    batch: int = 1
    opset: int = 18
    precision: str = "fp32"
    msda_fp16: bool = False
    calibration: CalibrationConfig | None = None
    simplify: bool = True
    max_size: int = 4096
    preprocess_in_graph: bool = False

    def validate(self) -> None:
        if self.msda not in ("plugin", "gridsample"):
            raise ConfigError(f"msda must be 'plugin' or 'gridsample', got {self.msda!r}")
        if self.plugin_version not in (None, "1", "2") and not self.plugin_name:
            raise ConfigError(f"plugin_version must be '1' or '2', got {self.plugin_version!r}")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ConfigError(f"opset {self.opset} is not supported: use {MIN_OPSET}..{MAX_OPSET} (LayerNormalization "
                              f"needs 17, GridSample 16; TensorRT 10 parses up to 20-22)")
        h, w = self.input_size
        if h < 64 or w < 64 or h > self.max_size or w > self.max_size:
            raise ConfigError(f"input size {h}x{w} is impossible: height and width must be in 64..{self.max_size}")
        if self.batch < 1:
            raise ConfigError(f"batch must be >= 1, got {self.batch}")
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"precision must be fp32, fp16 or int8, got {self.precision!r}")
        if self.precision == "int8":
            if self.calibration is None:
                raise ConfigError("--precision int8 needs calibration images: pass --calib DIR")
            self.calibration.validate()
