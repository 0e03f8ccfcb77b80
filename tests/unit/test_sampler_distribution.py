"""Drawn tokens follow the probabilities the chain reports (a chi-square goodness of fit).

Each case draws N tokens with a fixed seed from fixed logits and bins them into the nine
most probable survivors plus one bin for the rest: 10 bins, 9 degrees of freedom. The
statistic must stay under chi2(9)'s 0.999 quantile, 27.877 (scipy is not a dependency; the
value is from any chi-square table). A fixed seed makes the test deterministic.
"""
from __future__ import annotations

import numpy as np
import pytest

from sampling._chain import Chain
from sampling.params import SamplingParams
from sampling.sampler import (ChainPlan, Dist, MinP, MirostatV2, TailFree, Temperature, TopK,
                              TopP, Typical, make_sampler)

N_VOCAB = 49152
CHI2_DF9_999 = 27.877


def peaked_logits(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(N_VOCAB).astype(np.float32)
    x[rng.choice(N_VOCAB, 30, replace=False)] += np.linspace(9, 5, 30).astype(np.float32)
    return x


CASES = {
    "top_k 10, temperature 1.3": ((TopK(10), Temperature(1.3)), Dist(), 20000),
    "llama-server default chain": ((TopK(40), TopP(0.95), MinP(0.05), Temperature(0.8)),
                                   Dist(), 20000),
    "typical, tail-free": ((TopK(100), Typical(0.9), TailFree(0.97)), Dist(), 20000),
    "dynamic temperature": ((TopK(60), Temperature(0.9, 0.5, 1.0)), Dist(), 20000),
    "temperature only, whole vocabulary": ((Temperature(0.7),), Dist(), 2000),
    "mirostat 2": ((Temperature(1.2),), MirostatV2(6.0, 0.1), 4000),
}


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = counts.sum() * probs
    assert expected.min() >= 5, "bins too small for a chi-square test"
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_draws_follow_the_reported_probabilities(case):
    stages, final, n = CASES[case]
    x = peaked_logits(1)
    chain = Chain(ChainPlan(N_VOCAB, stages, final, seed=2024, n_probs=0))
    drawn = np.array([chain.sample(x) for _ in range(n)])    # no accept: the set never moves
    ids, _, p = chain.candidates()
    assert len(ids) >= 10
    top = np.argsort(-p, kind="stable")[:9]
    counts = np.array([(drawn == ids[i]).sum() for i in top] + [0])
    counts[-1] = n - counts[:-1].sum()
    probs = np.append(p[top].astype(np.float64), 0.0)
    probs[-1] = 1.0 - probs[:-1].sum()
    assert chi_square(counts, probs) < CHI2_DF9_999
    assert set(drawn.tolist()) <= set(ids.tolist())


def test_a_skewed_sampler_fails_the_test():
    """The test has teeth: draws from slightly wrong probabilities are rejected."""
    rng = np.random.default_rng(0)
    p = np.array([0.3, 0.2, 0.1, 0.1, 0.08, 0.07, 0.05, 0.04, 0.03, 0.03])
    wrong = p.copy()
    wrong[0], wrong[1] = 0.28, 0.22
    counts = np.bincount(rng.choice(10, 20000, p=wrong), minlength=10)
    assert chi_square(counts, p) > CHI2_DF9_999


def test_last_probs_are_the_drawn_set():
    x = peaked_logits(3)
    sampler = make_sampler(SamplingParams(seed=5, n_probs=100), N_VOCAB)
    token = sampler.sample(x)
    ids, _, p = sampler.chain.candidates()
    assert [t for t, _ in sampler.last_probs] == ids[np.argsort(-p, kind="stable")].tolist()
    assert sum(q for _, q in sampler.last_probs) == pytest.approx(1.0, abs=1e-5)
    assert token in ids


def test_a_seed_gives_the_same_tokens_whatever_else_is_sampled():
    params = SamplingParams(seed=77, temperature=1.5, top_k=200, min_p=0.0)
    alone = make_sampler(params, N_VOCAB)
    first = [alone.sample(peaked_logits(i)) for i in range(20)]
    again = make_sampler(params, N_VOCAB)
    other = make_sampler(params.with_(seed=78), N_VOCAB)
    second = []
    for i in range(20):
        for _ in range(i % 3):
            other.sample(peaked_logits(100 + i))        # other traffic in between
        second.append(again.sample(peaked_logits(i)))
    assert first == second
    different = make_sampler(params.with_(seed=78), N_VOCAB)
    assert [different.sample(peaked_logits(i)) for i in range(20)] != first
