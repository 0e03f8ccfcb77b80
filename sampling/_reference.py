"""The numpy twin of the sampler chain: the definition of what every stage does.

Each stage takes a ``Cands`` (ids, float32 logits, and whether they are in descending logit
order) and returns the next one. Written for clarity, not speed; ``_chain.pyx`` must agree
with it stage by stage (tests/unit/test_sampler_twin.py) and it agrees with libllama's own
samplers where libllama has them (tests/unit/test_sampler_oracle.py).

Rules every stage follows:
- A set starts "full": every token, in id order. Tokens with a -inf logit are not
  candidates; the first stage that cuts or reorders the set drops them. A set is never left
  empty: if every logit is -inf it becomes token 0 alone.
- The one sort order is logit descending, then id ascending.
- A stage that filters without sorting keeps the survivors in their order. Stages that
  change logits (penalties, DRY) mark the set unsorted.
- Probabilities are the softmax of the current logits; a stage that cuts by probability
  computes them over the set it received.
- Arithmetic that decides a cut is float32 and sums in set order, as libllama's is (its
  samplers are the oracle, and a float64 sum moves a top_p cut over ~3000 candidates).
  ``_exp``/``_log`` round float64 results to float32, which is what expf/logf return.
"""
from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

import numpy as np

__all__ = ["Cands", "ReferenceChain", "Xoshiro256", "full", "materialize", "sort_desc",
           "softmax", "softmax_final", "top_k", "top_p", "min_p", "tail_free", "typical", "temperature",
           "top_n_sigma", "xtc", "penalties", "dry", "logit_bias", "draw", "mirostat",
           "mirostat_v2"]

F32 = np.float32
MASK64 = (1 << 64) - 1


@dataclass
class Cands:
    ids: np.ndarray          # int32
    logits: np.ndarray       # float32
    sorted: bool = False
    full: bool = False       # untouched by any cut: every token, -inf ones included

    @property
    def size(self) -> int:
        return len(self.ids)


def full(logits: np.ndarray) -> Cands:
    logits = np.asarray(logits, dtype=F32)
    return Cands(np.arange(len(logits), dtype=np.int32), logits.copy(), False, True)


def materialize(c: Cands) -> Cands:
    if not c.full:
        return c
    keep = c.logits > -np.inf
    if not keep.any():
        return Cands(np.zeros(1, np.int32), np.zeros(1, F32), True)
    ids, logits = c.ids[keep], c.logits[keep]
    return Cands(ids, logits, len(ids) == 1)


def _order(c: Cands) -> np.ndarray:
    return np.lexsort((c.ids, -c.logits))


def sort_desc(c: Cands) -> Cands:
    c = materialize(c)
    if c.sorted:
        return c
    o = _order(c)
    return Cands(c.ids[o], c.logits[o], True)


def _take(c: Cands, index, is_sorted: bool) -> Cands:
    return Cands(c.ids[index], c.logits[index], is_sorted)


def _exp(x) -> np.ndarray:
    return np.exp(np.asarray(x, np.float64)).astype(F32)


def _log(x) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(x, np.float64)).astype(F32)


def _fsum(x) -> np.float32:
    """float32 sum in order (np.sum would sum pairwise)."""
    x = np.asarray(x, F32)
    return np.cumsum(x, dtype=F32)[-1] if len(x) else F32(0)


def softmax(c: Cands) -> np.ndarray:
    """float32 probabilities of a compact set."""
    e = _exp(c.logits - c.logits.max())
    return e / _fsum(e)


def softmax_final(c: Cands) -> np.ndarray:
    """float32 probabilities normalized by a float64 sum: what a draw uses and n_probs
    reports (libllama's dist computes them so)."""
    e = _exp(c.logits - c.logits.max())
    return (e / np.cumsum(e.astype(np.float64))[-1]).astype(F32)


def _entropy(p: np.ndarray) -> np.float32:
    with np.errstate(invalid="ignore"):
        return _fsum(np.where(p > 0, -p * _log(p), F32(0)))


# --- cutting stages ---------------------------------------------------------------------
def top_k(c: Cands, k: int) -> Cands:
    if k <= 0:
        return c
    c = sort_desc(c)
    return _take(c, slice(0, k), True)


def top_p(c: Cands, p: float, min_keep: int = 0) -> Cands:
    if p >= 1.0:
        return c
    c = materialize(c)
    probs = softmax(c)              # over the set received, then in sorted order
    o = _order(c) if not c.sorted else np.arange(c.size)
    cum = np.cumsum(probs[o], dtype=F32)
    last = c.size
    for i in range(c.size):
        if cum[i] >= F32(p) and i + 1 >= min_keep:
            last = i + 1
            break
    return _take(c, o[:last], True)


