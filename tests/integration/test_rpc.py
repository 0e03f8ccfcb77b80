"""ggml RPC on loopback: a `llama-rpc-server` worker in a subprocess, the server offloading
every layer to it (`--rpc`, `-ngl 99`), devices listed and chosen, and the failures: a worker
that is not there at start, and one that dies in the middle of a request."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, ServerProcess, free_port

pytestmark = pytest.mark.slow

PROMPT = {"prompt": "Building a website can be done in 10 simple steps:", "n_predict": 24,
          "temperature": 0}
SCRIPTS = Path(sys.executable).parent


def start_worker() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([str(SCRIPTS / "llama-rpc-server"), "-p", str(port), "-t", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            import socket
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited: {proc.stderr.read()}")
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("worker did not listen")


@pytest.fixture
def worker():
    """A fresh worker per test: a ggml RPC worker serves one client connection at a time."""
    proc, endpoint = start_worker()
    yield endpoint
    proc.kill()
    proc.wait(10)


def cli(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webapp.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_list_devices_shows_the_worker(worker):
    r = cli("--rpc", worker, "--list-devices")
    assert r.returncode == 0, r.stderr
    assert "Available devices:" in r.stdout and f"RPC0: {worker}" in r.stdout


def test_greedy_output_through_the_worker_equals_a_local_run(server_factory, worker):
    local = server_factory("-np", "1", "-c", "512")
    remote = ServerProcess(("-np", "1", "-c", "512", "--rpc", worker, "-ngl", "99", "-v")).wait_ready(120)
    try:
        a = local.post("/completion", json=PROMPT).json()
        b = remote.post("/completion", json=PROMPT).json()
        assert b["tokens_predicted"] == 24 and a["content"] == b["content"]
        assert "assigned to device RPC0" in remote.log_path.read_text()
    finally:
        remote.stop()


def test_device_none_keeps_everything_on_the_cpu(worker):
    srv = ServerProcess(("-np", "1", "-c", "512", "--rpc", worker, "-ngl", "99", "-dev", "none",
                         "-v")).wait_ready(120)
    try:
        assert srv.post("/completion", json=PROMPT).status_code == 200
        log = srv.log_path.read_text()
        assert "assigned to device CPU" in log and "assigned to device RPC0" not in log
    finally:
        srv.stop()


def test_an_unknown_device_stops_startup():
    r = cli("-dev", "NoSuchGPU", timeout=60)
    assert r.returncode == 1 and "invalid device: NoSuchGPU" in r.stderr


def test_a_worker_that_is_not_there_stops_startup_with_one_line():
    port = free_port()
    r = cli("--rpc", f"127.0.0.1:{port}", "-ngl", "99", timeout=60)
    assert r.returncode == 1
    assert f"RPC worker 127.0.0.1:{port} cannot be reached" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_bad_endpoint_is_refused():
    r = cli("--rpc", "no-port-here", timeout=60)
    assert r.returncode == 1 and "expected HOST:PORT" in r.stderr


def test_a_worker_that_dies_mid_request_fails_that_request_and_the_server_exits():
    proc, endpoint = start_worker()
    srv = ServerProcess(("-np", "1", "-c", "1024", "--rpc", endpoint, "-ngl", "99")).wait_ready(120)
    try:
        result = {}

        def long_request():
            try:
                r = requests.post(srv.url + "/completion", timeout=60,
                                  json={"prompt": "Count:", "n_predict": 2000, "ignore_eos": True})
                result["status"], result["body"] = r.status_code, r.json()
            except requests.RequestException as exc:
                result["error"] = exc
        t = threading.Thread(target=long_request)
        t.start()
        time.sleep(1.0)
        proc.kill()
        proc.wait(10)
        t.join(60)
        assert not t.is_alive(), "the request hung"
        assert result.get("status") == 500, result
        error = result["body"]["error"]
        assert error["type"] == "server_error" and endpoint in error["message"]
        assert srv.proc.wait(30) == 1
    finally:
        srv.stop()
        if proc.poll() is None:
            proc.kill()


def test_the_worker_warns_when_bound_beyond_loopback():
    r = subprocess.run([str(SCRIPTS / "llama-rpc-server"), "-H", "0.0.0.0", "-p", "1",
                        "--lib-path", "/nonexistent-folder"], capture_output=True, text=True, timeout=60)
    assert "WARNING: binding to 0.0.0.0" in r.stderr and "no authentication" in r.stderr
    assert r.returncode == 1       # (the library path is wrong: it never bound)
