# SPDX-License-Identifier: Apache-2.0
"""Progress bars for long work: tqdm on stderr when it is installed, silence otherwise (the runtime must not need
it). Torch-free."""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress(total: int, label: str, unit: str = "img", leave: bool = True) -> Iterator[Callable[[int], None]]:
    """Yield ``update(n)``; a bar is shown for two or more steps when tqdm is importable."""
    try:
        from tqdm import tqdm
    except ImportError:
        yield lambda n=1: None
        return
    bar = tqdm(total=total, desc=label, unit=unit, file=sys.stderr, leave=leave, disable=total < 2)
    try:
        yield bar.update
    finally:
        bar.close()