def min_p(c: Cands, p: float, min_keep: int = 0) -> Cands:
    if p <= 0.0:
        return c
    finite = c.logits[c.logits > -np.inf]
    if finite.size == 0:
        return materialize(c)
    if not c.sorted:
        floor = F32(finite.max()) + F32(math.log(F32(p)))
        keep = c.logits >= floor
        if keep.sum() >= min_keep:
            return _take(c, keep, False)
    c = sort_desc(c)
    floor = F32(c.logits[0]) + F32(math.log(F32(p)))
    n = max(int((c.logits >= floor).sum()), min(min_keep, c.size), 1)
    return _take(c, slice(0, n), True)


def tail_free(c: Cands, z: float, min_keep: int = 0) -> Cands:
    if z >= 1.0:
        return c
    c = materialize(c)
    if c.size <= 2:
        return c
    c = sort_desc(c)
    p = softmax(c)
    d1 = p[:-1] - p[1:]
    d2 = np.abs(d1[:-1] - d1[1:])
    total = _fsum(d2)
    d2 = d2 / total if total > F32(1e-6) else np.full(len(d2), F32(1) / F32(len(d2)), F32)
    cum = np.cumsum(d2, dtype=F32)
    keep = max(min_keep, 1)
    last = c.size
    for i in range(len(d2)):
        if cum[i] > F32(z) and i >= keep:
            last = i
            break
    return _take(c, slice(0, last), True)


def typical(c: Cands, p: float, min_keep: int = 0) -> Cands:
    if p >= 1.0:
        return c
    c = sort_desc(c)
    probs = softmax(c)
    entropy = _entropy(probs)
    score = np.where(probs > 0, np.abs(-_log(probs) - entropy), F32(np.inf)).astype(F32)
    o = np.argsort(score, kind="stable")
    cum = np.cumsum(probs[o], dtype=F32)
    last = c.size
    for i in range(c.size):
        if cum[i] > F32(p) and (min_keep == 0 or i >= min_keep - 1):
            last = i + 1
            break
    return _take(c, np.sort(o[:last]), True)      # survivors back in logit order


def _scale(c: Cands, temp: float) -> Cands:
    c = materialize(c)
    if temp <= 0.0:
        best = int(np.argmax(c.logits))
        return _take(c, slice(best, best + 1), True)
    return Cands(c.ids, (c.logits / F32(temp)).astype(F32), c.sorted)


def temperature(c: Cands, temp: float, delta: float = 0.0, exponent: float = 1.0) -> Cands:
    if delta <= 0.0:
        return _scale(c, temp)
    c = materialize(c)
    if c.size <= 1:
        return c
    max_entropy = -_log(F32(1) / F32(c.size))
    c = sort_desc(c)
    lo, hi = max(F32(0), F32(temp) - F32(delta)), F32(temp) + F32(delta)
    t = lo + (hi - lo) * np.power(_entropy(softmax(c)) / max_entropy, F32(exponent))
    return _scale(c, t)


def top_n_sigma(c: Cands, n: float) -> Cands:
    if n <= 0.0:
        return c
    if c.full:
        c = materialize(c)
    elif c.size <= 1:
        return c
    x = c.logits
    mean = _fsum(x) / F32(len(x))
    acc = array("f", [0.0])          # a float32 accumulator; each square is added in float64
    for d in (x - mean).astype(np.float64).tolist():
        acc[0] = acc[0] + d * d
    floor = x.max() - F32(n) * np.sqrt(F32(acc[0]) / F32(len(x)))
    return _take(c, x >= floor, c.sorted)


def xtc(c: Cands, rng: "Xoshiro256", probability: float, threshold: float,
        min_keep: int = 0) -> Cands:
    if probability <= 0.0 or threshold > 0.5 or c.size < 2:
        return c
    if rng.uniform() > probability:
        return c
    c = sort_desc(c)
    probs = softmax(c)
    above = np.flatnonzero(probs < F32(threshold))
    pos_last = (int(above[0]) if above.size else c.size) - 1
    if c.size - pos_last >= min_keep and pos_last > 0:
        return _take(c, slice(pos_last, None), True)
    return c


# --- logit stages -----------------------------------------------------------------------
def logit_bias(c: Cands, ids, values) -> Cands:
    logits = c.logits.copy()
    for t, b in zip(ids, values):
        logits[int(t)] = F32(logits[int(t)] + F32(b))
    return Cands(c.ids, logits, False, c.full)


def _penalized(logit: np.float32, count: int, repeat, freq, present) -> np.float32:
    logit = logit * F32(repeat) if logit <= 0 else logit / F32(repeat)
    return F32(logit - (F32(count) * F32(freq) + F32(count > 0) * F32(present)))


