"""n_probs: the model's top N before sampling, and the chain's survivors with
post_sampling_probs; the drawn token's own probability in each."""
from __future__ import annotations

import numpy as np
import pytest

from llama_lib.engine import GenerationOptions, Request
from llama_lib.engine.generation import Generation, top_probs
from sampling import SamplingParams
from sampling.sampler import make_sampler

from .fakes import FakeVocab

N_VOCAB = FakeVocab.n_tokens


def logits_row(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3, N_VOCAB).astype(np.float32)


def full_softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits.astype(np.float64) - logits.max())
    return e / e.sum()


@pytest.mark.parametrize("n", [1, 5, N_VOCAB, N_VOCAB + 10], ids=["one", "five", "all", "more-than-all"])
def test_top_probs_are_the_full_softmax_most_likely_first(n):
    logits = logits_row()
    p = full_softmax(logits)
    top, chosen = top_probs(logits, n, token=17)
    order = np.argsort(-p, kind="stable")[:min(n, N_VOCAB)]
    assert [t for t, _ in top] == order.tolist()
    assert [q for _, q in top] == pytest.approx(p[order].tolist(), rel=1e-5)
    assert chosen == pytest.approx(p[17], rel=1e-5)


def test_top_probs_keep_banned_tokens_out_of_the_count():
    logits = logits_row()
    logits[:N_VOCAB - 3] = -np.inf
    top, chosen = top_probs(logits, 5, token=0)
    assert [t for t, _ in top[:3]] == sorted(range(N_VOCAB - 3, N_VOCAB), key=lambda t: -logits[t])
    assert [q for _, q in top[3:]] == [0.0, 0.0] and chosen == 0.0
    assert sum(q for _, q in top) == pytest.approx(1.0)


def generation(post_sampling: bool, impl: str = "cython", **sampling) -> Generation:
    params = SamplingParams(**{"n_probs": 5, "top_k": 3, "seed": 7, **sampling})
    req = Request(prompt_tokens=[1, 2], options=GenerationOptions(post_sampling_probs=post_sampling),
                  sampling=params)
    return Generation(req, make_sampler(params, N_VOCAB, [1, 2], FakeVocab(), impl=impl), FakeVocab())


def test_without_post_sampling_the_model_distribution_is_reported_even_where_the_chain_cuts():
    gen = generation(post_sampling=False)
    logits = logits_row(1)
    token = gen.sample(logits)
    event, _ = gen.take(token)
    p = full_softmax(logits)
    assert len(event.probs) == 5                               # top_k 3 does not shorten it
    assert [t for t, _ in event.probs] == np.argsort(-p)[:5].tolist()
    assert event.prob == pytest.approx(p[token], rel=1e-5)
    assert len(event.chain_probs) == 3                         # the seed's shape: the survivors


@pytest.mark.parametrize("impl", ["cython", "reference"])
def test_with_post_sampling_the_chain_survivors_and_the_drawn_tokens_share(impl):
    gen = generation(post_sampling=True, impl=impl)
    token = gen.sample(logits_row(1))
    event, _ = gen.take(token)
    assert len(event.probs) == 3 and sum(q for _, q in event.probs) == pytest.approx(1.0, abs=1e-5)
    assert event.prob == pytest.approx(dict(event.probs)[token])


@pytest.mark.parametrize("sampling", [dict(temperature=0.0), dict(top_k=0, temperature=0.7),
                                      dict(top_k=40, top_p=0.9, min_p=0.02),
                                      dict(mirostat=2, top_k=0)],
                         ids=["greedy", "full-vocabulary", "truncated", "mirostat"])
def test_the_drawn_tokens_post_sampling_probability_matches_the_numpy_twin(sampling):
    rows = [logits_row(s) for s in range(6)]
    got = {}
    for impl in ("cython", "reference"):
        sampler = make_sampler(SamplingParams(n_probs=2, seed=11, **sampling), N_VOCAB, [],
                               FakeVocab(), impl=impl)
        seen = []
        for row in rows:
            token = sampler.sample(row)
            sampler.accept(token)
            seen.append((token, sampler.last_prob))
        got[impl] = seen
    assert [t for t, _ in got["cython"]] == [t for t, _ in got["reference"]]
    assert [p for _, p in got["cython"]] == pytest.approx([p for _, p in got["reference"]], rel=1e-4)
    assert all(0.0 < p <= 1.0 for _, p in got["cython"])
