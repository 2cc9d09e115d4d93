# SPDX-License-Identifier: Apache-2.0
"""How to run an artifact: one set of options for every backend (each uses what applies to it)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError

EXECUTION_PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")


@dataclass
class BackendOptions:
    """Where and how an artifact runs.

    Attributes:
        device: "cpu", or "cuda" / "cuda:N" (GPU N). Engines always run on a GPU (``cuda`` picks GPU 0).
        execution_provider: onnxruntime only: "auto" (CPU on ``cpu``, CUDA on ``cuda``), "cpu", "cuda" or
            "tensorrt" (onnxruntime's TensorRT provider; needs onnxruntime-gpu built with TensorRT).
        threads: CPU threads of onnxruntime and of the native MSDA kernel; None = their defaults.
        plugin_libraries: TensorRT plugin libraries (.so), loaded before an engine is deserialized (default: those
            recorded when it was built) or passed to onnxruntime's TensorRT provider.
        engine_cache: folder for onnxruntime's TensorRT provider engine cache.
        provider_options: extra onnxruntime provider options, merged last.
    """

    device: str = "cpu"
    execution_provider: str = "auto"
    threads: int | None = None
    plugin_libraries: list[str] | None = None
    engine_cache: str | None = None
    provider_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_kwargs(cls, **fields: Any) -> BackendOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ConfigError(f"unknown backend option(s) {unknown}; known: {sorted(known)}")
        options = cls(**fields)
        options.validate()
        return options

    @property
    def device_id(self) -> int:
        """The GPU index of a ``cuda:N`` device (0 for ``cuda`` and ``cpu``)."""
        return int(self.device.split(":", 1)[1]) if ":" in self.device else 0

    @property
    def is_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def onnxruntime_provider(self) -> str:
        """"cpu", "cuda" or "tensorrt": the execution provider onnxruntime uses for these options."""
        if self.execution_provider != "auto":
            return self.execution_provider
        return "cuda" if self.is_gpu else "cpu"

    def validate(self) -> None:
        device = self.device
        if device != "cpu" and not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        if self.execution_provider not in EXECUTION_PROVIDERS:
            raise ConfigError(f"execution provider must be one of {', '.join(EXECUTION_PROVIDERS)}, got "
                              f"{self.execution_provider!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