def penalties(c: Cands, history, last_n: int, repeat: float, freq: float = 0.0,
              present: float = 0.0, skip_token: int = -1) -> Cands:
    window = list(history)[-last_n:] if last_n < len(history) else list(history)
    counts: dict[int, int] = {}
    for t in window:
        counts[t] = counts.get(t, 0) + 1
    logits = c.logits.copy()
    for i, t in enumerate(c.ids.tolist()):
        if t in counts and t != skip_token:
            logits[i] = _penalized(logits[i], counts[t], repeat, freq, present)
    return Cands(c.ids, logits, False, c.full)


def _dry_repeat_limit(rev: list[int], breakers: dict) -> int:
    for i, t in enumerate(rev):
        tails = [tail for tail in breakers.get(t, ())
                 if len(tail) <= i and all(tail[o] == rev[i - o - 1] for o in range(len(tail)))]
        if tails:
            return i - max(len(tail) for tail in tails)
    return len(rev)


def dry(c: Cands, history, multiplier: float, base: float, allowed_length: int, last_n: int,
        breakers: dict) -> Cands:
    history = list(history)
    n = min(len(history), last_n)
    if n <= allowed_length:
        return c
    rev = history[::-1][:n]          # rev[i]: i tokens before the latest
    limit = _dry_repeat_limit(rev, breakers)
    if limit < allowed_length:
        return c
    longest: dict[int, int] = {}
    for k in range(1, n):            # the latest tokens also end k tokens earlier ...
        length = 0
        while k + length < n and rev[length] == rev[k + length]:
            length += 1
        length = min(length, limit)
        if length >= allowed_length:  # ... so the token that followed them would extend it
            t = rev[k - 1]
            longest[t] = max(longest.get(t, 0), length)
    multiplier, base = float(F32(multiplier)), float(F32(base))    # the chain keeps float32
    max_exponent = int(88.7228391 / math.log(base)) if base > 1.000001 else 0
    logits = c.logits.copy()
    for i, t in enumerate(c.ids.tolist()):
        if t not in longest or () in breakers.get(t, ()):
            continue
        exponent = longest[t] - allowed_length
        if max_exponent > 0:
            exponent = min(exponent, max_exponent)
        logits[i] = F32(logits[i] - F32(multiplier * base ** exponent))
    return Cands(c.ids, logits, False, c.full)


# --- finals -----------------------------------------------------------------------------
def draw(c: Cands, r: float) -> tuple[Cands, np.ndarray, int]:
    """The index i of the first candidate whose cumulative probability reaches r."""
    c = materialize(c)
    probs = softmax_final(c)
    cum = np.cumsum(probs.astype(np.float64))
    for i in range(c.size):
        if cum[i] >= r and probs[i] > 0:
            return c, probs, i
    return c, probs, c.size - 1


