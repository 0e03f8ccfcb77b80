"""The routes over the real Engine driving a fake context (no model): what happens when a
stream's client goes away and when the queue is full, in the fast tier."""
from __future__ import annotations

import threading
import time

import pytest


from .engine_fakes import FakeContext, wait_for


@pytest.mark.parametrize("path, body", [
    ("/completion", {"prompt": "abc", "n_predict": 10_000, "stream": True}),
    ("/v1/completions", {"prompt": "abc", "max_tokens": 10_000, "stream": True, "n": 2}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                              "max_tokens": 10_000, "stream": True}),
], ids=["native", "openai-completions-n2", "openai-chat"])
def test_closing_a_stream_aborts_its_requests(app_over, path, body):
    ctx = FakeContext(n_ctx=20_000 * 2, n_seq=2)
    ctx.on_decode = lambda batch: time.sleep(0.002)
    app, engine = app_over(ctx, "--chat-template", "chatml")
    response = app.test_client().post(path, json=body, buffered=False)
    assert response.status_code == 200
    chunks = iter(response.response)
    for _ in range(4):
        next(chunks)
    assert engine.n_processing >= 1
    response.close()                         # the client went away
    assert wait_for(lambda: engine.scheduler.n_processing == 0), "the slots stayed busy"


def test_a_full_queue_answers_503_with_retry_after_and_keeps_nothing(app_over):
    ctx = FakeContext(n_seq=1)
    ctx.on_decode = lambda batch: time.sleep(0.005)
    app, engine = app_over(ctx, "--max-queue", "1", max_queue=1)
    client = app.test_client()
    results = []

    def post(body):
        results.append(client.post("/completion", json=body))
    first = threading.Thread(target=post, args=({"prompt": "hold", "n_predict": 100},))
    first.start()
    assert wait_for(lambda: engine.scheduler.n_processing == 1)
    second = threading.Thread(target=post, args=({"prompt": "wait", "n_predict": 2},))
    second.start()
    assert wait_for(lambda: engine.n_waiting == 1)
    r = client.post("/completion", json={"prompt": ["a", "b"], "n_predict": 5})
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert r.get_json()["error"]["type"] == "unavailable_error"
    first.join(10)
    second.join(10)
    assert [x.status_code for x in results] == [200, 200]
    assert engine.n_waiting == 0 and engine.scheduler.n_processing == 0
