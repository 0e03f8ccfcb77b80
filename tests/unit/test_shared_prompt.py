"""n_cmpl / n choices: the children of a request share its evaluated prompt.

The scheduler is fed fake sampled tokens; the engine runs over the fake context, whose KV
cache is sets of positions per sequence, so a copy (``seq_cp``) shows up as cells."""
from __future__ import annotations

import pytest

from llama_lib.engine import GenerationOptions, Request, Scheduler, Status

from .engine_fakes import FakeContext, gen_request, make_engine, wait_final


def group(tokens, n: int, **opts) -> list[Request]:
    first = Request(prompt_tokens=list(tokens), options=GenerationOptions(**opts))
    children = [Request(prompt_tokens=list(tokens), options=GenerationOptions(**opts), parent=first)
                for _ in range(n - 1)]
    return [first, *children]


def step(sched: Scheduler, token: int = 7):
    plan = sched.schedule()
    sampled = {e.slot.id: token for e in plan.entries if e.wants_logits}
    sampled.update({c.id: token for e in plan.entries for c in e.followers})
    results = sched.update(plan, sampled)
    for slot, tok in results:
        if tok is not None:
            sched.accept(slot, tok)
    return plan, results


def test_the_children_wait_for_the_parents_prompt_and_get_a_copy_of_it():
    s = Scheduler(n_slots=3, n_ctx_slot=256, n_batch=16)
    reqs = group(range(40), 3)
    for r in reqs:
        s.add(r)
    plan, results = step(s)
    assert plan.admitted == reqs and not s.waiting
    assert [(e.slot.id, len(e.tokens)) for e in plan.entries] == [(0, 16)]   # only the parent
    step(s)
    plan, results = step(s)
    assert [(e.slot.id, len(e.tokens), e.wants_logits) for e in plan.entries] == [(0, 8, True)]
    assert [c.id for c in plan.entries[0].followers] == [1, 2]
    assert plan.shares == [(0, 1), (0, 2)]
    assert [slot.id for slot, _ in results] == [0, 1, 2]
    assert all(r.status is Status.GENERATING for r in reqs)
    assert s.slots[1].cache_tokens == s.slots[2].cache_tokens == list(range(40))
    assert [r.n_cached for r in reqs] == [0, 40, 40]
    assert [s.slots[i].n_prompt_evaluated for i in range(3)] == [40, 0, 0]
    plan, _ = step(s)            # from here on each generates on its own
    assert sorted((e.slot.id, len(e.tokens)) for e in plan.entries) == [(0, 1), (1, 1), (2, 1)]


def test_a_group_waits_until_it_has_a_slot_for_every_member():
    s = Scheduler(n_slots=3, n_ctx_slot=256, n_batch=64)
    busy = Request(prompt_tokens=[1, 2, 3], options=GenerationOptions())
    s.add(busy)
    step(s)
    reqs = group(range(10, 20), 3)
    later = Request(prompt_tokens=[5, 6], options=GenerationOptions())
    for r in [*reqs, later]:
        s.add(r)
    plan, _ = step(s)
    assert plan.admitted == [] and list(s.waiting) == [*reqs, later]    # FIFO: nobody overtakes
    s.finish(s.slots[0], Status.FINISHED_LIMIT)
    plan, _ = step(s)
    assert plan.admitted == reqs


def test_children_evaluate_the_prompt_themselves_when_the_parent_ends_before_it_is_done():
    s = Scheduler(n_slots=2, n_ctx_slot=256, n_batch=16)
    parent, child = group(range(40), 2)
    s.add(parent)
    s.add(child)
    step(s)
    s.abort(parent.id)
    plan, _ = step(s)
    assert [(e.slot.id, len(e.tokens), e.first_pos) for e in plan.entries] == [(1, 16, 0)]
    assert child.n_cached == 0


def test_a_child_whose_parent_left_the_queue_is_admitted_on_its_own():
    s = Scheduler(n_slots=2, n_ctx_slot=256, n_batch=64)
    parent, child = group(range(10), 2)
    s.add(parent)
    s.add(child)
    s.abort(parent.id)
    plan, _ = step(s)
    assert plan.admitted == [child] and [len(e.tokens) for e in plan.entries] == [10]


@pytest.mark.parametrize("unified, shifts", [(False, True), (True, False)],
                         ids=["own-kv-streams-shift", "unified-kv-shared-cells-do-not-shift"])
def test_context_shift_of_a_member_only_where_its_cells_are_its_own(unified, shifts):
    s = Scheduler(n_slots=2, n_ctx_slot=32, n_batch=64, kv_cells=64 if unified else 0)
    for r in group(range(8), 2, n_keep=0):
        s.add(r)
    for _ in range(25):          # 8 prompt tokens, then one token a step: the slots are full
        step(s)
    plan = s.schedule()
    if shifts:
        assert [op[0] for op in plan.kv_ops] == ["shift", "shift"] and not plan.context_full
    else:
        assert not plan.kv_ops and [slot.id for slot in plan.context_full] == [0, 1]


def test_the_engine_copies_the_evaluated_prompt_and_every_member_generates():
    ctx = FakeContext(n_ctx=384, n_seq=3, n_batch=16)
    decoded = []
    ctx.on_decode = lambda batch: decoded.append(batch.n_tokens)
    engine = make_engine(ctx)
    try:
        parent = gen_request(n_prompt=40, n_predict=4)
        children = [gen_request(n_prompt=40, n_predict=4) for _ in range(2)]
        for child in children:
            child.parent = parent
        engine.submit_many([parent, *children])
        outputs, finals = [], []
        for req in (parent, *children):
            tokens, final = wait_final(req)
            assert final.status is Status.FINISHED_LIMIT
            outputs.append([ev.token for ev in tokens])
            finals.append(final)
        assert outputs[0] == outputs[1] == outputs[2]       # greedy: the same logits
        assert sum(decoded) == 40 + 3 * 3                    # the prompt once, then 3 tokens each
        assert [(f.n_evaluated, f.n_cached) for f in finals] == [(40, 0), (0, 40), (0, 40)]
        assert [f.timings["prompt_n"] for f in finals] == [40, 0, 0]
    finally:
        engine.stop(5)
