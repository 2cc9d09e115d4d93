# SPDX-License-Identifier: Apache-2.0
"""Deprecated entry point ``python -m detr_deploy.train ...``: use ``detr-train``."""
import sys

from ..cli.train import deprecated_module_entry

sys.exit(deprecated_module_entry(sys.argv[1:]))
