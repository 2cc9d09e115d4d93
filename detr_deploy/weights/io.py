# SPDX-License-Identifier: Apache-2.0
"""Reading checkpoint files: official ``.pth``, Hugging Face folders and single files, safetensors.

Loading is safe by default: ``torch.load(weights_only=True)`` with ``argparse.Namespace`` allow-listed (the
official training checkpoints store their ``args``). There is no silent fallback to unsafe unpickling.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._optional import require
from ..errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_IGNORED_SUFFIXES = ("num_batches_tracked", "total_ops", "total_params")
_STRIPPED_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class Checkpoint:
    """A checkpoint read from disk.

    Attributes:
        state_dict: flat ``{name: tensor}`` after unwrapping and key cleaning.
        hf_config: the Hugging Face ``config.json`` next to the weights, when there is one.
        source: what the user passed (path or Hub id).
        files: the weight files read.
        sha256: hash of the (first) weight file, for artifact metadata.
        notes: what cleaning did (stripped prefixes, dropped keys).
    """

    state_dict: dict[str, torch.Tensor]
    hf_config: dict[str, Any] | None
    source: str
    files: list[Path]
    sha256: str
    notes: list[str] = field(default_factory=list)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _unsupported_global(text: str) -> str:
    """The one informative line of torch's long weights_only error."""
    for line in text.splitlines():
        if "Unsupported" in line or "invalid load key" in line:
            return line.strip()
    return text.splitlines()[0] if text else "unpickling failed"


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text:
            raise CheckpointError(
                f"{path} holds Python objects that safe loading (weights_only=True) refuses. If you trust the file, "
                "re-save only its weights: torch.save(torch.load(path, weights_only=False)['model'], 'clean.pth') "
                f"and pass clean.pth. Details: {_unsupported_global(text)}") from exc
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({_unsupported_global(text)}); pass a "
                              ".pth/.bin/.safetensors file or a Hugging Face model folder") from exc
    except (EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is empty or truncated ({type(exc).__name__}); download it again") from exc
    except RuntimeError as exc:
        text = str(exc)
        if "zip archive" in text or "central directory" in text or "unexpected EOF" in text.lower():
            first = text.splitlines()[0]
            raise CheckpointError(f"{path} is truncated or corrupt ({first}); download it again") from exc
        raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint: {text.splitlines()[0]}") from exc
    except Exception as exc:  # the unpickler fails in many ways on arbitrary bytes (IndexError, KeyError...)
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(exc).__name__}: {exc}); pass a "
                              ".pth/.bin/.safetensors file or a Hugging Face model folder") from exc


def _safetensors_load(path: Path) -> dict[str, torch.Tensor]:
    st = require("safetensors.torch", "reading .safetensors checkpoints")
    try:
        return st.load_file(str(path))
    except Exception as exc:  # SafetensorError is not importable by a stable name across versions
        raise CheckpointError(f"{path} is not a valid safetensors file ({exc}); it may be truncated, "
                              "download it again") from exc


def _read_weight_file(path: Path) -> Any:
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); download it again")
    if path.suffix == ".safetensors":
        return _safetensors_load(path)
    return _torch_load(path)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """``{"model": sd}`` -> sd, ``{"state_dict": sd}`` -> sd, else the object itself; check it holds tensors."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} does not contain a model state dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors; top-level keys: {sorted(map(str, obj))[:10]}")
    return tensors


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip ``module.``/``_orig_mod.`` prefixes, drop BN counters and profiler leftovers."""
    out, notes, stripped, dropped = {}, [], set(), 0
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _STRIPPED_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
                    stripped.add(prefix)
        if key.endswith(_IGNORED_SUFFIXES):
            dropped += 1
            continue
        out[key] = value
    if stripped:
        notes.append(f"stripped key prefix(es) {sorted(stripped)}")
    if dropped:
        notes.append(f"ignored {dropped} num_batches_tracked/total_ops/total_params entries")
    return out, notes


def _folder_weight_files(folder: Path) -> list[Path]:
    for index_name in SHARD_INDEXES:
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise CheckpointError(f"{folder} lists weight shards that are missing: {missing}")
            return [folder / s for s in shards]
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return [folder / name]
    candidates = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.pth")) + sorted(folder.glob("*.bin"))
    if len(candidates) == 1:
        return candidates
    raise CheckpointError(f"{folder} has no model.safetensors or pytorch_model.bin"
                          + (f" (and several candidates: {[c.name for c in candidates]})" if candidates else ""))


def read_checkpoint(path: str | os.PathLike, source: str | None = None) -> Checkpoint:
    """Read an official ``.pth``, a Hugging Face folder (config.json + weights) or a single weights file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    hf_config = None
    if path.is_dir():
        files = _folder_weight_files(path)
        config_file = path / "config.json"
    else:
        files = [path]
        config_file = path.parent / "config.json" if path.name in WEIGHT_FILES else None
    if config_file is not None and config_file.is_file():
        try:
            hf_config = json.loads(config_file.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{config_file} is not valid JSON ({exc})") from exc
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(_unwrap(_read_weight_file(file), file))
    state, notes = clean_state_dict(state)
    return Checkpoint(state, hf_config, source or str(path), files, sha256_of(files[0]), notes)
