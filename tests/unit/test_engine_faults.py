"""The real Engine over a fake context: one request's fault ends that request alone.

Each case makes one request fail (its sampler raises, its decode fails, the KV cache has no
room, it is aborted in its prompt or its generation, the server shuts down, the loop itself
crashes) and checks what the others get."""
from __future__ import annotations

import threading
import time

import pytest

from llama_lib.engine import Status
from llama_lib.errors import DecodeError, NoKvSlotError
from sampling.grammar import GrammarExhausted

from .engine_fakes import FakeContext, GreedySampler, gen_request, make_engine, wait_final


@pytest.fixture
def engines():
    made = []

    def make(*args, **kw):
        engine = make_engine(*args, **kw)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.stop(5)


def finished_normally(req, n_predict=8):
    tokens, final = wait_final(req)
    assert final.status is Status.FINISHED_LIMIT, (final.status, final.error)
    assert len(tokens) == n_predict and final.n_predicted == n_predict
    return tokens


class RaisingSampler(GreedySampler):
    def __init__(self, after: int, exc: BaseException):
        self.left, self.exc = after, exc

    def sample(self, logits):
        if self.left == 0:
            raise self.exc
        self.left -= 1
        return super().sample(logits)


def test_a_sampler_that_raises_fails_its_request_alone(engines):
    engine = engines()
    bad, good = gen_request(), gen_request(first=40)
    bad.sampler = RaisingSampler(3, RuntimeError("boom"))
    engine.submit_many([bad, good])
    _tokens, final = wait_final(bad)
    assert final.status is Status.FAILED and final.error_type == "server_error"
    assert "boom" in final.error
    finished_normally(good)
    finished_normally(engine.submit(gen_request(first=70)))   # the engine goes on
    assert engine.running and engine.failure is None


def test_a_grammar_with_no_allowed_token_ends_the_request_as_finished_grammar(engines):
    engine = engines()
    req, other = gen_request(), gen_request(first=40)
    req.sampler = RaisingSampler(2, GrammarExhausted("nothing allowed"))
    engine.submit_many([req, other])
    tokens, final = wait_final(req)
    assert final.status is Status.FINISHED_GRAMMAR and len(tokens) == 2 and final.error is None
    finished_normally(other)


def test_a_failed_decode_fails_that_batch_and_the_engine_goes_on(engines):
    ctx = FakeContext()
    engine = engines(ctx)
    ctx.fail_decodes.append(DecodeError("decode broke", code=-3, log_tail=[]))
    req = engine.submit(gen_request())
    _tokens, final = wait_final(req)
    assert final.status is Status.FAILED and final.error_type == "server_error"
    finished_normally(engine.submit(gen_request(first=50)))


def test_no_kv_room_once_fails_nobody(engines):
    ctx = FakeContext()
    engine = engines(ctx)
    reqs = [gen_request(n_prompt=20), gen_request(n_prompt=20, first=60)]
    ctx.fail_decodes.append(NoKvSlotError("no room", code=1, log_tail=[]))
    engine.submit_many(reqs)
    for req in reqs:
        finished_normally(req)


def test_a_unified_cache_that_fills_up_fails_nobody(engines):
    # two slots that each believe they own all 64 cells of a unified cache
    ctx = FakeContext(n_ctx=64, n_seq=2, n_batch=32, unified=True)
    engine = engines(ctx)
    reqs = [gen_request(n_prompt=10, n_predict=45), gen_request(n_prompt=10, n_predict=45, first=60)]
    engine.submit_many(reqs)
    for req in reqs:
        tokens, final = wait_final(req)
        assert final.status in (Status.FINISHED_LIMIT, Status.FINISHED_CONTEXT), final.error
        assert final.status is not Status.FAILED
    assert sum(len(c) for c in ctx.cells.values()) <= 64


def test_abort_during_the_prompt_leaves_the_other_request_running(engines):
    ctx = FakeContext(n_ctx=512, n_batch=8)
    engine = engines(ctx)
    long, short = gen_request(n_prompt=200), gen_request(first=40, n_predict=20)
    seen = threading.Event()

    def slow(batch):         # 25 prompt steps of 8 tokens take about 0.25 s
        seen.set()
        time.sleep(0.01)
    ctx.on_decode = slow
    engine.submit_many([long, short])
    assert seen.wait(5)
    engine.abort(long.id)
    _tokens, final = wait_final(long)
    assert final.status is Status.ABORTED and final.n_predicted == 0
    finished_normally(short, 20)
    assert engine.scheduler.slots[long.slot_id].idle


def test_abort_during_generation(engines):
    ctx = FakeContext()
    ctx.on_decode = lambda batch: time.sleep(0.005)
    engine = engines(ctx)
    req, other = gen_request(n_predict=200), gen_request(first=40, n_predict=30)
    engine.submit_many([req, other])
    deadline = time.monotonic() + 5
    while req.n_generated < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.abort(req.id)
    tokens, final = wait_final(req)
    assert final.status is Status.ABORTED and 3 <= final.n_predicted < 200
    finished_normally(other, 30)


def test_shutdown_with_work_queued_answers_everything(engines):
    ctx = FakeContext(n_seq=1)
    ctx.on_decode = lambda batch: time.sleep(0.01)
    engine = engines(ctx)
    reqs = [gen_request(n_predict=100, first=10 + i) for i in range(4)]   # one runs, three wait
    engine.submit_many(reqs)
    time.sleep(0.05)
    engine.stop(5)
    for req in reqs:
        _tokens, final = wait_final(req)
        assert final.status is Status.ABORTED and final.error_type == "unavailable_error"
    late = engine.submit(gen_request())
    _tokens, final = wait_final(late, timeout=1)
    assert final.status is Status.ABORTED and final.error_type == "unavailable_error"


def test_a_crashed_loop_fails_in_flight_work_and_refuses_new_work(engines, monkeypatch):
    engine = engines()
    failures = []
    engine.on_failure = failures.append
    running = engine.submit(gen_request(n_predict=10_000))
    deadline = time.monotonic() + 5
    while running.n_generated < 2 and time.monotonic() < deadline:
        time.sleep(0.01)

    def broken():
        raise RuntimeError("scheduler bug")
    monkeypatch.setattr(engine.scheduler, "schedule", broken)
    _tokens, final = wait_final(running)
    assert final.status is Status.FAILED and final.error_type == "server_error"
    deadline = time.monotonic() + 5
    while not failures and time.monotonic() < deadline:
        time.sleep(0.01)
    assert failures and "scheduler bug" in failures[0] and engine.failure == failures[0]
    assert not engine.running
    late = engine.submit(gen_request())
    _tokens, final = wait_final(late, timeout=1)
    assert final.status is Status.ABORTED and final.error_type == "unavailable_error"
    assert "scheduler bug" in final.error


def test_submit_while_the_engine_drains_its_inbox(engines):
    """submit() counts queued requests without iterating the inbox the engine pops from."""
    engine = engines(FakeContext(n_seq=2), max_queue=1000)
    errors = []

    def flood():
        try:
            for i in range(300):
                engine.submit(gen_request(n_predict=1, first=1 + i % 200))
        except Exception as exc:   # RuntimeError: deque mutated during iteration, before the fix
            errors.append(exc)
    threads = [threading.Thread(target=flood) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
