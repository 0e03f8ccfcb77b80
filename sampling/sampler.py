"""The one interface the engine samples through.

``make_sampler(params, n_vocab, prompt_tokens, vocab)`` returns an object with
``sample(logits) -> int``, ``accept(token)`` and ``last_probs`` (the top ``n_probs``
(token, probability) pairs of the candidates the last draw used, or None). The engine calls
``sample`` with the raw logits of one sequence (a float32 view valid until the next decode)
and ``accept`` with every token it keeps.

This first implementation covers greedy decoding and seeded sampling through top_k, top_p,
min_p and temperature in numpy.
"""
from __future__ import annotations

import os

import numpy as np

from .params import SamplingParams

__all__ = ["make_sampler", "BasicSampler", "new_seed"]


def new_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


class BasicSampler:
    def __init__(self, params: SamplingParams, n_vocab: int, prompt_tokens=(), vocab=None):
        self.params = params
        self.n_vocab = n_vocab
        self.seed = params.seed if params.seed >= 0 else new_seed()
        self._rng = np.random.default_rng(self.seed)
        self.last_probs: list[tuple[int, float]] | None = None

    def sample(self, logits: np.ndarray) -> int:
        p = self.params
        if p.greedy:
            token = int(np.argmax(logits))
            if p.n_probs:
                self.last_probs = _top_probs(logits.astype(np.float64), p.n_probs)
            return token
        ids = np.arange(self.n_vocab)
        vals = logits.astype(np.float64)
        if p.top_k > 0 and p.top_k < len(vals):
            keep = np.argpartition(-vals, p.top_k - 1)[:p.top_k]
            ids, vals = ids[keep], vals[keep]
        order = np.argsort(-vals, kind="stable")
        ids, vals = ids[order], vals[order]
        probs = _softmax(vals)
        if p.top_p < 1.0:
            cut = int(np.searchsorted(np.cumsum(probs), p.top_p) + 1)
            cut = max(cut, p.min_keep, 1)
            ids, vals = ids[:cut], vals[:cut]
        if p.min_p > 0.0:
            probs = _softmax(vals)
            keep = max(int(np.sum(probs >= p.min_p * probs[0])), p.min_keep, 1)
            ids, vals = ids[:keep], vals[:keep]
        probs = _softmax(vals / max(p.temperature, 1e-6))
        index = int(self._rng.choice(len(ids), p=probs))
        if p.n_probs:
            n = min(p.n_probs, len(ids))
            self.last_probs = [(int(ids[i]), float(probs[i])) for i in range(n)]
        return int(ids[index])

    def accept(self, token: int) -> None:
        pass


def _softmax(vals: np.ndarray) -> np.ndarray:
    e = np.exp(vals - vals.max())
    return e / e.sum()


def _top_probs(logits: np.ndarray, n: int) -> list[tuple[int, float]]:
    top = np.argpartition(-logits, n - 1)[:n]
    top = top[np.argsort(-logits[top], kind="stable")]
    e = np.exp(logits - logits.max())
    total = e.sum()
    return [(int(t), float(e[t] / total)) for t in top]


def make_sampler(params: SamplingParams, n_vocab: int, prompt_tokens=(), vocab=None):
    return BasicSampler(params, n_vocab, prompt_tokens, vocab)
