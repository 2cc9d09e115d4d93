# SPDX-License-Identifier: Apache-2.0
"""Downloading published weights: Hugging Face Hub repositories and the official hash-checked release files."""
from __future__ import annotations

import hashlib
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .._optional import require
from ..errors import WeightsUnavailableError
from ..files import atomic_output
from ..progress import progress

_OFFLINE_HINT = ("pass weights=PATH (an official .pth, a Hugging Face folder or model.safetensors; --weights on "
                 "the command line) or weights='random'")


def cache_dir() -> Path:
    """``$DETR_DEPLOY_CACHE`` or ``~/.cache/detr_deploy``."""
    return Path(os.environ.get("DETR_DEPLOY_CACHE", "~/.cache/detr_deploy")).expanduser()


def _host_resolves(url: str) -> bool:
    """A DNS lookup: huggingface_hub retries for ~25 s when offline, so ask the resolver first."""
    host = urllib.parse.urlparse(url).hostname
    try:
        socket.getaddrinfo(host, 443)
        return True
    except (OSError, UnicodeError):
        return False


def download_hub(repo_id: str, revision: str | None = None) -> Path:
    """Download ``config.json`` and the weights of a Hub repository (local HF cache first); returns the folder."""
    hub = require("huggingface_hub", "downloading weights from the Hugging Face Hub")
    # huggingface_hub 2.x loads its errors submodule lazily: import it by name
    errors = require("huggingface_hub.errors", "downloading weights from the Hugging Face Hub")
    try:
        return _fetch_hub(hub, errors, repo_id, revision, local_files_only=True)
    except Exception:  # not cached: go to the network
        pass
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or not _host_resolves(endpoint):
        raise WeightsUnavailableError(f"could not download {repo_id}: {endpoint} is not reachable from here "
                                      f"(offline); {_OFFLINE_HINT}")
    try:
        return _fetch_hub(hub, errors, repo_id, revision, local_files_only=False)
    except errors.RepositoryNotFoundError as exc:
        raise WeightsUnavailableError(f"no Hub repository {repo_id!r} (or it is private/gated and you are not "
                                      f"logged in); {_OFFLINE_HINT}") from exc
    except WeightsUnavailableError:
        raise
    except Exception as exc:  # offline mode, DNS/connection errors, timeouts: all mean "cannot have it here"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsUnavailableError(f"could not download {repo_id} from the Hugging Face Hub ({first_line}); "
                                      f"{_OFFLINE_HINT}") from exc


def _fetch_hub(hub, errors, repo_id: str, revision: str | None, local_files_only: bool) -> Path:
    config = Path(hub.hf_hub_download(repo_id, "config.json", revision=revision, local_files_only=local_files_only))
    for name in ("model.safetensors", "pytorch_model.bin"):
        try:
            hub.hf_hub_download(repo_id, name, revision=revision, local_files_only=local_files_only)
            return config.parent
        except errors.EntryNotFoundError:
            continue
    raise WeightsUnavailableError(f"Hub repository {repo_id} has no model.safetensors or pytorch_model.bin")


def download_url(url: str, sha256_prefix: str | None = None, timeout: float = 30.0) -> Path:
    """Download ``url`` into the cache (atomically), checking the sha256 prefix in the official file names."""
    target = cache_dir() / Path(url).name
    if target.is_file():
        return target
    digest = hashlib.sha256()
    try:
        with atomic_output(target) as tmp, open(tmp, "wb") as out, \
                urllib.request.urlopen(url, timeout=timeout) as response:
            size = int(response.headers.get("Content-Length") or 0)
            with progress(size, f"download {target.name}", unit="B") as advance:
                while block := response.read(1 << 20):
                    digest.update(block)
                    out.write(block)
                    advance(len(block))
            out.flush()
            if sha256_prefix and not digest.hexdigest().startswith(sha256_prefix):
                raise WeightsUnavailableError(f"{url} downloaded with sha256 {digest.hexdigest()[:12]}..., expected "
                                              f"{sha256_prefix}...: the download is corrupt, try again")
        return target
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise WeightsUnavailableError(f"could not download {url} ({exc}); {_OFFLINE_HINT}") from exc
