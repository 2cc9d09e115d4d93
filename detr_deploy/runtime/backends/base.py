# SPDX-License-Identifier: Apache-2.0
"""The backend contract (numpy in, numpy out, context-managed)."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ...artifact.metadata import ArtifactMetadata


class Backend(ABC):
    """An artifact ready to run.

    ``backend({"pixel_values": [B,3,H,W] float32, "pixel_mask": [B,H,W] int32}) -> {"logits": ..., "pred_boxes": ...}``.
    Attributes: ``metadata`` (ArtifactMetadata), ``input_names``, ``output_names``, ``name`` (e.g. "onnxruntime").
    """

    name: str = "backend"
    metadata: ArtifactMetadata
    input_names: list[str]
    output_names: list[str]

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op unless the backend holds resources
        """Release sessions, device memory and streams."""

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run(feeds)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
