# SPDX-License-Identifier: Apache-2.0
"""Deprecated entry point ``python -m detr_deploy.zoo.shapes render ...``: use ``detr-render``."""
import sys

from ...cli.render import deprecated_module_entry

sys.exit(deprecated_module_entry(sys.argv[1:]))
