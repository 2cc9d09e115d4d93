# SPDX-License-Identifier: Apache-2.0
"""torch -> ONNX export (MSDA as a TensorRT plugin node or portable GridSample), verification, TensorRT build."""
from .config import ExportConfig
from .onnx_export import ExportResult, export_onnx

__all__ = ["ExportConfig", "ExportResult", "export_onnx"]
