"""The compiled chain agrees with its numpy twin, stage by stage and as whole chains."""
from __future__ import annotations

import numpy as np
import pytest

from sampling._chain import Chain
from sampling._reference import ReferenceChain
from sampling.params import SamplingParams
from sampling.sampler import (ChainPlan, Dist, Dry, DryBreakers, Greedy, MinP, Mirostat,
                              MirostatV2, Penalties, TailFree, Temperature, TopK, TopNSigma,
                              TopP, Typical, Xtc, build_plan, make_sampler)

N_VOCAB = 49152
HISTORY = tuple(int(t) for t in np.random.default_rng(7).integers(0, 300, 200)) + (5, 6, 7, 5, 6)
BREAKERS = DryBreakers(N_VOCAB, {11: [()], 12: [(13, 14)], 6: [(99,)]})


def logits_of(kind: str, n: int = N_VOCAB, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return (rng.standard_normal(n) * 3).astype(np.float32)
    if kind == "peaked":         # a few strong tokens over a long flat tail, like a real model
        x = rng.standard_normal(n).astype(np.float32)
        x[rng.choice(300, 12, replace=False)] += np.linspace(12, 4, 12).astype(np.float32)
        return x
    if kind == "ties":           # few distinct values: ties at every cut
        return rng.integers(-3, 4, n).astype(np.float32)
    if kind == "neg_inf":        # most of the vocabulary banned, as a grammar or bias leaves it
        x = (rng.standard_normal(n) * 2).astype(np.float32)
        x[rng.random(n) < 0.9] = -np.inf
        return x
    if kind == "all_equal":
        return np.full(n, 0.5, np.float32)
    raise ValueError(kind)


LOGITS = ["normal", "peaked", "ties", "neg_inf", "all_equal"]

STAGES = {
    "top_k 1": TopK(1), "top_k 40": TopK(40), "top_k 2000": TopK(2000),
    "top_p 0.5": TopP(0.5), "top_p 0.95 keep 50": TopP(0.95, 50), "top_p 0": TopP(0.0),
    "min_p 0.05": MinP(0.05), "min_p 0.5 keep 30": MinP(0.5, 30),
    "tail_free 0.95": TailFree(0.95), "tail_free 0.5 keep 5": TailFree(0.5, 5),
    "typical 0.9": Typical(0.9), "typical 0.2 keep 10": Typical(0.2, 10),
    "temperature 0.7": Temperature(0.7), "temperature 0": Temperature(0.0),
    "dynatemp": Temperature(0.8, 0.5, 1.0), "dynatemp exp 2": Temperature(1.0, 1.0, 2.0),
    "top_n_sigma 1": TopNSigma(1.0), "top_n_sigma 3": TopNSigma(3.0),
    "xtc always": Xtc(1.0, 0.05, 1), "xtc keep 100": Xtc(1.0, 0.01, 100),
    "penalties": Penalties(64, 1.3, 0.2, 0.3),
    "penalties skip 5": Penalties(64, 1.5, 0.0, 0.0, 5),
    "dry": Dry(0.8, 1.75, 2, 1000, BREAKERS),
    "dry short window": Dry(2.0, 1.5, 1, 8, BREAKERS),
}
# what the set looks like when the stage gets it: full, compact sorted, compact unsorted,
# full with edits
BEFORE = {
    "full": (), "after top_k": (TopK(500),), "after min_p": (MinP(0.001),),
    "after penalties": (Penalties(64, 1.2, 0.1, 0.1),),
}


def plan(stages, final=Dist(), seed=1234, history=HISTORY, n_probs=0, bias=()):
    ids = np.array([t for t, _ in bias], np.int32)
    values = np.array([b for _, b in bias], np.float32)
    return ChainPlan(N_VOCAB, tuple(stages), final, seed, n_probs, ids, values, history)


def assert_same_sets(ours, twin):
    ids, logits, p = ours
    r_ids, r_logits, r_p = twin
    np.testing.assert_array_equal(ids, r_ids)
    np.testing.assert_allclose(logits, r_logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(p, r_p, atol=1e-6)


@pytest.mark.parametrize("logits", LOGITS)
@pytest.mark.parametrize("before", list(BEFORE), ids=list(BEFORE))
@pytest.mark.parametrize("stage", list(STAGES), ids=list(STAGES))
def test_each_stage_matches_the_twin(stage, before, logits):
    p = plan(BEFORE[before] + (STAGES[stage],))
    x = logits_of(logits)
    assert_same_sets(Chain(p).apply(x), ReferenceChain(p).apply(x))


@pytest.mark.parametrize("logits", ["normal", "neg_inf"])
def test_logit_bias_matches_the_twin(logits):
    bias = [(3, 5.0), (3, 1.5), (10, -np.inf), (int(np.argmax(logits_of(logits))), -100.0)]
    p = plan((TopK(20),), bias=bias)
    x = logits_of(logits)
    assert_same_sets(Chain(p).apply(x), ReferenceChain(p).apply(x))


def test_twin_and_chain_agree_when_every_logit_is_neg_inf():
    x = np.full(N_VOCAB, -np.inf, np.float32)
    for stages in [(), (TopK(40),), (MinP(0.1),), (TopNSigma(1.0),), (TopP(0.9),)]:
        p = plan(stages)
        ours, twin = Chain(p).apply(x), ReferenceChain(p).apply(x)
        assert_same_sets(ours, twin)
        assert ours[0].tolist() == [0]


def _random_chain(rng):
    pool = [TopK(int(rng.integers(1, 200))), TopP(float(rng.uniform(0.3, 0.99))),
            MinP(float(rng.uniform(0.0, 0.2))), TailFree(float(rng.uniform(0.5, 0.99))),
            Typical(float(rng.uniform(0.3, 0.99))),
            Temperature(float(rng.uniform(0.3, 1.5)), float(rng.choice([0.0, 0.4])), 1.0),
            TopNSigma(float(rng.uniform(0.5, 3))), Xtc(0.5, 0.1, 1),
            Penalties(64, 1.2, 0.1, 0.05), Dry(0.8, 1.75, 2, 256, BREAKERS)]
    order = rng.permutation(len(pool))[: int(rng.integers(2, len(pool) + 1))]
    return [pool[i] for i in order]


@pytest.mark.parametrize("case", range(12))
def test_random_chains_sample_the_same_tokens(case):
    rng = np.random.default_rng(case)
    stages = _random_chain(rng)
    p = plan(stages, seed=case, n_probs=5)
    ours, twin = Chain(p), ReferenceChain(p)
    for step in range(6):
        x = logits_of(["normal", "peaked"][step % 2], seed=100 * case + step)
        a, b = ours.sample(x), twin.sample(x)
        assert a == b, f"step {step}: chain {stages}"
        assert_same_sets(ours.candidates(), twin.candidates())
        assert [t for t, _ in ours.last_probs] == [t for t, _ in twin.last_probs]
        np.testing.assert_allclose([q for _, q in ours.last_probs],
                                   [q for _, q in twin.last_probs], atol=1e-6)
        ours.accept(a)
        twin.accept(b)


@pytest.mark.parametrize("final", [Mirostat(5.0, 0.1), MirostatV2(5.0, 0.1),
                                   Mirostat(3.0, 0.3), MirostatV2(2.0, 0.5)],
                         ids=["v1", "v2", "v1 low tau", "v2 low tau"])
def test_mirostat_samples_the_same_tokens_and_mu(final):
    p = plan((Temperature(0.9),), final=final, seed=99, n_probs=3)
    ours, twin = Chain(p), ReferenceChain(p)
    for step in range(25):
        x = logits_of("peaked", seed=step)
        a, b = ours.sample(x), twin.sample(x)
        assert a == b, f"step {step}"
        assert_same_sets(ours.candidates(), twin.candidates())
        ours.accept(a)
        twin.accept(b)
        assert ours.mirostat_mu == pytest.approx(twin.mirostat_mu, abs=1e-4)


@pytest.mark.parametrize("stages", [(), (Penalties(16, 1.5, 0.5, 0.5),)],
                         ids=["plain", "penalties"])
def test_greedy_is_argmax_with_probabilities_of_every_token(stages):
    p = plan(stages, final=Greedy(), n_probs=4, bias=[(17, 3.0)])
    ours, twin = Chain(p), ReferenceChain(p)
    for step in range(5):
        x = logits_of("normal", seed=step)
        assert ours.sample(x) == twin.sample(x)
        assert [t for t, _ in ours.last_probs] == [t for t, _ in twin.last_probs]
        np.testing.assert_allclose([q for _, q in ours.last_probs],
                                   [q for _, q in twin.last_probs], rtol=1e-5)
        ours.accept(step)
        twin.accept(step)


def test_greedy_without_edits_is_numpy_argmax_first_of_ties():
    p = plan((), final=Greedy())
    x = logits_of("ties")
    assert Chain(p).sample(x) == int(np.argmax(x))
    x[N_VOCAB - 1] = 100.0
    assert Chain(p).sample(x) == N_VOCAB - 1


@pytest.mark.parametrize("impl", ["cython", "reference"])
def test_make_sampler_selects_the_implementation(impl):
    s = make_sampler(SamplingParams(seed=5, n_probs=2), N_VOCAB, impl=impl)
    token = s.sample(logits_of("peaked"))
    assert isinstance(token, int) and len(s.last_probs) == 2


def test_both_implementations_generate_the_same_sequence():
    params = SamplingParams(seed=11, repeat_penalty=1.2, dry_multiplier=0.5, top_n_sigma=2.0,
                            xtc_probability=0.5, typical_p=0.9, tfs_z=0.95,
                            dynatemp_range=0.3)
    runs = []
    for impl in ("cython", "reference"):
        s = make_sampler(params, N_VOCAB, prompt_tokens=list(range(40)), impl=impl)
        tokens = []
        for step in range(12):
            t = s.sample(logits_of("peaked", seed=step))
            s.accept(t)
            tokens.append(t)
        runs.append(tokens)
    assert runs[0] == runs[1]


# --- hand-computed cases where libllama has no oracle -----------------------------------
SMALL = 64


def small_logits(probs) -> np.ndarray:
    x = np.full(SMALL, -np.inf, np.float32)
    x[: len(probs)] = np.log(np.asarray(probs, np.float64)).astype(np.float32)
    return x


def survivors(stages, x, history=(), n_vocab=SMALL):
    plan = ChainPlan(n_vocab, tuple(stages), Dist(), 1, 0, history=tuple(history))
    ours, twin = Chain(plan).apply(x), ReferenceChain(plan).apply(x)
    assert_same_sets(ours, twin)
    return ours


@pytest.mark.parametrize("z, min_keep, kept", [(0.3, 0, 2), (0.5, 0, 3), (0.3, 3, 3),
                                               (1.0, 0, 6)],
                         ids=["z 0.3", "z 0.5", "min_keep 3", "z 1 is off"])
def test_tail_free_by_hand(z, min_keep, kept):
    # p = .30 .25 .20 .15 .06 .04: |second derivatives| = 0 0 .04 .07, normalized
    # 0 0 .36 .64, cumulative 0 0 .36 1; the cut is the first index past z (at least
    # min_keep, at least 1)
    x = small_logits([0.30, 0.25, 0.20, 0.15, 0.06, 0.04])
    ids, _, _ = survivors([TailFree(z, min_keep)] if z < 1 else [], x)
    assert ids.tolist() == list(range(kept))


class LetterVocab:
    """A stand-in vocabulary: one token per byte."""
    n_tokens = 256
    nl = 10

    def tokenize(self, text, add_special=False, parse_special=False):
        return list(text.encode()) if isinstance(text, str) else list(text)


def penalized_logits(params, prompt=(), accepted=(), n_ctx=0, impl="cython"):
    sampler = make_sampler(params, 256, prompt, LetterVocab(), n_ctx, impl=impl)
    for t in accepted:
        sampler.accept(t)
    ids, logits, _ = sampler.chain.apply(np.ones(256, np.float32))
    return dict(zip(ids.tolist(), logits.tolist()))


def test_penalty_history_is_the_prompt():
    p = SamplingParams(repeat_penalty=2.0, frequency_penalty=0.1, samplers=("penalties",))
    got = penalized_logits(p, prompt=[5, 5, 9])
    assert got[5] == pytest.approx(1.0 / 2 - 0.2) and got[9] == pytest.approx(0.5 - 0.1)
    assert got[1] == 1.0


@pytest.mark.parametrize("impl", ["cython", "reference"])
@pytest.mark.parametrize("penalty_prompt, penalized", [([7, 7, 8], {7: 0.3, 8: 0.4}),
                                                       ("ab", {97: 0.4, 98: 0.4})],
                         ids=["tokens", "string"])
def test_penalty_prompt_replaces_the_prompt(impl, penalty_prompt, penalized):
    p = SamplingParams(repeat_penalty=2.0, frequency_penalty=0.1, samplers=("penalties",),
                       penalty_prompt=penalty_prompt)
    got = penalized_logits(p, prompt=[5, 5, 9], accepted=[42], impl=impl)
    for t, value in penalized.items():
        assert got[t] == pytest.approx(value)
    assert got[5] == 1.0 and got[9] == 1.0       # the prompt no longer counts
    assert got[42] == pytest.approx(0.4)         # generated tokens are added after it


@pytest.mark.parametrize("repeat_last_n, n_ctx, penalized", [
    (2, 0, {3, 4}), (0, 0, set()), (-1, 3, {2, 3, 4}), (-1, 0, {1, 2, 3, 4})],
    ids=["last 2", "0 is off", "-1 is the context size", "-1 without a context is all"])
def test_repeat_last_n(repeat_last_n, n_ctx, penalized):
    p = SamplingParams(repeat_penalty=2.0, repeat_last_n=repeat_last_n, samplers=("penalties",))
    got = penalized_logits(p, prompt=[1, 2, 3, 4], n_ctx=n_ctx)
    assert {t for t, v in got.items() if v != 1.0} == penalized


@pytest.mark.parametrize("penalize_nl, nl_logit", [(False, 1.0), (True, 0.5)])
def test_penalize_nl(penalize_nl, nl_logit):
    p = SamplingParams(repeat_penalty=2.0, penalize_nl=penalize_nl, samplers=("penalties",))
    got = penalized_logits(p, prompt=[10, 65])
    assert got[10] == nl_logit and got[65] == 0.5


def test_logit_bias_strings_bias_every_token_of_the_string():
    p = SamplingParams(logit_bias=(("hi", 2.0), (300, 1.0), (5, -np.inf)), samplers=())
    got = penalized_logits(p)
    assert got[ord("h")] == 3.0 and got[ord("i")] == 3.0
    assert 5 not in got and got[6] == 1.0


def test_the_plan_holds_only_stages_that_change_anything():
    p = SamplingParams(top_k=0, top_p=1.0, min_p=0.0, temperature=1.0, typical_p=1.0,
                       tfs_z=1.0)
    assert build_plan(p, SMALL).stages == ()
    assert [s.kind for s in build_plan(SamplingParams(), SMALL).stages] == \
        ["top_k", "top_p", "min_p", "temperature"]
    assert [s.kind for s in build_plan(SamplingParams(samplers=("top_k", "top_k")), SMALL)
            .stages] == ["top_k", "top_k"]
    miro = build_plan(SamplingParams(mirostat=2, repeat_penalty=1.1), SMALL)
    assert [s.kind for s in miro.stages] == ["penalties", "temperature"]
    assert miro.final.kind == "mirostat_v2"


def test_seed_minus_one_picks_a_fresh_seed_and_a_given_seed_repeats():
    x = logits_of("normal")
    flat = dict(top_k=0, top_p=1.0, min_p=0.0, temperature=3.0)

    def draws(seed):
        return [make_sampler(SamplingParams(seed=seed, **flat), N_VOCAB).sample(x)
                for _ in range(2)]

    assert len(set(draws(123))) == 1
    assert len(set(draws(-1) + draws(-1))) > 1


def test_sorting_orders_by_logit_then_id_across_signs_and_zeros():
    x = np.array([0.0, -0.0, 1.5, -1.5, 0.0, -7.25, 1e30, -1e30, 1e-40, -1e-40] * 10,
                 np.float32)
    ids, logits, _ = Chain(plan((Typical(0.999999),), history=())).apply(
        np.resize(x, N_VOCAB).astype(np.float32))
    order = np.lexsort((ids, -logits))
    np.testing.assert_array_equal(order, np.arange(len(ids)))
    assert_same_sets((ids, logits, _),
                     ReferenceChain(plan((Typical(0.999999),), history=())).apply(
                         np.resize(x, N_VOCAB).astype(np.float32)))
