# SPDX-License-Identifier: Apache-2.0
"""Command-line tools (argparse lives only here): detr-export, detr-build, detr-infer, detr-parity, detr-bench,
detr-render, detr-train. Shared argument groups and the exit-status contract: ``args``."""
