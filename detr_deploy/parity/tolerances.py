# SPDX-License-Identifier: Apache-2.0
"""The gate's tolerances: per-precision defaults (``detr_deploy.compare.DEFAULT_TOLERANCES``) and a user's
overrides by precision or artifact file name."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..compare import DEFAULT_TOLERANCES, TOLERANCE_FIELDS, Tolerance
from ..errors import ConfigError


@dataclass
class ToleranceTable:
    """Per-precision defaults plus overrides by precision or artifact file name."""

    overrides: dict[str, dict[str, float]] = field(default_factory=dict)

    def for_artifact(self, path: str, precision: str) -> Tolerance:
        fields = asdict(DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"]))
        fields.update(self.overrides.get(precision, {}))
        fields.update(self.overrides.get(Path(path).name, {}))
        return Tolerance(**fields)


def load_tolerances(path: str | None) -> ToleranceTable:
    """Read a JSON file ``{"fp16": {"min_matched": 0.95}, "model.onnx": {"max_abs_logits": 0.01}}``.

    Keys are precisions (fp32, fp16, int8) or artifact file names; fields override the precision's defaults. Unknown
    fields and out-of-range values are errors that name the problem.
    """
    if path is None:
        return ToleranceTable()
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"tolerance file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"tolerance file {path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"tolerance file {path} must hold an object: {{precision or file name: {{field: value}}}}")
    for key, fields in data.items():
        if not isinstance(fields, dict):
            raise ConfigError(f"tolerance file {path}: {key!r} must map to an object of fields")
        unknown = sorted(set(fields) - TOLERANCE_FIELDS)
        if unknown:
            raise ConfigError(f"tolerance file {path}: unknown field(s) {unknown} under {key!r}; known: "
                              f"{sorted(TOLERANCE_FIELDS)}")
        for name, value in fields.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"tolerance file {path}: {key}.{name} must be a number >= 0, got {value!r}")
            if (name.startswith("min_") or name.endswith("_drop")) and value > 1:
                raise ConfigError(f"tolerance file {path}: {key}.{name} is a fraction (0..1), got {value}")
    return ToleranceTable({k: {f: float(v) for f, v in fields.items()} for k, fields in data.items()})
