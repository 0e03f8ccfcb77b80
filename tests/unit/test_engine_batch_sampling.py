"""The engine draws for all its generating slots in one call (Sampler.sample_rows, or on
worker threads while it handles the tokens drawn first: Sampler.start_rows) and the tokens
are those each slot's own sampler would draw alone; ignore_eos is a bias fixed at
admission, in every path."""
from __future__ import annotations

import numpy as np
import pytest

from llama_lib.engine import GenerationOptions, Request
from sampling import SamplingParams, make_sampler
from sampling.params import parse_sampling_params

from .engine_fakes import N_VOCAB, FakeContext, make_engine, wait_final


class RandomContext(FakeContext):
    """Logits drawn from (sequence, position) alone, so two runs see the same rows whatever
    the batch layout; ``eos_logit``: token 0's logit (None: -inf, never sampled)."""

    eos_logit = None

    def decode(self, batch) -> None:
        super().decode(batch)
        n = batch.n_tokens
        seqs, positions = batch.seq[:n].tolist(), batch.pos[:n].tolist()
        for i in np.flatnonzero(batch.logits[:n]):
            rng = np.random.default_rng([seqs[i], positions[i]])
            row = (rng.standard_normal(N_VOCAB) * 3).astype(np.float32)
            row[0] = -np.inf if self.eos_logit is None else self.eos_logit
            self._logits[i] = row


def alone_factory(params, n_vocab, prompt_tokens, vocab, n_ctx=0):
    sampler = make_sampler(params, n_vocab, prompt_tokens, vocab, n_ctx)
    sampler.batchable = False           # the per-slot path
    return sampler


def run(factory, bodies: list[dict], eos_logit=None, n_predict: int = 12, **config):
    ctx = RandomContext(n_ctx=512, n_seq=len(bodies))
    ctx.eos_logit = eos_logit
    engine = make_engine(ctx, **config)
    engine.sampler_factory = factory
    try:
        reqs = []
        for i, body in enumerate(bodies):
            opts = {k: body.pop(k) for k in ("ignore_eos",) if k in body}
            reqs.append(Request(prompt_tokens=list(range(10 + i, 15 + i)),
                                sampling=parse_sampling_params(body, SamplingParams()),
                                options=GenerationOptions(n_predict=n_predict, cache_prompt=False,
                                                          **opts)))
        engine.submit_many(reqs)
        out = []
        for req in reqs:
            tokens, final = wait_final(req)
            out.append(([ev.token for ev in tokens], final.status.name))
        return out
    finally:
        engine.stop()


BODIES = [{"seed": 1}, {"seed": 2, "temperature": 1.5, "top_k": 0}, {"temperature": 0},
          {"seed": 3, "top_p": 0.5, "min_p": 0.0, "repeat_penalty": 1.3},
          {"seed": 4, "mirostat": 2}, {"seed": 5, "samplers": ["top_k", "typ_p", "xtc"],
                                       "xtc_probability": 0.5, "xtc_threshold": 0.05}]


def test_slots_drawn_together_draw_what_each_draws_alone(monkeypatch):
    from sampling.sampler import Sampler
    widths = []
    real = Sampler.sample_rows

    def spy(samplers, table, rows, n_threads=1):
        widths.append(len(samplers))
        return real(samplers, table, rows, n_threads)
    monkeypatch.setattr(Sampler, "sample_rows", staticmethod(spy))
    together = run(make_sampler, [dict(b) for b in BODIES])
    assert max(widths) == len(BODIES)       # every slot in one call
    widths.clear()
    alone = run(alone_factory, [dict(b) for b in BODIES])
    assert widths == []
    assert together == alone
    # split over OS threads (as when the model is offloaded): the same tokens
    assert run(make_sampler, [dict(b) for b in BODIES * 3], sample_threads=3)[:len(BODIES)] == alone
    assert all(len(tokens) == 12 for tokens, _ in together)
    assert len({tuple(tokens) for tokens, _ in together}) == len(BODIES)   # really sampled


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_drawing_on_workers_while_handling_tokens_draws_the_same(monkeypatch, threads):
    """sample_async (the server's way with the model offloaded): the batch is started on
    worker threads and each token taken as it comes; the same tokens and endings as each
    slot drawing alone, with a request that ends early (EOS) among them."""
    from sampling.sampler import Sampler
    started = []
    real = Sampler.start_rows

    def spy(samplers, table, rows, n_threads=1):
        started.append((len(samplers), n_threads))
        return real(samplers, table, rows, n_threads)
    monkeypatch.setattr(Sampler, "start_rows", staticmethod(spy))
    bodies = [dict(b) for b in BODIES * 2] + [{"seed": 7}]
    alone = run(alone_factory, [dict(b) for b in bodies], eos_logit=6.0)
    assert started == []
    together = run(make_sampler, [dict(b) for b in bodies], eos_logit=6.0,
                   sample_async=True, sample_threads=threads)
    assert together == alone
    assert max(n for n, _ in started) > len(bodies) // 2 and {t for _, t in started} == {threads}
    assert {status for _, status in together} == {"FINISHED_EOS", "FINISHED_LIMIT"}


