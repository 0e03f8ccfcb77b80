"""Start and stop a server under test on a free loopback port (shared by the benchmarks)."""
from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import time

import requests

__all__ = ["start", "stop", "wait_healthy", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    argv = shlex.split(cmd.replace("{port}", str(port)))
    if "{port}" not in cmd:
        argv += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url, 120, cmd)
    return proc, url


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float, what: str) -> None:
    """Until ``url``/health answers 200; SystemExit if ``proc`` exits or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"exited early ({proc.returncode}): {what}")
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"not ready after {timeout:.0f} s: {what}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
