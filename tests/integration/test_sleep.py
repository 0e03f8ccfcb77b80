"""Sleep mode (--sleep-idle-seconds) against the real server and model: the model is freed
after the idle time and loaded again by the next request that needs it, as llama-server's
tools/server/tests/unit/test_sleep.py checks, plus what our server adds (requests arriving
during the reload share it, a request in progress keeps the model, the memory goes back)."""
from __future__ import annotations

import concurrent.futures as cf
import json
import shutil
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

IDLE_S = 1
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def sleepy(server_factory):
    return server_factory("--sleep-idle-seconds", str(IDLE_S), "--metrics", "-np", "2", "-c", "512")


def is_sleeping(srv) -> bool:
    r = srv.get("/props")
    assert r.status_code == 200, r.text
    return r.json()["is_sleeping"]


def wait_for_sleep(srv, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if is_sleeping(srv):
            return
        time.sleep(0.1)
    raise TimeoutError("the server did not go to sleep")


def complete(srv, n_predict: int = 4) -> dict:
    r = srv.post("/completion", json={"prompt": PROMPT, "n_predict": n_predict, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()


def scrape(srv) -> dict[str, float]:
    """One scrape's unlabelled llamacpp:* values, by name."""
    r = srv.get("/metrics")
    assert r.status_code == 200
    return {ln.split()[0][len("llamacpp:"):]: float(ln.split()[1]) for ln in r.text.splitlines()
            if ln.startswith("llamacpp:") and "{" not in ln}


def rss_kib(srv) -> int:
    with open(f"/proc/{srv.proc.pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith("VmRSS:")).split()[1])


def test_asleep_health_props_models_and_metrics_answer_without_waking_it(sleepy):
    wait_for_sleep(sleepy)
    health = sleepy.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "slots_idle": 2, "slots_processing": 0}
    props = sleepy.get("/props").json()
    assert props["is_sleeping"] is True
    assert props["total_slots"] == 2 and props["default_generation_settings"]["n_ctx"] == 256
    assert props["model_ftype"] == "Q4_1" and "<|im_start|>" in props["chat_template"]
    models = sleepy.get("/models").json()
    assert [m["id"] for m in models["data"]] == [props["model_alias"]]
    assert models["data"][0]["meta"]["n_vocab"] == 49152
    assert sleepy.get("/metrics").status_code == 200
    assert is_sleeping(sleepy)


def test_a_generation_request_wakes_the_model_and_gets_the_same_answer(sleepy):
    wait_for_sleep(sleepy)
    asleep = complete(sleepy, n_predict=8)
    assert not is_sleeping(sleepy)
    awake = complete(sleepy, n_predict=8)
    assert asleep["content"] == awake["content"] and asleep["tokens_predicted"] == 8


@pytest.mark.parametrize("method,path,body", [
    pytest.param("post", "/tokenize", {"content": "Hello"}, id="tokenize"),
    pytest.param("get", "/slots", None, id="slots"),
    pytest.param("get", "/lora-adapters", None, id="lora-adapters"),
])
def test_other_routes_that_need_the_engine_wake_it_too(sleepy, method, path, body):
    wait_for_sleep(sleepy)
    r = getattr(sleepy, method)(path, **({"json": body} if body is not None else {}))
    assert r.status_code == 200, r.text
    assert not is_sleeping(sleepy)


def test_requests_arriving_during_the_reload_wait_for_one_reload(sleepy):
    wait_for_sleep(sleepy)
    reloads = sleepy.log_tail(10**7).count("waking up: loading the model")
    with cf.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: complete(sleepy), range(4)))
    assert len({a["content"] for a in answers}) == 1
    assert sleepy.log_tail(10**7).count("waking up: loading the model") == reloads + 1


def test_a_request_in_progress_keeps_the_model_loaded(sleepy):
    """A client that sends its headers, then its body only after more than the idle time:
    the route holds the engine from the moment it asked for it."""
    complete(sleepy)
    body = json.dumps({"prompt": PROMPT, "n_predict": 4, "temperature": 0}).encode()
    with socket.create_connection(("127.0.0.1", sleepy.port), timeout=30) as conn:
        conn.sendall(b"POST /completion HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        time.sleep(IDLE_S * 2.5)
        assert not is_sleeping(sleepy)
        conn.sendall(body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(payload)["tokens_predicted"] == 4
    wait_for_sleep(sleepy)      # and once it is answered, the model may sleep


def test_metrics_asleep_keep_the_counters_and_report_the_last_window_once(sleepy):
    before = complete(sleepy, n_predict=8)
    wait_for_sleep(sleepy)
    first = scrape(sleepy)
    assert first["tokens_predicted_total"] >= before["tokens_predicted"]
    assert first["predicted_tokens_seconds"] > 0          # the last generation's window, once
    second = scrape(sleepy)
    assert second["predicted_tokens_seconds"] == 0        # nothing ran since
    assert second["tokens_predicted_total"] == first["tokens_predicted_total"]
    assert second["kv_cache_tokens"] == 0 and second["requests_processing"] == 0
    assert is_sleeping(sleepy)                             # scraping does not wake it
    sleepy.post("/tokenize", json={"content": "Hello"})
    assert not is_sleeping(sleepy)
    awake = scrape(sleepy)
    assert awake["predicted_tokens_seconds"] == 0         # not reported a second time
    assert awake["tokens_predicted_total"] == first["tokens_predicted_total"]   # never back
    assert awake["n_decode_total"] == first["n_decode_total"] > 0


def test_the_model_memory_is_given_back_while_asleep(sleepy):
    complete(sleepy)
    awake = rss_kib(sleepy)
    wait_for_sleep(sleepy)
    asleep = rss_kib(sleepy)
    # the 135M model (~100 MB as repacked weights) and its context go; measured 95-110 MB
    assert awake - asleep > 40 * 1024, (awake, asleep)


@pytest.mark.parametrize("value", ["0", "-2"])
def test_zero_and_values_below_minus_one_stop_startup(value):
    done = subprocess.run([sys.executable, "-m", "webapp.cli", "--sleep-idle-seconds", value],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "--sleep-idle-seconds" in done.stderr


def test_lora_scales_set_at_run_time_survive_a_sleep(server_factory, model_path, tmp_path_factory):
    from tests.gguf_builders import lora_adapter
    path = lora_adapter(model_path, str(tmp_path_factory.mktemp("lora") / "random.gguf"), std=0.05, seed=1)
    srv = server_factory("--sleep-idle-seconds", str(IDLE_S), "-np", "1", "-c", "256", "--lora", path)
    assert srv.post("/lora-adapters", json=[{"id": 0, "scale": 0.5}]).json() == {"success": True}
    scaled = complete(srv, n_predict=8)
    wait_for_sleep(srv)
    assert srv.get("/lora-adapters").json() == [{"id": 0, "path": path, "scale": 0.5}]
    assert complete(srv, n_predict=8)["content"] == scaled["content"]


def test_a_failed_reload_answers_500_and_stops_the_server_with_status_1(server_factory, model_path,
                                                                        tmp_path):
    copy = tmp_path / "model.gguf"
    shutil.copyfile(model_path, copy)
    srv = server_factory("-m", str(copy), "--sleep-idle-seconds", str(IDLE_S), "-np", "1", "-c", "256",
                         shared=False)
    wait_for_sleep(srv)
    copy.unlink()               # the next load cannot find it
    r = srv.post("/completion", json={"prompt": PROMPT, "n_predict": 2})
    assert r.status_code == 500 and "failed to reload the model" in r.json()["error"]["message"]
    assert srv.proc.wait(30) == 1
    assert "failed to reload the model after sleeping" in srv.log_tail()