def test_a_draw_on_workers_gives_each_rows_token_and_finishes_once():
    from sampling._chain import sample_rows, start_rows
    rng = np.random.default_rng(3)
    table = (rng.standard_normal((9, N_VOCAB)) * 3).astype(np.float32)
    rows = np.array([4, 0, 8, 8, 2, 1, 7], np.int32)

    def chains():
        return [make_sampler(SamplingParams(seed=s), N_VOCAB).chain for s in range(len(rows))]
    want = np.zeros(len(rows), np.int32)
    sample_rows(chains(), table, rows, want)
    for threads in (0, 1, 2, 5):        # 0: no worker, the caller draws every row
        for help in (True, False):          # False: the caller only waits (workers draw)
            draw = start_rows(chains(), table, rows, threads)
            got = [draw.token(k, help) for k in reversed(range(len(rows)))][::-1]   # any order
            draw.finish()
            draw.finish()
            assert got == want.tolist()
        with pytest.raises(IndexError):
            draw.token(len(rows))
    empty = start_rows([], table, np.zeros(0, np.int32))
    empty.finish()
    unfinished = start_rows(chains(), table, rows, 2)   # dropped unfinished: waits, no leak
    del unfinished
    again = start_rows(chains(), table, rows, 2)        # the pool is free again
    assert [again.token(k) for k in range(len(rows))] == want.tolist()
    again.finish()


@pytest.mark.parametrize("factory", [make_sampler, alone_factory], ids=["together", "alone"])
def test_ignore_eos_is_a_bias_the_sampler_applies(factory):
    """EOS is every row's best logit: a request that ignores it still never draws it."""
    bodies = [{"temperature": 0, "ignore_eos": True}, {"seed": 9, "ignore_eos": True},
              {"temperature": 0}]
    (greedy, g_status), (dist, d_status), (plain, p_status) = run(factory, bodies, eos_logit=100.0)
    assert len(greedy) == 12 and 0 not in greedy and g_status == "FINISHED_LIMIT"
    assert len(dist) == 12 and 0 not in dist and d_status == "FINISHED_LIMIT"
    assert plain == [] and p_status == "FINISHED_EOS"


def test_n_probs_with_ignore_eos_reports_the_models_own_distribution():
    ctx = RandomContext(n_ctx=256, n_seq=1)
    ctx.eos_logit = 100.0
    engine = make_engine(ctx)
    engine.sampler_factory = make_sampler
    try:
        req = Request(prompt_tokens=[10, 11, 12],
                      sampling=parse_sampling_params({"temperature": 0, "n_probs": 3}, SamplingParams()),
                      options=GenerationOptions(n_predict=3, cache_prompt=False, ignore_eos=True))
        req.sampler = engine.make_sampler(req.sampling, req.prompt_tokens, ignore_eos=True)
        assert not req.sampler.batchable            # n_probs: drawn alone
        engine.submit(req)
        tokens, final = wait_final(req)
    finally:
        engine.stop()
    assert len(tokens) == 3 and all(ev.token != 0 for ev in tokens)
    assert all(ev.probs[0][0] == 0 and ev.probs[0][1] > 0.99 for ev in tokens)


def test_start_rows_refuses_what_it_cannot_draw():
    from sampling._chain import start_rows
    table = np.zeros((2, N_VOCAB), np.float32)
    plain = make_sampler(SamplingParams(seed=1), N_VOCAB).chain
    with pytest.raises(ValueError, match="outside the table"):
        start_rows([plain], table, np.array([2], np.int32))
    with pytest.raises(ValueError, match="n_probs"):
        start_rows([make_sampler(SamplingParams(seed=1, n_probs=2), N_VOCAB).chain], table,
                   np.array([0], np.int32))
    with pytest.raises(ValueError, match="differ in length"):
        start_rows([plain, plain], table, np.array([0], np.int32))
    ok = start_rows([plain], table, np.array([1], np.int32))     # refusals left the pool free
    assert 0 <= ok.token(0) < N_VOCAB
    ok.finish()


def test_sample_rows_refuses_what_it_cannot_draw():
    from sampling._chain import sample_rows
    table = np.zeros((2, N_VOCAB), np.float32)
    out = np.zeros(1, np.int32)
    plain = make_sampler(SamplingParams(seed=1), N_VOCAB).chain
    with pytest.raises(ValueError, match="outside the table"):
        sample_rows([plain], table, np.array([2], np.int32), out)
    with pytest.raises(ValueError, match="logits a row"):
        sample_rows([plain], np.zeros((2, 10), np.float32), np.array([0], np.int32), out)
    with pytest.raises(ValueError, match="n_probs"):
        sample_rows([make_sampler(SamplingParams(seed=1, n_probs=2), N_VOCAB).chain], table,
                    np.array([0], np.int32), out)
    with pytest.raises(ValueError, match="differ in length"):
        sample_rows([plain, plain], table, np.array([0], np.int32), out)
    with pytest.raises(TypeError):
        sample_rows([object()], table, np.array([0], np.int32), out)
