"""Operating the server: structured logs, request ids, backpressure, graceful shutdown (issue #6)."""
from __future__ import annotations

import json
import signal
import threading
import time

import pytest
import requests

pytestmark = pytest.mark.slow


def json_lines(srv) -> list[dict]:
    text = srv.log_path.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    return out


def wait_for(predicate, timeout=15.0, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


# --- logging ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def json_srv(server_factory):
    return server_factory("-np", "1", "-c", "512", "--log-format", "json", "-v")


def test_json_logs_have_one_line_per_request_with_its_id(json_srv):
    r = json_srv.post("/completion", json={"prompt": "Hello", "n_predict": 2},
                      headers={"X-Request-Id": "client-id-42"})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "client-id-42"
    own = json_srv.post("/tokenize", json={"content": "hi"}).headers["X-Request-Id"]
    bad = json_srv.post("/tokenize", json={"content": "hi"}, headers={"X-Request-Id": "has spaces\tand tabs"})
    assert own.startswith("req-") and bad.headers["X-Request-Id"].startswith("req-")
    assert own != bad.headers["X-Request-Id"]

    records = wait_for(lambda: [x for x in json_lines(json_srv) if x.get("request_id") == own] and json_lines(json_srv))
    assert all({"timestamp", "level", "logger", "message"} <= set(x) for x in records)
    access = [x for x in records if x["logger"] == "webapp.access"
              and x.get("request_id") == "client-id-42" and "status" in x]
    assert len(access) == 1
    line = access[0]
    assert (line["method"], line["path"], line["status"]) == ("POST", "/completion", 200)
    assert line["ms"] >= 0 and line["bytes"] > 0
    # -v: the full request and response bodies, tagged with the request's id
    bodies = [x["message"] for x in records if x.get("request_id") == "client-id-42" and "status" not in x]
    assert any(m.startswith("request: ") and '"prompt": "Hello"' in m for m in bodies)
    assert any(m.startswith("response: ") and '"tokens_predicted":2' in m for m in bodies)


def test_a_streamed_response_is_logged_when_it_ends(json_srv):
    r = json_srv.post("/completion", json={"prompt": "Hello", "n_predict": 3, "stream": True},
                      headers={"X-Request-Id": "stream-7"})
    assert r.status_code == 200
    line = wait_for(lambda: [x for x in json_lines(json_srv)
                             if x.get("request_id") == "stream-7" and x["logger"] == "webapp.access"
                             and "status" in x])
    assert line[0]["streamed"] is True and line[0]["completed"] is True
    assert line[0]["bytes"] == len(r.content)


# --- backpressure and --log-disable --------------------------------------------------------
@pytest.fixture(scope="module")
def busy_srv(server_factory):
    return server_factory("-np", "1", "-c", "512", "--max-queue", "1", "--metrics", "--log-disable")


def deferred(srv) -> float:
    for line in srv.get("/metrics").text.splitlines():
        if line.startswith("llamacpp:requests_deferred "):
            return float(line.split()[1])
    raise AssertionError("no requests_deferred")


def test_a_full_queue_answers_503_with_retry_after(busy_srv):
    body = {"prompt": "Tell me a long story", "n_predict": 2000, "ignore_eos": True, "stream": True}
    running = requests.post(busy_srv.url + "/completion", json=body, stream=True, timeout=60)
    chunks = running.iter_content(chunk_size=None)   # kept: dropping the iterator hangs up
    queued: dict = {}
    waiter = threading.Thread(target=lambda: queued.update(r=busy_srv.post(
        "/completion", json={"prompt": "Waiting my turn", "n_predict": 2})))
    try:
        next(chunks)                                        # the only slot is busy
        waiter.start()
        wait_for(lambda: deferred(busy_srv) == 1)           # the queue (of 1) is full
        r = busy_srv.post("/completion", json={"prompt": "One more", "n_predict": 1})
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "1"
        err = r.json()["error"]
        assert err["code"] == 503 and err["type"] == "unavailable_error" and "queue" in err["message"]
        assert busy_srv.get("/health").json()["slots_processing"] == 1   # the rest still answers
    finally:
        running.close()
    waiter.join(60)
    assert queued["r"].status_code == 200                   # the queued one got the slot
    assert busy_srv.post("/completion", json={"prompt": "Now there is room", "n_predict": 1}).status_code == 200


def test_log_disable_writes_nothing(busy_srv):
    assert busy_srv.get("/health").status_code == 200
    assert busy_srv.log_path.read_text(errors="replace").strip() == ""


# --- graceful shutdown --------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_shutdown_ends_in_flight_requests_with_an_error_and_exits_zero(server_factory, sig):
    srv = server_factory("-np", "2", "-c", "512", shared=False)
    body = {"prompt": "Tell me a long story", "n_predict": 2000, "ignore_eos": True}
    streamed = requests.post(srv.url + "/completion", json=dict(body, stream=True), stream=True, timeout=60)
    chunks = streamed.iter_content(chunk_size=None)
    first = next(chunks)
    result: dict = {}
    plain = threading.Thread(target=lambda: result.update(r=srv.post("/completion", json=body, timeout=60)))
    plain.start()
    wait_for(lambda: srv.get("/health").json()["slots_processing"] == 2)

    t0 = time.time()
    srv.proc.send_signal(sig)
    raw = first + b"".join(chunks)
    plain.join(30)
    assert srv.proc.wait(30) == 0
    assert time.time() - t0 < 20

    events = [json.loads(block[len(b"data: "):]) for block in raw.split(b"\n\n") if block.strip()]
    assert all("content" in e for e in events[:-1])
    assert events[-1]["error"]["type"] == "unavailable_error"
    assert events[-1]["error"]["code"] == 503
    r = result["r"]
    assert r.status_code == 503
    assert r.json()["error"]["message"] == "the server is shutting down"
    with pytest.raises(requests.ConnectionError):
        requests.get(srv.url + "/health", timeout=5)


def test_keep_alive_answers_are_not_held_back_by_nagle(server):
    """pywsgi sends a reused connection's headers and body as two segments; without
    TCP_NODELAY the body waited for the client's delayed ACK (~40 ms a request)."""
    with requests.Session() as session:
        session.get(server.url + "/health", timeout=10)
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            assert session.get(server.url + "/health", timeout=10).status_code == 200
            times.append(time.perf_counter() - t0)
    assert sorted(times)[len(times) // 2] < 0.02, times
