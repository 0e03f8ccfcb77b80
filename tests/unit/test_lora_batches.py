"""Per-request LoRA scales: requests with different adapter sets never share a batch, and
the sets take turns batch by batch, so every request keeps running."""
from __future__ import annotations

from llama_lib.engine import GenerationOptions, Request, Scheduler, Status

from .engine_fakes import FakeContext, gen_request, make_engine, sched_step, wait_final

A = (1.0, 0.0)
B = (0.0, 0.5)


def req(tokens, lora=None) -> Request:
    return Request(prompt_tokens=list(tokens), options=GenerationOptions(lora=lora))


def step(sched: Scheduler, token: int = 7):
    return sched_step(sched, token)[0]


def test_requests_with_different_adapter_sets_take_turns_batch_by_batch():
    s = Scheduler(n_slots=3, n_ctx_slot=256, n_batch=64)
    reqs = [req(range(5), A), req(range(10, 15), B), req(range(20, 25), A)]
    for r in reqs:
        s.add(r)
    batches = []
    for _ in range(6):
        plan = step(s)
        batches.append((plan.lora, sorted(e.slot.request.id for e in plan.entries)))
    a_ids = sorted([reqs[0].id, reqs[2].id])
    assert batches == [(A, a_ids), (B, [reqs[1].id])] * 3
    assert [r.n_generated for r in reqs] == [3, 3, 3]


def test_the_servers_scales_are_a_set_of_their_own():
    s = Scheduler(n_slots=2, n_ctx_slot=256, n_batch=64)
    s.add(req(range(5)))
    s.add(req(range(10, 15), A))
    kinds = [step(s).lora for _ in range(4)]
    assert sorted(kinds[:2], key=str) == sorted([None, A], key=str) and kinds[2:] == kinds[:2]


def test_a_set_whose_turn_has_nothing_to_decode_passes_it_on():
    s = Scheduler(n_slots=2, n_ctx_slot=8, n_batch=64, context_shift=False)
    full = req(range(7), A)
    s.add(full)
    step(s)
    step(s)                            # 7 prompt cells + its first token: the slot is full
    s.add(req(range(10, 15), B))
    assert step(s).lora == B           # B's turn
    plan = s.schedule()                # A's turn would decode nothing: B's comes again at once
    assert [slot.request for slot in plan.context_full] == [full]
    assert plan.lora == B and [(e.slot.id, len(e.tokens)) for e in plan.entries] == [(1, 1)]


def test_a_cached_prompt_is_reused_only_under_the_same_adapters():
    s = Scheduler(n_slots=1, n_ctx_slot=256, n_batch=64)
    first = Request(prompt_tokens=list(range(20)), options=GenerationOptions(lora=A, cache_prompt=True))
    s.add(first)
    step(s)
    s.finish(s.slots[0], Status.FINISHED_LIMIT)
    other = Request(prompt_tokens=list(range(20)) + [99], options=GenerationOptions(lora=B))
    s.add(other)
    step(s)
    assert other.n_cached == 0
    s.finish(s.slots[0], Status.FINISHED_LIMIT)
    same = Request(prompt_tokens=list(range(20)) + [99, 98], options=GenerationOptions(lora=B))
    s.add(same)
    step(s)
    assert same.n_cached == 21


class LoraContext(FakeContext):
    """Records the adapter scales each decoded batch ran with."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.scales: list[float] = []
        self.batches: list[tuple[tuple, frozenset]] = []
        self.on_decode = self._record

    def set_lora(self, adapters, scales) -> None:
        self.scales = {a: s for a, s in zip(adapters, scales)}

    def _record(self, batch) -> None:
        n = batch.n_tokens
        self.batches.append((tuple(sorted(self.scales.items())), frozenset(batch.seq[:n].tolist())))


def test_the_engine_gives_each_batch_its_requests_scales():
    ctx = LoraContext(n_ctx=256, n_seq=2, n_batch=32)
    engine = make_engine(ctx)
    try:
        def setup(e):
            e.lora_adapters = ["a", "b"]
            e.set_lora([0.25, 0.0])
        engine.call(setup).get(5)
        mine = gen_request(n_prompt=6, n_predict=5, lora=(1.0, 0.5))
        theirs = gen_request(n_prompt=6, n_predict=5, first=40)
        engine.submit_many([mine, theirs])
        for r in (mine, theirs):
            tokens, final = wait_final(r)
            assert final.status is Status.FINISHED_LIMIT and len(tokens) == 5
        served = {}
        for scales, seqs in ctx.batches:
            assert len(seqs) == 1, "requests with different adapters shared a batch"
            served.setdefault(next(iter(seqs)), set()).add(scales)
        assert served[mine.slot_id] == {(("a", 1.0), ("b", 0.5))}
        assert served[theirs.slot_id] == {(("a", 0.25),)}
        assert engine.lora_scales == [0.25, 0.0]      # the server's scales did not change
    finally:
        engine.stop(5)
