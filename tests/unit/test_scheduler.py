"""The scheduler as a state machine, fed fake sampled tokens; no model involved."""
from __future__ import annotations

import pytest

from llama_lib.engine import GenerationOptions, Request, Scheduler, Status
from llama_lib.engine.scheduler import QueueFull, truncate_prompt

from .engine_fakes import sched_step


def req(tokens, **opts) -> Request:
    return Request(prompt_tokens=list(tokens), options=GenerationOptions(**opts))


run_step = sched_step


def test_a_request_is_admitted_and_its_prompt_evaluated_in_one_batch():
    s = Scheduler(n_slots=2, n_ctx_slot=64, n_batch=16)
    r = req(range(10))
    s.add(r)
    plan, results = run_step(s)
    assert plan.admitted == [r]
    assert [len(e.tokens) for e in plan.entries] == [10]
    assert plan.entries[0].wants_logits and plan.entries[0].first_pos == 0
    assert r.status is Status.GENERATING and r.n_generated == 1
    assert results[0][0].cache_tokens == list(range(10))


def test_long_prompts_are_chunked_by_the_batch_budget():
    s = Scheduler(n_slots=1, n_ctx_slot=256, n_batch=16)
    s.add(req(range(40)))
    sizes = []
    for _ in range(3):
        plan, _ = run_step(s)
        sizes.append([(len(e.tokens), e.wants_logits, e.first_pos) for e in plan.entries])
    assert sizes == [[(16, False, 0)], [(16, False, 16)], [(8, True, 32)]]


def test_generating_slots_get_one_token_each_before_prompt_chunks():
    s = Scheduler(n_slots=2, n_ctx_slot=256, n_batch=16)
    s.add(req(range(4)))
    run_step(s)                       # slot 0 now generating
    s.add(req(range(100, 130)))
    plan, _ = run_step(s)
    kinds = [(e.slot.id, len(e.tokens)) for e in plan.entries]
    assert kinds[0] == (0, 1)         # the decode token comes first
    assert kinds[1] == (1, 15)        # then the new prompt fills the rest of the budget


def test_without_continuous_batching_prompts_wait_for_generation_to_end():
    s = Scheduler(n_slots=2, n_ctx_slot=256, n_batch=16, cont_batching=False)
    s.add(req(range(4)))
    run_step(s)
    s.add(req(range(10)))
    plan, _ = run_step(s)
    assert [len(e.tokens) for e in plan.entries] == [1]


def test_requests_beyond_free_slots_wait_in_fifo_order():
    s = Scheduler(n_slots=2, n_ctx_slot=64, n_batch=64)
    reqs = [req([i, i + 1]) for i in range(0, 8, 2)]
    for r in reqs:
        s.add(r)
    plan = s.schedule()
    assert plan.admitted == reqs[:2]
    assert list(s.waiting) == reqs[2:]
    s.update(plan, {})
    s.finish(s.slots[reqs[1].slot_id], Status.FINISHED_EOS)
    plan = s.schedule()
    assert plan.admitted == [reqs[2]]


def test_the_longest_common_prefix_picks_the_slot_and_is_reused():
    s = Scheduler(n_slots=3, n_ctx_slot=64, n_batch=64)
    s.slots[2].cache_tokens = [1, 2, 3, 4, 5, 6]
    s.slots[1].cache_tokens = [1, 2, 9]
    r = req([1, 2, 3, 4, 5, 6, 7, 8], cache_prompt=True)
    s.add(r)
    plan = s.schedule()
    assert r.slot_id == 2 and r.n_cached == 6
    assert plan.kv_ops == [("rm", 2, 6, -1)]
    assert plan.entries[0].tokens == [7, 8] and plan.entries[0].first_pos == 6


def test_an_identical_prompt_still_evaluates_its_last_token():
    s = Scheduler(n_slots=1, n_ctx_slot=64, n_batch=64)
    s.slots[0].cache_tokens = [1, 2, 3]
    r = req([1, 2, 3])
    s.add(r)
    plan = s.schedule()
    assert r.n_cached == 2 and plan.entries[0].tokens == [3]


