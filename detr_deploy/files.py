# SPDX-License-Identifier: Apache-2.0
"""Writing outputs: atomically (temporary file, then rename), with the user's normal file permissions, and with the
output location checked before any long work starts. Torch-free and numpy-free."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ConfigError


def _umask() -> int:
    # os.umask can only be read by setting it; restore at once (single-threaded at the call sites that matter)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normal_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give: 0o666 minus the umask (mkstemp's 0o600 is too strict)."""
    return 0o666 & ~_umask()


def check_output_file(path: str | os.PathLike, what: str = "output") -> Path:
    """Refuse, before the work, an output file that cannot be written: a folder, or a folder we cannot create or
    write into. Returns the path. Creates nothing."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise ConfigError(f"{what} {target} is a folder; give a file name")
    _check_folder_writable(target.parent if str(target.parent) else Path("."), what, target)
    return target


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Refuse, before the work, an output folder that is an existing file or that cannot be created or written."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{what} {target} exists and is a file, not a folder; choose another -o")
    _check_folder_writable(target, what, target)
    return target


def _check_folder_writable(folder: Path, what: str, target: Path) -> None:
    existing = folder
    while not existing.exists():  # the first existing ancestor decides whether the folders can be created
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(f"cannot write {what} {target}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {what} {target}: no write permission in {existing}; choose another location")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed over ``path`` with normal permissions.

    On any error or Ctrl-C the temporary file is removed and ``path`` is untouched: never a half-written output.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, normal_mode())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> Path:
    """JSON, written atomically (numpy scalars and other numbers through ``float``)."""
    return write_text(path, json.dumps(data, indent=indent, default=float))
