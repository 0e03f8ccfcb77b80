"""One bad request fails alone (issue "One bad request fails alone"), against the real server
and model: each numbered defect of the review, reproduced through the public interface."""
from __future__ import annotations

import json
import threading
import time

import pytest
import requests

pytestmark = pytest.mark.slow

LONG = {"n_predict": 3000, "ignore_eos": True, "temperature": 0}


def wait_idle(srv, timeout: float = 3.0) -> float:
    """Seconds until every slot is idle (fails after timeout)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        slots = srv.get("/slots").json()
        if not any(s["is_processing"] for s in slots):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"slots still busy after {timeout}s: {srv.get('/slots').json()}")


def busy_slots(srv) -> int:
    return sum(s["is_processing"] for s in srv.get("/slots").json())


@pytest.fixture(scope="module")
def srv(server_factory):
    return server_factory("-np", "3", "-c", "3072")


# 1. the engine loop cannot die silently
def test_a_dead_engine_loop_answers_503_and_the_process_exits_non_zero(server_factory):
    dead = server_factory("-np", "1", "-c", "256", env={"LLAMA_SERVER_FAILPOINT": "engine-loop"},
                          shared=False)
    r = dead.post("/completion", json={"prompt": "Hello", "n_predict": 4}, timeout=10)
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    try:
        health = dead.get("/health", timeout=2)
        assert health.status_code == 503 and "failpoint engine-loop" in health.json()["error"]["message"]
        late = dead.post("/completion", json={"prompt": "Hello", "n_predict": 4}, timeout=5)
        assert late.status_code == 503 and late.headers.get("Retry-After")
    except requests.ConnectionError:
        pass          # already exited: also what a supervisor needs
    assert dead.proc.wait(20) == 1
    assert "exiting with status 1" in dead.log_tail(20000)


# 2. a grammar that leaves no allowed token
def test_a_grammar_with_no_allowed_token_ends_the_request_not_the_engine(srv):
    r = srv.post("/completion", json={"prompt": "Say a:", "grammar": 'root ::= "a"',
                                      "logit_bias": [["a", False]], "ignore_eos": True, "n_predict": 16})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stop"] and not body["stopped_limit"] and body["tokens_predicted"] == 0
    # naturally: ignore_eos with a JSON schema, on the OpenAI route: the answer ends when the
    # schema is complete, finish_reason "stop"
    r = srv.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "Give a JSON object with a boolean ok."}],
        "response_format": {"type": "json_schema", "json_schema": {"schema": {
            "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
            "additionalProperties": False}}},
        "ignore_eos": True, "max_tokens": 200, "temperature": 0})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and json.loads(choice["message"]["content"])["ok"] in (True, False)
    assert srv.post("/completion", json={"prompt": "Hi", "n_predict": 2}).status_code == 200


# 3. OpenAI non-streamed requests notice that the client left
@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Count to a million."}],
                              "max_tokens": 3000, "ignore_eos": True}),
    ("/v1/completions", {"prompt": "Count:", "max_tokens": 3000, "ignore_eos": True, "n": 2}),
    ("/completion", {"prompt": ["One:", "Two:"], **LONG}),
], ids=["chat", "completions-n2", "native-two-prompts"])
def test_a_client_that_leaves_stops_its_generation(srv, path, body):
    wait_idle(srv, 10)
    with pytest.raises(requests.ReadTimeout):
        requests.post(srv.url + path, json=body, timeout=1.0)
    assert wait_idle(srv, 3.0) < 1.0       # the slots are idle within a second


def test_streamed_clients_that_leave_free_their_slots(srv):
    wait_idle(srv, 10)
    body = {"messages": [{"role": "user", "content": "Count."}], "max_tokens": 3000,
            "ignore_eos": True, "stream": True, "n": 2}
    with requests.post(srv.url + "/v1/chat/completions", json=body, stream=True, timeout=30) as r:
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
        assert busy_slots(srv) == 2
    assert wait_idle(srv, 3.0) < 1.0


# 4. several prompts: a full queue leaks nothing
def test_a_full_queue_refuses_all_prompts_and_keeps_none(server_factory):
    small = server_factory("-np", "1", "-c", "512", "--max-queue", "1", shared=False)
    holder = threading.Thread(target=lambda: small.post(
        "/completion", json={"prompt": "Hold:", "n_predict": 60, "ignore_eos": True}))
    holder.start()
    time.sleep(0.3)
    waiting = threading.Thread(target=lambda: small.post(
        "/completion", json={"prompt": "Wait:", "n_predict": 2}))
    waiting.start()
    time.sleep(0.3)
    r = small.post("/completion", json={"prompt": ["A:", "B:"], "n_predict": 200, "ignore_eos": True})
    assert r.status_code == 503 and r.headers.get("Retry-After") == "1"
    assert r.json()["error"]["type"] == "unavailable_error"
    holder.join(60)
    waiting.join(60)
    time.sleep(0.3)
    metrics = small.get("/slots").json()
    assert not any(s["is_processing"] for s in metrics)


# 6. the error's kind decides the status
def test_errors_carry_their_kind(srv):
    too_long = "word " * 4000
    r = srv.post("/v1/completions", json={"prompt": too_long, "max_tokens": 4})
    assert r.status_code == 400 and r.json()["error"]["type"] == "exceed_context_size_error"
    r = srv.post("/completion", json={"prompt": "x", "grammar": "root ::= nonsense ("})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["message"].count("Failed to parse grammar") == 1


# 7. a unified KV cache that fills up fails nobody
def test_two_long_generations_on_a_unified_cache_both_complete(server_factory):
    unified = server_factory("-np", "2", "-c", "512", "--embeddings", shared=False)
    results = []

    def run(prompt):
        results.append(unified.post("/completion", json={"prompt": prompt, "n_predict": 380,
                                                         "ignore_eos": True, "temperature": 0}))
    threads = [threading.Thread(target=run, args=(p,)) for p in ("Once upon a time", "The list:")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [r.status_code for r in results] == [200, 200], [r.text[:300] for r in results]
    for r in results:
        assert r.json()["tokens_predicted"] >= 1


# 8. -sps: slot choice by similarity, else the least recently used slot
def test_a_new_conversation_takes_an_idle_slot_not_a_slot_holding_a_long_cache(server_factory):
    two = server_factory("-np", "2", "-c", "4096", shared=False)
    system = "Hello there. You are a helpful assistant. " * 40
    first = two.post("/completion", json={"prompt": system + "Q: hi", "n_predict": 2}).json()
    # shares only its first couple of tokens with the long cache (below -sps 0.1)
    fresh = "Hello there! Write a poem about the sea and the wind. " * 8
    other = two.post("/completion", json={"prompt": fresh, "n_predict": 2}).json()
    assert other["id_slot"] != first["id_slot"] and other["tokens_cached"] == 0
    again = two.post("/completion", json={"prompt": system + "Q: hello", "n_predict": 2}).json()
    assert again["id_slot"] == first["id_slot"] and again["tokens_cached"] > 300


# 9. embeddings get a fair share next to a running stream
def test_an_embedding_does_not_wait_for_a_stream_to_end(server_factory):
    emb = server_factory("-np", "2", "-c", "2048", "--embeddings", "--pooling", "mean", shared=False)
    done = threading.Event()

    def stream():
        emb.post("/completion", json={"prompt": "Tell a story.", "n_predict": 600, "ignore_eos": True})
        done.set()
    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.5)
    r = emb.post("/v1/embeddings", json={"input": "hello world"})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) > 0
    assert not done.is_set(), "the embedding waited for the 600-token generation"
    t.join(120)


# n > 1 streamed: choices interleave as they are generated
def test_streamed_choices_are_interleaved(srv):
    body = {"prompt": "Numbers:", "max_tokens": 24, "ignore_eos": True, "n": 2, "stream": True,
            "temperature": 0}
    order = []
    with requests.post(srv.url + "/v1/completions", json=body, stream=True, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                order.extend(c["index"] for c in chunk["choices"] if c.get("text"))
    assert set(order) == {0, 1}
    first_one = order.index(1)
    assert 0 in order[first_one:], f"choice 0 finished before choice 1 started: {order}"