def test_cache_prompt_false_clears_the_slot():
    s = Scheduler(n_slots=1, n_ctx_slot=64, n_batch=64)
    s.slots[0].cache_tokens = [1, 2, 3]
    s.add(req([1, 2, 3, 4], cache_prompt=False))
    plan = s.schedule()
    assert plan.kv_ops == [("rm", 0, 0, -1)] and plan.entries[0].tokens == [1, 2, 3, 4]


def test_id_slot_pins_a_slot_and_others_may_overtake_it():
    s = Scheduler(n_slots=2, n_ctx_slot=64, n_batch=64)
    busy = req([1], id_slot=0)
    s.add(busy)
    run_step(s)
    pinned = req([2], id_slot=0)
    free = req([3])
    s.add(pinned)
    s.add(free)
    plan = s.schedule()
    assert plan.admitted == [free] and free.slot_id == 1
    assert list(s.waiting) == [pinned]


def test_context_shift_discards_half_after_n_keep():
    s = Scheduler(n_slots=1, n_ctx_slot=16, n_batch=16)
    r = req(range(10), n_keep=4)
    s.add(r)
    for _ in range(7):
        run_step(s)
    slot = s.slots[0]
    assert slot.n_past == 16 and slot.pending
    plan, _ = run_step(s)
    assert ("shift", 0, 4, 6, 16) in plan.kv_ops
    assert r.truncated and slot.n_past == 11
    assert slot.cache_tokens[:4] == [0, 1, 2, 3]


def test_a_full_context_without_shift_ends_the_request():
    s = Scheduler(n_slots=1, n_ctx_slot=12, n_batch=16, context_shift=False)
    s.add(req(range(10)))
    ended = None
    for _ in range(5):
        plan, _ = run_step(s)
        if plan.context_full:
            ended = plan.context_full
            break
    assert ended and ended[0].n_past == 12


def test_a_prompt_longer_than_the_context_is_truncated_like_the_seed():
    # n_left 28, blocks of 14: (100 - 4 - 14) // 14 = 5 blocks (70 tokens) go
    assert truncate_prompt(list(range(100)), n_ctx=32, n_keep=4) == [0, 1, 2, 3] + list(range(74, 100))
    s = Scheduler(n_slots=1, n_ctx_slot=32, n_batch=64)
    r = req(range(100), n_keep=4)
    s.add(r)
    plan = s.schedule()
    assert r.truncated and len(plan.entries[0].tokens) < 32


def test_a_prompt_that_must_not_be_truncated_fails_at_admission():
    s = Scheduler(n_slots=1, n_ctx_slot=32, n_batch=64)
    r = req(range(40), truncate_prompt=False)
    s.add(r)
    plan = s.schedule()
    assert plan.finished == [r] and r.status is Status.FAILED and "does not fit" in r.error
    assert s.slots[0].idle


def test_abort_removes_waiting_and_running_requests():
    s = Scheduler(n_slots=1, n_ctx_slot=64, n_batch=64)
    running, waiting = req([1, 2]), req([3, 4])
    s.add(running)
    s.add(waiting)
    run_step(s)
    assert s.abort(waiting.id) is waiting and waiting.status is Status.ABORTED
    assert s.abort(running.id) is running and running.status is Status.ABORTED
    assert s.slots[0].idle and s.slots[0].cache_tokens == [1, 2]
    assert s.abort(12345) is None


def test_the_queue_limit_refuses_extra_requests():
    s = Scheduler(n_slots=1, n_ctx_slot=64, n_batch=64, max_queue=1)
    s.add(req([1]))
    with pytest.raises(QueueFull):
        s.add(req([2]))


def test_embedding_requests_get_a_batch_of_their_own_with_every_output():
    s = Scheduler(n_slots=3, n_ctx_slot=64, n_batch=64)
    s.add(req([1, 2, 3]))
    run_step(s)
    s.add(req([4, 5], embedding=True))
    s.add(req([6, 7, 8], embedding=True))
    plan = s.schedule()
    assert plan.embedding and [e.tokens for e in plan.entries] == [[4, 5], [6, 7, 8]]
    assert all(e.all_outputs for e in plan.entries)
    assert all(e.slot.request.options.embedding for e in plan.entries)   # no generation inside


