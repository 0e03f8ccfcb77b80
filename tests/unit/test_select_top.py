"""The vectorized selections of a full set (top_k and greedy over the engine's logits):
block maxima, a radix-selected threshold, masked collection, ranked output. Each path and
each fallback gives exactly the (logit desc, id asc) answer numpy gives."""
from __future__ import annotations

import numpy as np
import pytest

from sampling._chain import Chain
from sampling.sampler import ChainPlan, Dist, Greedy, TopK


def chain(n_vocab: int, stages=(), final=Dist()) -> Chain:
    return Chain(ChainPlan(n_vocab, tuple(stages), final, 1, 0, np.zeros(0, np.int32),
                           np.zeros(0, np.float32), ()))


def expected_top(x: np.ndarray, k: int) -> list[int]:
    """The best k logits above -inf (NaN never), higher first, lower id first among equals."""
    ids = np.flatnonzero(x > -np.inf)
    order = np.lexsort((ids, -x[ids]))
    return ids[order][:k].tolist()


def first_argmax(x: np.ndarray) -> int:
    finite = np.where(np.isnan(x), -np.inf, x)
    return int(np.argmax(finite)) if np.isfinite(finite).any() else 0


def rows(n: int, seed: int):
    """Logits that push each step of the selection: ties at the cut, NaN next to the best,
    whole blocks banned, the best in the tail past the last full block."""
    rng = np.random.default_rng(seed)
    normal = (rng.standard_normal(n) * 3).astype(np.float32)
    yield "normal", normal
    yield "quantized", np.round(normal).astype(np.float32)
    with_nan = normal.copy()
    best = int(np.argmax(with_nan))
    with_nan[max(0, best - 1)] = np.nan
    with_nan[rng.choice(n, 20)] = np.nan
    yield "nan", with_nan
    sparse = np.full(n, -np.inf, np.float32)
    keep = rng.choice(n, min(n, 30), replace=False)     # fewer finite blocks than k
    sparse[keep] = normal[keep]
    yield "sparse", sparse
    tail = normal.copy()
    tail[-1] = 1000.0
    tail[-2] = 1000.0
    yield "tail", tail
    negative = -np.abs(normal) - 5                         # keys of negative floats
    yield "negative", negative.astype(np.float32)
    flat = np.zeros(n, np.float32)
    flat[rng.choice(n, 5, replace=False)] = 1.0
    yield "flat", flat
    spread = normal.copy()                                 # block maxima over 30 decades:
    spread[: n // 2] -= 1e30                               # the threshold's bins are wide
    yield "spread", spread
    infinite = normal.copy()
    infinite[rng.choice(n, 3, replace=False)] = np.inf
    yield "inf", infinite
    zeros = np.where(normal > 0, np.float32(-0.0), normal).astype(np.float32)
    zeros[rng.choice(n, min(n, 7), replace=False)] = 0.0   # +0 and -0 tie at the cut
    yield "signed zeros", zeros
    dense = normal.copy()                                  # many logits just under the best
    dense[rng.choice(n, min(n, 200), replace=False)] = 9.0 + rng.random(min(n, 200)).astype(np.float32) * 1e-3
    yield "dense top", dense


SIZES = [49152, 49152 + 17, 64 * 40, 63, 1000]
KS = [1, 2, 40, 128, 129, 3000]


@pytest.fixture(params=["avx2", "sse2"])
def simd(request):
    """Each selection test runs the AVX2 code (where the CPU has it) and the SSE2 code, so a
    machine with AVX2 also checks what one without it would run."""
    from sampling._candidates import _use_avx2
    was = _use_avx2(request.param == "avx2")
    yield request.param
    _use_avx2(was)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("k", KS)
def test_top_k_of_a_full_set_is_the_exact_top_k(n, k, simd):
    for seed in range(3):
        for name, x in rows(n, seed):
            ids, logits, _p = chain(n, [TopK(k)]).apply(x)
            want = expected_top(x, k)
            assert ids.tolist() == want, (name, seed)
            np.testing.assert_array_equal(logits, x[want])


@pytest.mark.parametrize("n", SIZES)
def test_greedy_is_the_first_best_finite_logit(n, simd):
    for seed in range(3):
        for name, x in rows(n, seed):
            assert chain(n, final=Greedy()).sample(x) == first_argmax(x), (name, seed)


def test_a_vocabulary_past_the_block_buffer_takes_the_plain_scan():
    n = 64 * 8192 + 100
    x = (np.random.default_rng(5).standard_normal(n) * 3).astype(np.float32)
    ids, _logits, _p = chain(n, [TopK(40)]).apply(x)
    assert ids.tolist() == expected_top(x, 40)
    assert chain(n, final=Greedy()).sample(x) == int(np.argmax(x))


@pytest.mark.parametrize("n", [49152, 64 * 7 + 5, 64 * 9, 63])
def test_every_block_maxima_implementation_agrees_with_numpy(n):
    """The AVX2 (8 lanes), SSE2/NEON (4 lanes) and plain kernels, whichever this machine
    runs, over NaN, -inf and ties: NaN never hides a real logit."""
    from sampling._candidates import _block_maxima
    ran = 0
    for seed in range(3):
        for name, x in rows(n, seed):
            want = np.where(np.isnan(x), -np.inf, x)[: n // 64 * 64].reshape(-1, 64).max(axis=1) \
                if n >= 64 else np.zeros(0, np.float32)
            for lanes in (0, 8, 4, 1):
                got = _block_maxima(x, lanes)
                if got is None:           # no AVX2 code on this machine: only that one
                    assert lanes == 8
                    continue
                ran += 1
                np.testing.assert_array_equal(got, want, err_msg=f"{name} {lanes} lanes")
    assert ran >= 3 * 11 * 3
