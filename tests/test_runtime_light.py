# SPDX-License-Identifier: Apache-2.0
"""The runtime must install and import light: numpy + pillow, never torch or timm."""
from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "timm", "transformers", "onnx", "torchvision")


def _imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_import_runtime_imports_no_torch_or_timm():
    assert _imported_after("import detr_deploy.runtime") == set()


def test_import_package_and_list_models_stay_light():
    assert _imported_after("import detr_deploy; detr_deploy.list_models()") == set()
