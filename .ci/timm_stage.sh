#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The timm stage: timm backbones (tests/test_timm.py) in their own virtualenv. timm imports torchvision, and no
# torchvision imports beside the default environment's torch 2.13.0 CPU wheel, so this stage pins the pair that this
# machine holds on disk (torch 2.14.1 is a CUDA build; it runs on the CPU). The default environment stays on 2.13.0.
#
# Usage:  bash .ci/timm_stage.sh [pytest args...]     (default: python -m pytest -q tests/test_timm.py)
# Environment: TIMM_VENV (default .venv-timm in the repository, gitignored).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${TIMM_VENV:-$PWD/.venv-timm}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# the pair first, pinned, so that the extras below cannot move torch
python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q -e ".[export,dev,timm]"
python - <<'EOF'
import timm
import torch
import torchvision

assert torch.__version__.startswith("2.14.1"), torch.__version__
assert torchvision.__version__.startswith("0.29.1"), torchvision.__version__
print(f"timm stage: torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}")
EOF

# the tests skip without timm; here a skip would hide a broken stage, so they must run
export DETR_DEPLOY_REQUIRE_TIMM=1
if [ "$#" -eq 0 ]; then
    set -- -q tests/test_timm.py
fi
python -m pytest "$@"
