"""Shared fixtures.

``server_factory(*args, env=None)`` starts the real server (``python -m webapp.cli``) as a
subprocess on a free port with the default model and waits for ``/health``. Calls with the
same arguments share one process for the whole session; everything is stopped at the end.
``server`` is a default instance (``-np 4 -c 4096``). Servers run one libllama thread
(``-t 1``) unless the arguments say otherwise.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, args: tuple[str, ...], env: dict | None = None, log_name: str = "server",
                 scheme: str = "http", verify=True):
        self.args = args
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.verify = verify          # for https: the CA bundle (e.g. the self-signed cert) to trust
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"{log_name}-{self.port}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self._log = open(self.log_path, "wb")
        # One libllama thread unless a test asks for more: the test process needs the other
        # core, and libllama's spinning threads slow down badly when they must share one.
        threads = () if {"-t", "--threads"} & set(args) else ("-t", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webapp.cli", "--host", "127.0.0.1", "--port", str(self.port),
             *threads, *args],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> "ServerProcess":
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                r = requests.get(self.url + "/health", timeout=1, verify=self.verify)
                if r.status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s: {self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def post(self, path: str, json=None, **kw):
        kw.setdefault("verify", self.verify)
        return requests.post(self.url + path, json=json, timeout=kw.pop("timeout", 120), **kw)

    def get(self, path: str, **kw):
        kw.setdefault("verify", self.verify)
        return requests.get(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def server_factory():
    started: dict[tuple, ServerProcess] = {}

    def factory(*args: str, env: dict | None = None, shared: bool = True) -> ServerProcess:
        key = (args, tuple(sorted((env or {}).items())))
        if shared and key in started and started[key].proc.poll() is None:
            return started[key]
        srv = ServerProcess(tuple(args), env).wait_ready()
        if shared:
            started[key] = srv
        else:
            started[(key, srv.port)] = srv
        return srv

    yield factory
    for srv in started.values():
        srv.stop()


@pytest.fixture(scope="session")
def server(server_factory):
    return server_factory("-np", "4", "-c", "4096")


@pytest.fixture(scope="session")
def model_path():
    from llama_lib import default_model_path
    path = default_model_path()
    assert path, "the default model is not installed (make install)"
    return path


def pytest_sessionstart(session):
    """Under CI the Cython extensions are mandatory: a failed build must fail the run, not
    quietly drop the compiled halves of the twin tests."""
    if not os.environ.get("CI"):
        return
    import importlib
    import importlib.machinery
    missing = []
    # every .pyx, and every .py with a .pxd beside it (compiled in pure-Python mode)
    compiled = sorted((ROOT / "sampling").glob("*.pyx")) + sorted(
        p for p in (ROOT / "sampling").glob("*.py") if p.with_suffix(".pxd").exists())
    for source in compiled:
        name = f"sampling.{source.stem}"
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
            continue
        if not str(module.__file__).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            missing.append(f"{name} (not compiled: {module.__file__})")
    if missing:
        raise pytest.UsageError("CI=true and Cython extensions are missing: " + ", ".join(missing))
