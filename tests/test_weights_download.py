# SPDX-License-Identifier: Apache-2.0
"""Downloading published weights, tested offline against a Hugging Face Hub stand-in on loopback, in subprocesses
that never import transformers (what a user with only detr-deploy[export] has)."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from detr_deploy.errors import WeightsUnavailableError
from detr_deploy.weights import ours_to_official
from detr_deploy.weights.hub import download_url

from conftest import official_to_hf, tiny_model, tiny_overrides


class _HubHandler(http.server.BaseHTTPRequestHandler):
    """``/<org>/<name>/resolve/<revision>/<file>`` and ``/files/<file>``, the way huggingface_hub and urllib ask."""

    root: Path
    requests: list

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def _file(self) -> Path | None:
        parts = self.path.split("?")[0].strip("/").split("/")
        self.requests.append((self.command, self.path))
        if len(parts) >= 5 and parts[2] == "resolve":
            path = self.root / parts[0] / parts[1] / "/".join(parts[4:])
        elif parts[0] == "files":
            path = self.root / "/".join(parts[1:])
        else:
            return None
        return path if path.is_file() else None

    def _reply(self, body: bool) -> None:
        path = self._file()
        if path is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", "0" * 40)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._reply(False)

    def do_GET(self) -> None:  # noqa: N802
        self._reply(True)


@pytest.fixture(scope="module")
def fake_hub(tmp_path_factory):
    """A tiny DETR published as ``test/tiny-detr`` on a loopback stand-in of the Hub; yields (endpoint, model, root)."""
    root = tmp_path_factory.mktemp("hub")
    model = tiny_model("detr-r50")
    repo = root / "test" / "tiny-detr"
    repo.mkdir(parents=True)
    hf_state = official_to_hf(ours_to_official(model.state_dict()), "detr")
    save_file({k: v.contiguous() for k, v in hf_state.items()}, repo / "model.safetensors")
    (repo / "config.json").write_text(json.dumps({"model_type": "detr", "use_timm_backbone": True,
                                                  "backbone": "resnet50", "encoder_attention_heads": 2,
                                                  "decoder_attention_heads": 2}))
    handler = type("Handler", (_HubHandler,), {"root": root, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", model, root, handler.requests
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(code: str, env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "DETR_DEPLOY_CACHE": str(tmp_path / "cache"),
                **env}
    if "HF_HUB_OFFLINE" not in env:  # a developer's shell may have it set
        full_env.pop("HF_HUB_OFFLINE", None)
    probe = ("import sys, warnings\nwarnings.simplefilter('always')\n" + code +
             "\nassert 'transformers' not in sys.modules, 'the test process must not have transformers loaded'\n")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=full_env, timeout=300)


def test_auto_weights_download_from_the_hub_without_transformers(fake_hub, tmp_path):
    endpoint, model, _, requests = fake_hub
    expected = tmp_path / "expected.pt"
    torch.save(model.state_dict(), expected)
    code = f"""
import torch, detr_deploy
from detr_deploy.weights import pretrained
pretrained.PRETRAINED["detr-r50"] = pretrained.PretrainedSource("test/tiny-detr")  # a published variant, shrunk
m = detr_deploy.create_model("detr-r50", **{tiny_overrides("detr-r50")!r})
assert m.weights_info["source"] == "hf-hub:test/tiny-detr", m.weights_info
want = torch.load({str(expected)!r})
assert all(torch.equal(v, want[k]) for k, v in m.state_dict().items())
again = detr_deploy.create_model("hf-hub:test/tiny-detr")  # the architecture from the repository's config.json
assert again.config.num_queries == m.config.num_queries and again.config.num_heads == 2
print("ok", m.weights_info["format"])
"""
    result = _run(code, {"HF_ENDPOINT": endpoint}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "hf"]
    assert ("GET", "/test/tiny-detr/resolve/main/model.safetensors") in requests


@pytest.mark.parametrize("how", ["unreachable", "HF_HUB_OFFLINE"])
def test_auto_weights_offline_fall_back_to_random_with_a_warning(how, tmp_path):
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}"} if how == "unreachable" else {"HF_HUB_OFFLINE": "1"}
    code = f"""
import detr_deploy
from detr_deploy.factory import RandomWeightsWarning
with warnings.catch_warnings(record=True) as caught:
    m = detr_deploy.create_model("deformable-detr", **{tiny_overrides("deformable-detr")!r})
assert m.weights_info == {{"source": "random", "requested": "auto"}}, m.weights_info
print([str(w.message) for w in caught if w.category is RandomWeightsWarning][0])
"""
    result = _run(code, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "RANDOM weights" in result.stdout and "SenseTime/deformable-detr" in result.stdout


def test_official_release_download_is_hash_checked_and_atomic(fake_hub, tmp_path, monkeypatch):
    endpoint, _, root, _ = fake_hub
    payload = b"a release file" * 1000
    (root / "detr-r50-0a1b2c3d.pth").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    monkeypatch.setenv("DETR_DEPLOY_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsUnavailableError, match="corrupt"):
        download_url(f"{endpoint}/files/detr-r50-0a1b2c3d.pth", "deadbeef")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing half-written
    path = download_url(f"{endpoint}/files/detr-r50-0a1b2c3d.pth", digest[:8])
    assert path.read_bytes() == payload
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    with pytest.raises(WeightsUnavailableError, match="could not download"):
        download_url(f"{endpoint}/files/missing.pth")
