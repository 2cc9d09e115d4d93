# SPDX-License-Identifier: Apache-2.0
"""Command-line tools (argparse lives only here): detr-export, detr-build, detr-infer, detr-parity, detr-bench,
detr-render, detr-train, detr-triton, detr-serve. Shared argument groups and the exit-status contract: ``args``."""
