"""The native API against the real server and the real model (issue #2, section 5)."""
from __future__ import annotations

import concurrent.futures as cf
import statistics
import time

import pytest
import requests

from .sse import stream

pytestmark = pytest.mark.slow

PROMPT = "The three primary colors are"


def complete(srv, **body):
    body.setdefault("temperature", 0)
    r = srv.post("/completion", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def streamed_text(srv, **body):
    body.setdefault("temperature", 0)
    events, _ = stream(srv.url + "/completion", dict(body, stream=True))
    assert events[-1]["stop"] is True
    assert all(e["stop"] is False for e in events[:-1])
    return "".join(e["content"] for e in events), events[-1]


def test_stream_equals_non_stream_at_temperature_zero(server):
    whole = complete(server, prompt=PROMPT, n_predict=32)
    text, final = streamed_text(server, prompt=PROMPT, n_predict=32)
    assert text == whole["content"]
    assert final["tokens_predicted"] == whole["tokens_predicted"]
    assert len(text) > 0


def test_same_output_with_one_and_four_slots(server_factory, server):
    one = server_factory("-np", "1", "-c", "1024")
    a = complete(one, prompt=PROMPT, n_predict=24, cache_prompt=False)
    b = complete(server, prompt=PROMPT, n_predict=24, cache_prompt=False)
    assert a["content"] == b["content"]


def test_eight_concurrent_streams_on_four_slots_all_complete(server):
    expected = complete(server, prompt=PROMPT, n_predict=24)["content"]
    prompts = [PROMPT] * 8
    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: streamed_text(server, prompt=p, n_predict=24), prompts))
    assert [text for text, _ in results] == [expected] * 8
    slots = {final["id_slot"] for _, final in results}
    assert slots <= {0, 1, 2, 3} and len(slots) >= 2


def test_health_stays_responsive_while_four_slots_generate(server):
    body = {"prompt": "Once upon a time", "n_predict": 200, "temperature": 0.8, "ignore_eos": True}
    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(server.post, "/completion", body) for _ in range(4)]
        deadline = time.time() + 20
        while server.get("/health").json()["slots_processing"] < 4 and time.time() < deadline:
            time.sleep(0.05)
        latencies = []
        for _ in range(10):
            t0 = time.perf_counter()
            r = server.get("/health")
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200
            assert r.json()["slots_processing"] == 4
            time.sleep(0.05)
        for f in futures:
            assert f.result().status_code == 200
    assert statistics.median(latencies) < 0.1, latencies


def test_repeated_prompt_reuses_the_cache(server):
    prompt = "A long shared preamble about the history of tea in China and Japan. " * 3 + "Summary:"
    first = complete(server, prompt=prompt, n_predict=8, cache_prompt=True, id_slot=2)
    second = complete(server, prompt=prompt, n_predict=8, cache_prompt=True, id_slot=2)
    assert first["tokens_cached"] == 0 or first["tokens_cached"] < second["tokens_cached"]
    assert second["tokens_cached"] > 0
    assert second["timings"]["prompt_n"] < first["timings"]["prompt_n"]
    assert second["content"] == first["content"]


def test_generation_past_the_context_with_n_keep(server_factory):
    small = server_factory("-np", "1", "-c", "128")
    n_ctx = small.get("/props").json()["default_generation_settings"]["n_ctx"]
    r = complete(small, prompt="Count: one, two, three, four, five,", n_predict=n_ctx + 44, n_keep=8,
                 ignore_eos=True, temperature=0.7, seed=3)
    assert r["tokens_predicted"] == n_ctx + 44
    assert r["truncated"] is True
    assert r["stopped_limit"] is True


def test_generation_stops_at_a_full_context_without_shift(server_factory):
    small = server_factory("-np", "1", "-c", "128", "--no-context-shift")
    n_ctx = small.get("/props").json()["default_generation_settings"]["n_ctx"]
    r = complete(small, prompt="Count: one, two, three,", n_predict=n_ctx + 50, ignore_eos=True)
    assert r["stopped_limit"] is True and r["truncated"] is False
    # the KV cache is full; the last sampled token never needs a cell of its own
    assert r["tokens_evaluated"] + r["tokens_predicted"] == n_ctx + 1


def test_a_dropped_client_frees_its_slot(server_factory):
    srv = server_factory("-np", "2", "-c", "2048")
    r = requests.post(srv.url + "/completion", stream=True, timeout=30,
                      json={"prompt": "Tell me a long story", "n_predict": 2000, "ignore_eos": True, "stream": True})
    it = r.iter_content(chunk_size=None)
    next(it)
    assert srv.get("/health").json()["slots_processing"] == 1
    r.close()
    deadline = time.time() + 30
    while time.time() < deadline and srv.get("/health").json()["slots_processing"] != 0:
        time.sleep(0.1)
    assert srv.get("/health").json() == {"status": "ok", "slots_idle": 2, "slots_processing": 0}


def test_a_stop_string_spanning_tokens_is_honoured_and_never_leaked(server):
    base = complete(server, prompt=PROMPT, n_predict=32, n_probs=1)
    pieces = [p["content"] for p in base["completion_probabilities"]]
    # a stop string made of the end of one token and the start of the next
    k = next(i for i in range(3, len(pieces) - 1) if len(pieces[i]) >= 2 and len(pieces[i + 1]) >= 2)
    stop = pieces[k][-2:] + pieces[k + 1][:2]
    before = "".join(pieces[:k]) + pieces[k][:-2]
    assert stop not in before
    r = complete(server, prompt=PROMPT, n_predict=32, stop=[stop])
    assert r["content"] == before
    assert r["stopped_word"] is True and r["stopping_word"] == stop
    text, final = streamed_text(server, prompt=PROMPT, n_predict=32, stop=[stop])
    assert text == before
    assert final["stopping_word"] == stop