def test_rank_pooling_puts_one_input_in_each_batch():
    """pooled_inputs_per_batch=1 (reranking: libllama mixes up rank-pooled sequences that
    share a batch): the inputs go one per batch, in order, and all are evaluated."""
    s = Scheduler(n_slots=3, n_ctx_slot=64, n_batch=64, pooled_inputs_per_batch=1)
    for toks in ([4, 5], [6, 7, 8], [9]):
        s.add(req(toks, embedding=True))
    seen = []
    for _ in range(6):
        plan, results = run_step(s)
        if plan.entries:
            assert plan.embedding and len(plan.entries) == 1
            seen.append(plan.entries[0].tokens)
        for slot, _tok in results:
            s.finish(slot, Status.FINISHED_LIMIT)      # the engine reads the vector and ends it
    assert seen == [[4, 5], [6, 7, 8], [9]]


def test_embeddings_and_generation_take_turns_so_neither_starves():
    s = Scheduler(n_slots=3, n_ctx_slot=256, n_batch=64)
    s.add(req([1, 2, 3]))
    run_step(s)                                   # now generating
    kinds = []
    for i in range(6):
        s.add(req([10 + i, 11], embedding=True))
        plan, results = run_step(s)
        kinds.append("embedding" if plan.embedding else "generation")
        for slot, _tok in results:
            if slot.request.options.embedding:
                s.finish(slot, Status.FINISHED_LIMIT)
    assert kinds == ["embedding", "generation"] * 3


@pytest.mark.parametrize("keep_bos, kept", [(False, 0), (True, 1)], ids=["no-bos", "bos-kept"])
def test_context_shift_keeps_bos_in_front_of_n_keep(keep_bos, kept):
    s = Scheduler(n_slots=1, n_ctx_slot=16, n_batch=16, keep_bos=keep_bos)
    s.add(req(range(1, 9)))
    for _ in range(10):
        plan, _results = run_step(s)
        shifts = [op for op in plan.kv_ops if op[0] == "shift"]
        if shifts:
            assert shifts[0][2] == kept      # ("shift", seq, n_keep, n_discard, n_past)
            return
    raise AssertionError("no context shift happened")


def test_similarity_picks_the_slot_sharing_enough_of_the_prompt_else_the_lru_slot():
    s = Scheduler(n_slots=2, n_ctx_slot=256, n_batch=256, similarity=0.5)
    long = list(range(1, 101))
    s.add(req(long, cache_prompt=True))
    plan, _ = run_step(s)
    first = plan.entries[0].slot
    s.finish(first, Status.FINISHED_EOS)
    s.add(req([1, 2] + list(range(200, 240)), cache_prompt=True))   # shares 2 of 42 tokens
    plan, _ = run_step(s)
    assert plan.entries[0].slot is not first
    s.finish(plan.entries[0].slot, Status.FINISHED_EOS)
    s.add(req(long + [7, 8], cache_prompt=True))                     # shares 100 of 102
    plan, _ = run_step(s)
    assert plan.entries[0].slot is first and plan.admitted[0].n_cached == 100


def test_common_prefix_agrees_with_a_plain_loop_on_short_and_long_lists():
    import random
    from llama_lib.engine.slots import common_prefix

    def plain(a, b):
        i = 0
        while i < min(len(a), len(b)) and a[i] == b[i]:
            i += 1
        return i
    rng = random.Random(3)
    for n in (0, 1, 5, 63, 64, 65, 300, 5000):
        a = [rng.randrange(50000) for _ in range(n)]
        cases = [list(a), a[: n // 2], a + [7, 8]]
        for cut in {0, n // 3, n - 1} - {-1}:
            b = list(a)
            if 0 <= cut < n:
                b[cut] += 1
                cases.append(b)
        for b in cases:
            assert common_prefix(a, b) == plain(a, b) == common_prefix(b, a)
