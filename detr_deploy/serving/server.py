# SPDX-License-Identifier: Apache-2.0
"""Finding, starting and stopping a local ``tritonserver`` for a model repository.

The binary: an explicit path, ``$TRITONSERVER``, ``tritonserver`` on PATH, or the one inside the nvidia-pytriton wheel
of this environment. Its backends: ``$TRITON_BACKEND_DIR``, else ``<binary>/../backends``, else Triton's default
``/opt/tritonserver/backends``.

The Python-backend models import detr_deploy, numpy, onnxruntime and onnxruntime-extensions in the server's stub
processes. The stub embeds its own Python (the system's libpython of its version) and ignores PYTHONPATH, so the
generated model.py files add the folders of ``PYTHONPATH`` themselves: the server is started with ``PYTHONPATH`` =
``$TRITON_PYTHONPATH`` (site-packages of an environment with numpy < 2 for tritonserver <= 2.52; see
``python_models.check_numpy_for_backend``), else this interpreter's site-packages, plus the folder detr_deploy is
imported from.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from threading import Thread

from ..errors import ConfigError, ServingError

SETUP_HINT = ("bash .ci/triton_server.sh (a virtualenv with the nvidia-pytriton wheel; eval its output), the NGC "
              "tritonserver container, or TRITONSERVER=/path/to/tritonserver")
DEFAULT_BACKENDS = Path("/opt/tritonserver/backends")


def find_tritonserver(explicit: str | os.PathLike | None = None) -> Path:
    """The tritonserver binary (see the module docstring); ServingError naming the setup when there is none."""
    candidates = [explicit, os.environ.get("TRITONSERVER"), shutil.which("tritonserver")]
    spec = importlib.util.find_spec("pytriton")  # finds the wheel without importing it (it needs numpy < 2)
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "tritonserver" / "bin" / "tritonserver" for p in spec.submodule_search_locations]
    for index, candidate in enumerate(candidates):
        if not candidate:
            continue
        path = Path(candidate).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        if index < 2:  # an explicit path or $TRITONSERVER that does not work is an error, not a fallback
            what = "--tritonserver" if index == 0 else "$TRITONSERVER"
            raise ServingError(f"{what} {path} is not an executable file; set it to a tritonserver binary "
                               f"({SETUP_HINT})")
    raise ServingError(f"no tritonserver found (TRITONSERVER, PATH, nvidia-pytriton); install one: {SETUP_HINT}")


def backend_directory(binary: Path, explicit: str | os.PathLike | None = None) -> Path:
    """Triton's backend folder for ``binary``; checks the Python backend has its stub (the wheel ships the stubs
    per Python version elsewhere, and the backend only looks in its own folder)."""
    for candidate in (explicit, os.environ.get("TRITON_BACKEND_DIR"), binary.parent.parent / "backends",
                      DEFAULT_BACKENDS):
        if candidate and Path(candidate).is_dir():
            folder = Path(candidate)
            break
    else:
        raise ServingError(f"no backend folder found for {binary} (looked beside it and in {DEFAULT_BACKENDS}); "
                           "set TRITON_BACKEND_DIR")
    python = folder / "python"
    if python.is_dir() and not (python / "triton_python_backend_stub").exists():
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        stub = binary.parent.parent / "python_backend_stubs" / version / "triton_python_backend_stub"
        fix = f"cp {stub} {python}/" if stub.is_file() else "bash .ci/triton_server.sh"
        raise ServingError(f"Triton's Python backend in {python} has no triton_python_backend_stub; run: {fix}")
    return folder


def model_pythonpath() -> list[str]:
    """What the server's PYTHONPATH should hold for the Python-backend models (see the module docstring)."""
    chosen = [p for p in os.environ.get("TRITON_PYTHONPATH", "").split(os.pathsep) if p]
    if not chosen:
        chosen = [p for p in site.getsitepackages() if Path(p).is_dir()]
        user = site.getusersitepackages()
        if isinstance(user, str) and Path(user).is_dir():
            chosen.append(user)
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding detr_deploy/ (checkouts too)
    return chosen + ([package_root] if package_root not in chosen else [])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (tests; the server binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _client_host(address: str) -> str:
    """Where a local client reaches a server bound to ``address`` (0.0.0.0 = every interface: loopback works)."""
    return "127.0.0.1" if address in ("0.0.0.0", "") else ("[::1]" if address == "::" else address)


def _end_with_parent() -> None:
    """In the server's process before exec: SIGTERM it when the thread that started it dies (Linux), so that the
    server (in its own session, out of reach of the terminal's Ctrl-C) never outlives a killed detr-serve."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


class TritonServer:
    """A tritonserver process for one model repository.

    Args:
        repository: the model repository folder (``detr-triton`` output).
        http_port, grpc_port, metrics_port: ports to bind (0: a free one is chosen).
        address: the address every endpoint binds; 127.0.0.1 (loopback only) unless another is asked for.
        binary, backend_dir: tritonserver and its backend folder (default: ``find_tritonserver``,
            ``backend_directory``).
        pythonpath: folders for the Python-backend models (default ``model_pythonpath()``).
        extra_args: more tritonserver flags, e.g. ``["--backend-config=tensorrt,plugins=/x/libmsda.so"]``.
        log_lines: how many of the server's last output lines to keep for error messages.

    ``start()`` launches it in its own process group; ``wait_ready(timeout)`` returns once the server and every model
    of the repository are ready (ServingError with the server's last log lines if it exits or times out);
    ``stop()`` sends SIGINT (Triton's clean shutdown), then SIGKILL after ``stop_timeout``. A context manager.
    """

    def __init__(self, repository: str | os.PathLike, http_port: int = 8000, grpc_port: int = 8001,
                 metrics_port: int = 8002, address: str = "127.0.0.1", binary: str | os.PathLike | None = None,
                 backend_dir: str | os.PathLike | None = None, pythonpath: list[str] | None = None,
                 extra_args: list[str] | None = None, log_lines: int = 200, stop_timeout: float = 20.0):
        self.repository = Path(repository).expanduser().resolve()
        if not self.repository.is_dir():
            raise ConfigError(f"model repository {self.repository} is not a folder; write one with detr-triton")
        self.models = sorted(p.name for p in self.repository.iterdir()
                             if p.is_dir() and not p.name.startswith(".") and (p / "config.pbtxt").is_file())
        if not self.models:
            raise ConfigError(f"{self.repository} holds no model (no */config.pbtxt); write one with detr-triton")
        self.binary = find_tritonserver(binary)
        self.backend_dir = backend_directory(self.binary, backend_dir)
        self.address = address
        self.ports = {"http": http_port or free_port(), "grpc": grpc_port or free_port(),
                      "metrics": metrics_port or free_port()}
        self.pythonpath = model_pythonpath() if pythonpath is None else list(pythonpath)
        self.extra_args = list(extra_args or [])
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen | None = None
        self.log: deque[str] = deque(maxlen=log_lines)
        self._reader: Thread | None = None

    @property
    def host(self) -> str:
        return _client_host(self.address)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports['metrics']}/metrics"

    def command(self) -> list[str]:
        return [str(self.binary), f"--model-repository={self.repository}", f"--backend-directory={self.backend_dir}",
                f"--http-port={self.ports['http']}", f"--grpc-port={self.ports['grpc']}",
                f"--metrics-port={self.ports['metrics']}", f"--http-address={self.address}",
                f"--grpc-address={self.address}", f"--metrics-address={self.address}",
                "--exit-timeout-secs=5", *self.extra_args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(self.pythonpath)
        return env

    def start(self) -> TritonServer:
        if self.process is not None:
            return self
        for name, port in self.ports.items():  # a taken port is a clear error now, not a log line later
            with socket.socket(socket.AF_INET6 if ":" in self.address else socket.AF_INET) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is free
                try:
                    sock.bind((self.address, port))
                except OSError as exc:
                    raise ServingError(f"cannot bind the {name} port {self.address}:{port} ({exc.strerror}); "
                                       f"choose another with --{name}-port") from exc
        self.process = subprocess.Popen(self.command(), env=self.environment(), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                        errors="replace", start_new_session=True, preexec_fn=_end_with_parent)
        self._reader = Thread(target=self._read_output, daemon=True)
        self._reader.start()
        return self

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line.rstrip("\n"))

    def log_tail(self, lines: int = 25) -> str:
        """The server's last output lines, the table borders and harmless GPU messages left out."""
        kept = [line for line in self.log if line.strip() and not line.startswith(("+", "|"))
                and "NVML" not in line and "DCGM" not in line]
        return "\n".join(kept[-lines:])

    def _get(self, path: str, timeout: float = 2.0) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=timeout) as reply:
                return reply.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return 0

    def ready(self) -> bool:
        return self._get("/v2/health/ready") == 200 and all(
            self._get(f"/v2/models/{model}/ready") == 200 for model in self.models)

    def wait_ready(self, timeout: float = 120.0) -> TritonServer:
        """Block until the server and all models are ready; ServingError (with the log) on exit or timeout."""
        if self.process is None:
            self.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._join_reader()
                raise ServingError(f"tritonserver exited with status {self.process.returncode} before its models "
                                   f"were ready; its last lines:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.25)
        tail = self.log_tail()
        self.stop()
        raise ServingError(f"tritonserver was not ready within {timeout:.0f} s; its last lines:\n{tail}")

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=2)

    def stop(self) -> int | None:
        """Stop the server (SIGINT, then SIGKILL); returns its exit status (None if it was never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGINT)  # Triton's clean shutdown: it stops its stub processes
                self.process.wait(timeout=self.stop_timeout)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):  # too slow, or a second Ctrl-C: kill it now
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)  # its own process group: the stubs go with it
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._join_reader()
        return self.process.returncode

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
