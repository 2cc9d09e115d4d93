# SPDX-License-Identifier: Apache-2.0
import sys

from .trainer import main

sys.exit(main())
