# SPDX-License-Identifier: Apache-2.0
"""Command-line tools: detr-export, detr-build, detr-infer, detr-parity, detr-bench (argparse lives only here)."""
