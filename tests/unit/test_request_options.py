"""Request options the engine carries out: return_progress, timings_per_token, n_discard."""
from __future__ import annotations

import pytest

from llama_lib.engine import GenerationOptions, ProgressEvent, Request, Scheduler, Status, TokenEvent

from .engine_fakes import FakeContext, gen_request, make_engine, wait_final


@pytest.fixture
def engine():
    made = make_engine(FakeContext(n_ctx=512, n_seq=2, n_batch=16))
    yield made
    made.stop(5)


def events_of(req, timeout: float = 10.0) -> list:
    tokens, final = wait_final(req, timeout)
    return [*tokens, final]


def test_progress_comes_at_admission_and_after_every_prompt_chunk_then_the_tokens(engine):
    req = gen_request(n_prompt=40, n_predict=3, stream=True, return_progress=True)
    engine.submit(req)
    events = events_of(req)
    progress = [ev for ev in events if isinstance(ev, ProgressEvent)]
    assert [(p.total, p.cache, p.processed) for p in progress] == [
        (40, 0, 0), (40, 0, 16), (40, 0, 32), (40, 0, 40)]
    first_token = next(i for i, ev in enumerate(events) if isinstance(ev, TokenEvent))
    assert all(isinstance(ev, ProgressEvent) for ev in events[:first_token])
    assert all(p.timings is None for p in progress)


@pytest.mark.parametrize("opts", [dict(stream=False, return_progress=True),
                                  dict(stream=True, return_progress=False)],
                         ids=["not-streamed", "not-asked"])
def test_no_progress_unless_a_stream_asks_for_it(engine, opts):
    req = gen_request(n_prompt=40, n_predict=2, **opts)
    engine.submit(req)
    assert not any(isinstance(ev, ProgressEvent) for ev in events_of(req))


def test_timings_per_token_puts_the_timings_so_far_on_every_token_and_progress_event(engine):
    req = gen_request(n_prompt=20, n_predict=4, stream=True, return_progress=True,
                      timings_per_token=True)
    engine.submit(req)
    events = events_of(req)
    progress = [ev for ev in events if isinstance(ev, ProgressEvent)]
    assert progress[0].timings["prompt_n"] == 0 and progress[0].timings["prompt_ms"] == 0.0
    assert progress[-1].timings["prompt_n"] == 20
    tokens = [ev for ev in events if isinstance(ev, TokenEvent)]
    assert [ev.timings["predicted_n"] for ev in tokens] == [1, 2, 3, 4]
    assert all(ev.timings["prompt_n"] == 20 for ev in tokens)


def test_without_timings_per_token_only_the_final_event_has_timings(engine):
    req = gen_request(n_prompt=5, n_predict=3)
    engine.submit(req)
    tokens, final = wait_final(req)
    assert all(ev.timings is None for ev in tokens) and final.timings["predicted_n"] == 3


def full_slot(n_discard: int) -> tuple[Scheduler, Request]:
    """A slot whose 32 cells are full: 8 prompt tokens, 24 generated."""
    s = Scheduler(n_slots=1, n_ctx_slot=32, n_batch=64)
    req = Request(prompt_tokens=list(range(8)), options=GenerationOptions(n_keep=4, n_discard=n_discard))
    s.add(req)
    for _ in range(25):
        plan = s.schedule()
        for slot, tok in s.update(plan, {e.slot.id: 7 for e in plan.entries if e.wants_logits}):
            s.accept(slot, tok)
    return s, req


@pytest.mark.parametrize("n_discard, dropped", [(0, 14), (5, 5), (1000, 27)],
                         ids=["default-half", "as-asked", "at-most-all-but-one"])
def test_n_discard_sets_how_much_a_context_shift_drops(n_discard, dropped):
    s, req = full_slot(n_discard)
    plan = s.schedule()
    assert plan.kv_ops == [("shift", 0, 4, dropped, 32)]
    assert s.slots[0].n_past == 32 - dropped and req.status is Status.GENERATING
