#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A tritonserver for the serving tests: the nvidia-pytriton wheel (tritonserver with the Python backend) in its own
# virtualenv, because that wheel's Python package pins numpy < 2 while detr-deploy's environment has numpy 2; the
# binary itself uses neither.
#
# The same virtualenv is the Python environment of the server's Python-backend models: numpy < 2 (tritonserver
# 2.51's Python backend corrupts string tensors under numpy 2), onnxruntime, onnxruntime-extensions, onnx, pillow.
# detr_deploy itself comes from the checkout (detr-serve and the tests put it on the server's PYTHONPATH).
#
# Usage:  eval "$(bash .ci/triton_server.sh [PYTHON])"
#   PYTHON: the interpreter whose environment has detr-deploy (default: python3 on PATH). Its minor version picks
#   the Python backend stub (the stub embeds the system's libpython of that version and runs model.py with it).
# Prints `export TRITONSERVER=...`, `export TRITON_BACKEND_DIR=...` and `export TRITON_PYTHONPATH=...`;
# tests/test_serving.py and detr-serve read them.
# Environment: TRITON_VENV (default .venv-triton in the repository, gitignored), NVIDIA_PYTRITON (pip requirement,
# default the version verified here).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${1:-python3}"
VENV="${TRITON_VENV:-$PWD/.venv-triton}"
REQUIREMENT="${NVIDIA_PYTRITON:-nvidia-pytriton==0.7.0}"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" >&2
fi
# --no-deps: only the wheel's bundled binary and backend are needed, not its Python package's numpy < 2 stack
"$VENV/bin/python" -m pip install -q --no-deps "$REQUIREMENT" >&2
# what model.py imports inside the server (the versions the runtime is tested with, numpy 1.x for the stub)
"$VENV/bin/python" -m pip install -q "numpy<2" "onnxruntime>=1.18" "onnxruntime-extensions>=0.12" "onnx>=1.16" \
    "pillow>=9.5" >&2

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
ROOT="$SITE/pytriton/tritonserver"
BINARY="$ROOT/bin/tritonserver"
BACKENDS="$ROOT/backends"
[ -x "$BINARY" ] || { echo "error: $BINARY is missing from $REQUIREMENT" >&2; exit 2; }

# The Python backend looks for triton_python_backend_stub in its own folder; the wheel keeps one per Python version.
MINOR="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
STUB="$ROOT/python_backend_stubs/$MINOR/triton_python_backend_stub"
[ -x "$STUB" ] || { echo "error: $REQUIREMENT has no Python backend stub for Python $MINOR" >&2; exit 2; }
cp -f "$STUB" "$BACKENDS/python/triton_python_backend_stub"

echo "export TRITONSERVER=$BINARY"
echo "export TRITON_BACKEND_DIR=$BACKENDS"
echo "export TRITON_PYTHONPATH=$SITE"
