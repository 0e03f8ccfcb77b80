"""Our stages against libllama's own samplers, on the real vocabulary size.

Each test runs one stage of ours (the compiled chain) and the same libllama stage on the
same logits and compares what survives: the same tokens with the same logits, and the same
probabilities (softmax of the survivors) within 1e-5. libllama marks some dropped tokens by
setting their logit to -inf instead of removing them; those count as dropped. Where equal
logits straddle a cut, either side may keep any of them, so ties only compare by value.
"""
from __future__ import annotations

import numpy as np
import pytest

import llama_lib
from llama_lib.native_sampler import NativeSampler
from sampling._chain import Chain
from sampling.sampler import (ChainPlan, Dist, Dry, MinP, Mirostat, MirostatV2, Penalties,
                              Temperature, TopK, TopNSigma, TopP, Typical, Xtc, dry_breakers)

pytestmark = pytest.mark.skipif(llama_lib.default_model_path() is None,
                                reason="the default model is not installed")


@pytest.fixture(scope="module")
def vocab():
    model = llama_lib.Model(llama_lib.default_model_path(), llama_lib.ModelParams(vocab_only=True))
    yield model.vocab


@pytest.fixture(scope="module")
def n_vocab(vocab):
    return vocab.n_tokens


def make_logits(kind: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return (rng.standard_normal(n) * 3).astype(np.float32)
    if kind == "peaked":
        x = rng.standard_normal(n).astype(np.float32)
        x[rng.choice(500, 16, replace=False)] += np.linspace(14, 3, 16).astype(np.float32)
        return x
    if kind == "ties":
        return rng.integers(-4, 5, n).astype(np.float32)
    if kind == "all_equal":
        return np.full(n, -1.25, np.float32)
    if kind == "neg_inf":
        x = (rng.standard_normal(n) * 2).astype(np.float32)
        x[rng.random(n) < 0.95] = -np.inf
        return x
    raise ValueError(kind)


def ours(n_vocab, stages, x, history=(), final=Dist()):
    plan = ChainPlan(n_vocab, tuple(stages), final, 1, 0, history=tuple(history))
    return Chain(plan).apply(x)


def theirs(sampler, x, history=()):
    for t in history:
        sampler.accept(t)
    out = sampler.apply(np.arange(len(x), dtype=np.int32), x)
    return out.ids, out.logits


def softmax(x):
    e = np.exp(x.astype(np.float64) - x.max())
    return e / e.sum()


def assert_same_candidates(a, b, x=None):
    """a: our (ids, logits, ...), b: libllama's (ids, logits); x: the input logits when
    ties may straddle the cut."""
    a_ids, a_log = np.asarray(a[0]), np.asarray(a[1])
    b_ids, b_log = np.asarray(b[0]), np.asarray(b[1])
    keep = b_log > -np.inf
    b_ids, b_log = b_ids[keep], b_log[keep]
    assert len(a_ids) == len(b_ids), f"{len(a_ids)} survivors against libllama's {len(b_ids)}"
    oa = np.lexsort((a_ids, -a_log))
    ob = np.lexsort((b_ids, -b_log))
    np.testing.assert_allclose(a_log[oa], b_log[ob], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(softmax(a_log[oa]), softmax(b_log[ob]), atol=1e-5)
    if x is None:
        ia, ib = np.argsort(a_ids), np.argsort(b_ids)
        np.testing.assert_array_equal(a_ids[ia], b_ids[ib])
        np.testing.assert_allclose(a_log[ia], b_log[ib], rtol=1e-5, atol=1e-5)
        return
    for value in np.unique(a_log):      # groups cut in the middle may hold different ids
        in_a = set(a_ids[a_log == value].tolist())
        in_b = set(b_ids[b_log == value].tolist())
        if len(in_a) == int((x == value).sum()):
            assert in_a == in_b


LOGIT_KINDS = ["random", "peaked", "ties", "all_equal", "neg_inf"]


def _tie_input(kind, x):
    return x if kind in ("ties", "all_equal") else None


@pytest.mark.parametrize("kind", LOGIT_KINDS)
@pytest.mark.parametrize("k", [1, 40, 300, 5000])
def test_top_k(n_vocab, kind, k):
    x = make_logits(kind, n_vocab)
    assert_same_candidates(ours(n_vocab, [TopK(k)], x), theirs(NativeSampler.top_k(k), x),
                           _tie_input(kind, x))


@pytest.mark.parametrize("kind", LOGIT_KINDS)
@pytest.mark.parametrize("p, min_keep", [(0.95, 0), (0.5, 1), (0.1, 64), (0.999, 0)],
                         ids=["0.95", "0.5", "min_keep above the cut", "0.999"])
def test_top_p(n_vocab, kind, p, min_keep):
    x = make_logits(kind, n_vocab)
    assert_same_candidates(ours(n_vocab, [TopP(p, min_keep)], x),
                           theirs(NativeSampler.top_p(p, min_keep), x), _tie_input(kind, x))


@pytest.mark.parametrize("kind", LOGIT_KINDS)
@pytest.mark.parametrize("p, min_keep", [(0.05, 0), (0.3, 1), (0.9, 50)],
                         ids=["0.05", "0.3", "min_keep above the cut"])
@pytest.mark.parametrize("after_top_k", [False, True], ids=["full", "after top_k"])
def test_min_p(n_vocab, kind, p, min_keep, after_top_k):
    x = make_logits(kind, n_vocab)
    pre = [TopK(200)] if after_top_k else []
    native = NativeSampler.chain(([NativeSampler.top_k(200)] if after_top_k else [])
                                 + [NativeSampler.min_p(p, min_keep)])
    assert_same_candidates(ours(n_vocab, pre + [MinP(p, min_keep)], x), theirs(native, x),
                           _tie_input(kind, x))


@pytest.mark.parametrize("kind", ["random", "peaked", "neg_inf"])
@pytest.mark.parametrize("p, min_keep", [(0.95, 0), (0.5, 1), (0.2, 30)],
                         ids=["0.95", "0.5", "min_keep above the cut"])
def test_typical(n_vocab, kind, p, min_keep):
    x = make_logits(kind, n_vocab)
    # libllama's typical over -inf candidates computes 0 * log(0); give it the finite ones
    finite = np.flatnonzero(np.isfinite(x)).astype(np.int32)
    out = NativeSampler.typical(p, min_keep).apply(finite, x[finite])
    assert_same_candidates(ours(n_vocab, [Typical(p, min_keep)], x), (out.ids, out.logits))


@pytest.mark.parametrize("kind", ["random", "peaked"])
@pytest.mark.parametrize("temp, delta, exponent", [(0.7, 0.0, 1.0), (1.8, 0.0, 1.0),
                                                   (0.0, 0.0, 1.0), (0.8, 0.5, 1.0),
                                                   (1.0, 0.9, 2.5), (0.3, 0.6, 0.5)],
                         ids=["0.7", "1.8", "zero", "dynamic", "dynamic exp 2.5",
                              "dynamic floor at 0"])
def test_temperature(n_vocab, kind, temp, delta, exponent):
    x = make_logits(kind, n_vocab)
    assert_same_candidates(ours(n_vocab, [Temperature(temp, delta, exponent)], x),
                           theirs(NativeSampler.temp_ext(temp, delta, exponent), x))


@pytest.mark.parametrize("kind", LOGIT_KINDS)
@pytest.mark.parametrize("n", [0.5, 1.0, 2.0])
def test_top_n_sigma(n_vocab, kind, n):
    x = make_logits(kind, n_vocab)
    assert_same_candidates(ours(n_vocab, [TopNSigma(n)], x),
                           theirs(NativeSampler.top_n_sigma(n), x))


@pytest.mark.parametrize("kind", ["random", "peaked"])
@pytest.mark.parametrize("probability, threshold, min_keep",
                         [(1.0, 0.1, 1), (1.0, 0.02, 1), (1.0, 0.05, 1000), (0.0, 0.1, 1)],
                         ids=["always", "low threshold", "min_keep blocks it", "never"])
def test_xtc(n_vocab, kind, probability, threshold, min_keep):
    x = make_logits(kind, n_vocab)
    pre_ours, pre_theirs = [TopK(60)], [NativeSampler.top_k(60)]
    native = NativeSampler.chain(pre_theirs + [NativeSampler.xtc(probability, threshold,
                                                                 min_keep, 3)])
    assert_same_candidates(ours(n_vocab, pre_ours + [Xtc(probability, threshold, min_keep)], x),
                           theirs(native, x))


@pytest.mark.parametrize("last_n, repeat, freq, present",
                         [(64, 1.3, 0.0, 0.0), (16, 1.1, 0.4, 0.6), (300, 0.8, 0.0, 0.2),
                          (1, 2.0, 1.0, 1.0)],
                         ids=["repeat", "all three", "window longer than history", "window 1"])
@pytest.mark.parametrize("kind", ["random", "neg_inf"])
def test_penalties(n_vocab, kind, last_n, repeat, freq, present):
    x = make_logits(kind, n_vocab)
    rng = np.random.default_rng(1)
    history = rng.integers(0, 400, 250).tolist() + [int(np.argmax(x))] * 3
    assert_same_candidates(
        ours(n_vocab, [Penalties(last_n, repeat, freq, present)], x, history),
        theirs(NativeSampler.penalties(last_n, repeat, freq, present), x, history))


def test_penalties_after_top_k(n_vocab):
    x = make_logits("peaked", n_vocab)
    top = np.argsort(-x)[:20].tolist()
    history = top * 2 + [1, 2, 3]
    native = NativeSampler.chain([NativeSampler.top_k(100),
                                  NativeSampler.penalties(64, 1.5, 0.2, 0.1)])
    assert_same_candidates(ours(n_vocab, [TopK(100), Penalties(64, 1.5, 0.2, 0.1)], x, history),
                           theirs(native, x, history))


def test_logit_bias(n_vocab):
    x = make_logits("random", n_vocab)
    biases = [(5, 2.5), (int(np.argmax(x)), -np.inf), (100, -3.0), (n_vocab - 1, 10.0)]
    plan = ChainPlan(n_vocab, (), Dist(), 1, 0, np.array([t for t, _ in biases], np.int32),
                     np.array([b for _, b in biases], np.float32))
    assert_same_candidates(Chain(plan).apply(x),
                           theirs(NativeSampler.logit_bias(n_vocab, biases), x))


@pytest.mark.parametrize("kind", ["random", "peaked", "all_equal"])
def test_dist_probabilities(n_vocab, kind):
    x = make_logits(kind, n_vocab)
    out = NativeSampler.dist(7).apply(np.arange(n_vocab, dtype=np.int32), x)
    ids, _, p = ours(n_vocab, [], x)
    np.testing.assert_array_equal(ids, out.ids)
    np.testing.assert_allclose(p, out.p, rtol=1e-5, atol=1e-8)
    assert 0 <= out.selected < n_vocab


DRY_TEXT = ("The cat sat on the mat.\nThe cat sat on the mat.\nThe dog: the cat sat on the "
            "rug. *** The cat sat on the")


@pytest.mark.parametrize("breakers", [["\n", ":", "\"", "*"], ["mat.\nThe", "dog:"], []],
                         ids=["default breakers", "multi-token breakers", "no breakers"])
@pytest.mark.parametrize("multiplier, base, allowed, last_n",
                         [(0.8, 1.75, 2, 1000), (2.0, 1.1, 1, 24), (1.0, 3.0, 3, 1000)],
                         ids=["default", "short window", "steep"])
def test_dry(vocab, n_vocab, breakers, multiplier, base, allowed, last_n):
    history = vocab.tokenize(DRY_TEXT, add_special=False, parse_special=False)
    x = make_logits("random", n_vocab)
    stage = Dry(multiplier, base, allowed, last_n, dry_breakers(vocab, breakers, n_vocab))
    native = NativeSampler.dry(vocab, multiplier, base, allowed, last_n, breakers)
    mine = ours(n_vocab, [stage], x, history)
    assert_same_candidates(mine, theirs(native, x, history))
    assert not np.array_equal(np.sort(mine[1]), np.sort(x)), "the text repeats: DRY must act"


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("tau, eta", [(5.0, 0.1), (2.0, 0.5)])
def test_mirostat_cut_and_mu_follow_libllama(n_vocab, version, tau, eta):
    native = (NativeSampler.mirostat(n_vocab, 3, tau, eta) if version == 1
              else NativeSampler.mirostat_v2(3, tau, eta))
    final = Mirostat(tau, eta) if version == 1 else MirostatV2(tau, eta)
    chain = Chain(ChainPlan(n_vocab, (), final, 3, 0))
    for step in range(12):
        x = make_logits("peaked", n_vocab, seed=step)
        out = native.apply(np.arange(n_vocab, dtype=np.int32), x)
        chain.sample(x)
        ids, logits, _ = chain.candidates()
        assert_same_candidates((ids, logits), (out.ids, out.logits))
        chain.accept(out.token)     # libllama's draw drives both mu updates


# --- the grammar hook: sample first, constrain only on rejection -------------------------
class EvenTokensOnly:
    """A stand-in grammar that allows even token ids and counts what it is asked."""

    def __init__(self):
        self.constrained = 0
        self.accepted = []

    def allows(self, token):
        return token % 2 == 0

    def constrain(self, logits):
        self.constrained += 1
        out = np.array(logits, np.float32, copy=True)
        out[1::2] = -np.inf
        return out

    def masked_in(self, token):
        return self.allows(token)

    def accept(self, token):
        assert self.allows(token)
        self.accepted.append(token)


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
def test_grammar_constrains_only_after_a_rejected_draw(n_vocab, temperature):
    from sampling.params import SamplingParams
    from sampling.sampler import Sampler, build_plan
    grammar = EvenTokensOnly()
    plan = build_plan(SamplingParams(temperature=temperature, seed=3, n_probs=2), n_vocab)
    sampler = Sampler(Chain(plan), grammar)
    for step in range(20):
        before = grammar.constrained
        token = sampler.sample(make_logits("peaked", n_vocab, seed=step))
        assert token % 2 == 0
        if grammar.constrained > before:    # probabilities then come from the constrained set
            assert all(t % 2 == 0 for t, _ in sampler.last_probs)
        sampler.accept(token)
    assert 0 < grammar.constrained < 20
    assert len(grammar.accepted) == 20


def test_make_sampler_builds_the_request_grammar(vocab, n_vocab):
    from sampling import make_sampler
    from sampling.params import SamplingParams
    sampler = make_sampler(SamplingParams(grammar='root ::= "yes" | "no"', seed=1), n_vocab,
                           vocab=vocab)
    text = b""
    for step in range(4):
        token = sampler.sample(make_logits("random", n_vocab, seed=step))
        if vocab.is_eog(token):
            break
        sampler.accept(token)
        text += vocab.piece(token)
    assert text in (b"yes", b"no")


def test_a_bad_grammar_raises_grammar_error(vocab, n_vocab):
    from sampling import make_sampler
    from sampling.params import SamplingParams
    with pytest.raises(llama_lib.GrammarError):
        make_sampler(SamplingParams(grammar="root ::= (", seed=1), n_vocab, vocab=vocab)


def test_a_grammar_whose_only_allowed_token_is_banned_is_exhausted(vocab, n_vocab):
    """Once 'yes' is complete the grammar allows only end-of-generation; with those tokens
    banned (a -inf bias, as ignore_eos sets) nothing may come: GrammarExhausted, not the
    chain's fallback token passing for an allowed one."""
    from sampling import make_sampler
    from sampling.grammar import GrammarExhausted
    from sampling.params import SamplingParams
    eog = [t for t in range(n_vocab) if vocab.is_eog(t)]
    sampler = make_sampler(SamplingParams(grammar='root ::= "yes"', temperature=0,
                                          logit_bias=tuple((t, float("-inf")) for t in eog)),
                           n_vocab, vocab=vocab)
    for token in vocab.tokenize("yes", False, False):
        logits = np.full(n_vocab, -5.0, np.float32)
        logits[token] = 5.0
        assert sampler.sample(logits) == token
        sampler.accept(token)
    with pytest.raises(GrammarExhausted):
        sampler.sample(make_logits("random", n_vocab, seed=3))
