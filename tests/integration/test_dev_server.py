"""`flask --app webapp run` serves the same app, flags from LLAMA_ARG_* variables."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow


def test_flask_run_serves_completions_with_flags_from_the_environment():
    port = free_port()
    env = dict(os.environ, LLAMA_ARG_N_PARALLEL="3", LLAMA_ARG_CTX_SIZE="1536")
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "webapp", "run", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if requests.get(url + "/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        props = requests.get(url + "/props", timeout=10).json()
        assert props["total_slots"] == 3 and props["n_ctx"] == 512
        r = requests.post(url + "/completion", json={"prompt": "Hello", "n_predict": 4, "temperature": 0,
                                                     "stream": True}, timeout=60)
        chunks = [c for c in r.content.split(b"\n\n") if c]
        assert len(chunks) >= 2 and b'"stop":true' in chunks[-1]
    finally:
        proc.terminate()
        proc.wait(10)