def test_emoji_and_cjk_stream_as_valid_utf8(server):
    prompt = "Copy the line.\nLine: 😀🎉 日本語\nCopy: 😀🎉 日本語\nLine: 🐍🚀 中文字\nCopy:"
    events, raw = stream(server.url + "/completion", {"prompt": prompt, "n_predict": 12, "temperature": 0, "stream": True})
    raw.decode("utf-8")  # strict
    text = "".join(e["content"] for e in events)
    assert "🐍🚀" in text and "中文字" in text
    assert "\ufffd" not in text
    assert text == complete(server, prompt=prompt, n_predict=12)["content"]


def test_prompt_as_tokens_and_mixed(server):
    tokens = server.post("/tokenize", json={"content": PROMPT}).json()["tokens"]
    by_text = complete(server, prompt=PROMPT, n_predict=8)
    by_tokens = complete(server, prompt=tokens, n_predict=8)
    mixed = complete(server, prompt=[tokens[0], PROMPT[len("The"):]] if tokens else PROMPT, n_predict=8)
    assert by_tokens["content"] == by_text["content"]
    assert mixed["tokens_predicted"] == 8


def test_several_prompts_give_an_array(server):
    r = server.post("/completion", json={"prompt": ["Hello", "Goodbye"], "n_predict": 4, "temperature": 0})
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body, list) and [b["index"] for b in body] == [0, 1]


def test_tokenize_and_detokenize_round_trip(server):
    toks = server.post("/tokenize", json={"content": "Hello world", "with_pieces": True}).json()["tokens"]
    assert [t["piece"] for t in toks] == ["Hello", " world"]
    ids = [t["id"] for t in toks]
    assert server.post("/detokenize", json={"tokens": ids}).json() == {"content": "Hello world"}
    with_bos = server.post("/tokenize", json={"content": "Hi", "add_special": True}).json()["tokens"]
    assert len(with_bos) >= 1


def test_props_and_health(server):
    props = server.get("/props").json()
    assert props["total_slots"] == 4
    assert props["default_generation_settings"]["n_ctx"] == 1024
    assert "im_start" in props["chat_template"]
    assert server.get("/health").json()["status"] == "ok"


def test_n_predict_zero_evaluates_the_prompt_only(server):
    r = complete(server, prompt=PROMPT, n_predict=0)
    assert r["content"] == "" and r["tokens_predicted"] == 0


BAD_REQUESTS = [
    pytest.param("post", "/completion", b"{bad json", 400, id="bad-json"),
    pytest.param("post", "/completion", b"[1, 2]", 400, id="body-not-an-object"),
    pytest.param("post", "/completion", b"", 400, id="empty-body"),
    pytest.param("post", "/completion", {"n_predict": 4}, 400, id="missing-prompt"),
    pytest.param("post", "/completion", {"prompt": 5}, 400, id="prompt-wrong-type"),
    pytest.param("post", "/completion", {"prompt": [1, 99999999]}, 400, id="token-out-of-range"),
    pytest.param("post", "/completion", {"prompt": "x", "n_predict": "ten"}, 400, id="n_predict-string"),
    pytest.param("post", "/completion", {"prompt": "x", "temperature": "hot"}, 400, id="temperature-string"),
    pytest.param("post", "/completion", {"prompt": "x", "top_p": 3}, 400, id="top_p-out-of-range"),
    pytest.param("post", "/completion", {"prompt": "x", "stop": 3}, 400, id="stop-wrong-type"),
    pytest.param("post", "/completion", {"prompt": "x", "id_slot": 99}, 400, id="no-such-slot"),
    pytest.param("post", "/completion", {"prompt": ""}, 400, id="empty-prompt"),
    pytest.param("post", "/tokenize", {"content": 3}, 400, id="tokenize-content-type"),
    pytest.param("post", "/detokenize", {"tokens": ["a"]}, 400, id="detokenize-token-type"),
    pytest.param("get", "/no/such/route", None, 404, id="unknown-route"),
    pytest.param("get", "/completion", None, 405, id="wrong-method"),
]


@pytest.mark.parametrize("method,path,body,status", BAD_REQUESTS)
def test_bad_requests_get_an_openai_shaped_error(server, method, path, body, status):
    if method == "get":
        r = server.get(path)
    elif isinstance(body, bytes):
        r = requests.post(server.url + path, data=body, headers={"Content-Type": "application/json"}, timeout=30)
    else:
        r = server.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"code", "message", "type"}
    assert err["code"] == status and err["message"]
    assert err["type"] in ("invalid_request_error", "not_found_error")
    assert server.get("/health").json()["status"] == "ok"


def test_a_client_that_leaves_a_non_streamed_request_frees_its_slot(server_factory):
    import json
    import socket
    srv = server_factory("-np", "2", "-c", "2048")
    body = json.dumps({"prompt": "Tell me a long story", "n_predict": 3000, "ignore_eos": True}).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    deadline = time.time() + 10
    while time.time() < deadline and srv.get("/health").json()["slots_processing"] != 1:
        time.sleep(0.05)
    assert srv.get("/health").json()["slots_processing"] == 1
    sock.close()
    deadline = time.time() + 30
    while time.time() < deadline and srv.get("/health").json()["slots_processing"] != 0:
        time.sleep(0.1)
    assert srv.get("/health").json()["slots_processing"] == 0