def mirostat(c: Cands, mu: float, n_vocab: int, m: int = 100) -> Cands:
    """Mirostat 1's cut: estimate the Zipf exponent s from the top m (log(p_i / p_i+1) is
    l_i - l_i+1), keep the top k that makes the expected surprise mu."""
    c = sort_desc(c)
    if c.size == 1:
        return c
    top = c.logits[: min(m, c.size)]
    i = np.arange(len(top) - 1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t = _log((i + 2).astype(F32) / (i + 1).astype(F32))
        b = top[:-1] - top[1:]
        s_hat = _fsum(t * b) / _fsum(t * t)
        eps = s_hat - F32(1)
        k = np.power((eps * np.power(F32(2), F32(mu))) / (F32(1) - np.power(F32(n_vocab), -eps)),
                     F32(1) / s_hat)
    return top_k(c, 1 if not k >= 1 else (c.size if k >= c.size else int(k)))


def mirostat_v2(c: Cands, mu: float) -> Cands:
    """Mirostat 2's cut: keep the tokens whose surprise -log2 p is at most mu (the best one
    if none), i.e. whose logit is at least max + ln(sum of exp) - mu ln 2."""
    c = materialize(c)
    mx = c.logits.max()
    total = np.cumsum(_exp(c.logits - mx).astype(np.float64))[-1]
    floor = float(mx) + math.log(total) - float(F32(mu)) * math.log(2.0)
    keep = c.logits.astype(np.float64) >= floor
    if not keep.any():
        keep[int(np.argmax(c.logits))] = True
    return sort_desc(_take(c, keep, False))


# --- rng ----------------------------------------------------------------------------------
class Xoshiro256:
    """xoshiro256** seeded through splitmix64; uniform() has 53 random bits."""

    def __init__(self, seed: int):
        x = seed & MASK64
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & MASK64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def _rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & MASK64

    def uniform(self) -> float:
        s = self.s
        result = (self._rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return (result >> 11) * (1.0 / 9007199254740992.0)


# --- the chain ------------------------------------------------------------------------------
class ReferenceChain:
    """Runs a ``sampling.sampler.ChainPlan`` with the functions above; same interface as
    ``_chain.Chain``."""

    def __init__(self, plan):
        self.n_vocab = plan.n_vocab
        self.plan = plan
        self.seed = plan.seed
        self.n_probs = plan.n_probs
        self.rng = Xoshiro256(plan.seed)
        self.history = [t for t in plan.history if 0 <= t < plan.n_vocab] if any(
            s.kind in ("penalties", "dry") for s in plan.stages) else []
        self.mirostat_mu = 2.0 * plan.final.tau if plan.final.kind.startswith("mirostat") else 0.0
        self.last_probs = None
        self.last_prob = 0.0
        self._last: tuple[Cands, np.ndarray] | None = None

    def _run_stages(self, logits) -> Cands:
        c = logit_bias(full(logits), self.plan.bias_ids, self.plan.bias_values)
        for s in self.plan.stages:
            kind = s.kind
            if kind == "top_k":
                c = top_k(c, s.k)
            elif kind == "top_p":
                c = top_p(c, s.p, s.min_keep)
            elif kind == "min_p":
                c = min_p(c, s.p, s.min_keep)
            elif kind == "tail_free":
                c = tail_free(c, s.z, s.min_keep)
            elif kind == "typical":
                c = typical(c, s.p, s.min_keep)
            elif kind == "temperature":
                c = temperature(c, s.temp, s.delta, s.exponent)
            elif kind == "top_n_sigma":
                c = top_n_sigma(c, s.n)
            elif kind == "xtc":
                c = xtc(c, self.rng, s.probability, s.threshold, s.min_keep)
            elif kind == "penalties":
                c = penalties(c, self.history, s.last_n, s.repeat, s.freq, s.present,
                              s.skip_token)
            elif kind == "dry":
                c = dry(c, self.history, s.multiplier, s.base, s.allowed_length, s.last_n,
                        s.breakers.heads)
            else:
                raise ValueError(f"unknown sampler stage {kind!r}")
        return c

    def apply(self, logits):
        c = materialize(self._run_stages(logits))
        p = softmax_final(c)
        self._last = (c, p)
        return c.ids, c.logits, p

    def candidates(self):
        if self._last is None:
            raise ValueError("the last draw saw the whole vocabulary (greedy); nothing to show")
        c, p = self._last
        return c.ids, c.logits, p

    def sample(self, logits) -> int:
        c = self._run_stages(logits)
        final = self.plan.final.kind
        if final == "greedy":
            self._last = None
            token = int(c.ids[np.argmax(c.logits)])
            if self.n_probs:
                c = materialize(c)
                probs = softmax_final(c)
                self.last_probs = self._top(c, probs, self.n_probs)
                self.last_prob = self._prob_of(c, probs, token)
            return token
        if final == "mirostat":
            c = mirostat(c, self.mirostat_mu, self.n_vocab, self.plan.final.m)
        elif final == "mirostat_v2":
            c = mirostat_v2(c, self.mirostat_mu)
        c, probs, i = draw(c, self.rng.uniform())
        self._last = (c, probs)
        if self.n_probs:
            self.last_probs = self._top(c, probs, self.n_probs)
            self.last_prob = self._prob_of(c, probs, int(c.ids[i]))
        return int(c.ids[i])

    @staticmethod
    def _prob_of(c: Cands, probs: np.ndarray, token: int) -> float:
        hit = np.flatnonzero(c.ids == token)
        return float(probs[hit[0]]) if hit.size else 0.0

    @staticmethod
    def _top(c: Cands, probs: np.ndarray, n: int) -> list[tuple[int, float]]:
        o = _order(c)[:n]
        return [(int(c.ids[i]), float(probs[i])) for i in o]

    def accept(self, token: int) -> None:
        if self.plan.final.kind.startswith("mirostat") and self._last is not None:
            c, probs = self._last
            hit = np.flatnonzero(c.ids == token)
            if hit.size:
                surprise = -math.log2(float(F32(probs[hit[0]])))
                self.mirostat_mu = float(F32(self.mirostat_mu - self.plan.final.eta
                                             * (surprise - self.plan.final.tau)))
        if any(s.kind in ("penalties", "dry") for s in self.plan.stages) \
                and 0 <= token < self.n_vocab:
            self.history.append(int(token))
