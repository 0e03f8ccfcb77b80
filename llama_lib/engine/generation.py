"""Generation: one admitted request's per-token state, built once at admission.

It holds the request's sampler, its incremental text (UTF-8-safe detokenization and stop
strings), its limits resolved once (the effective ``n_predict``, the time limit) and its
stop conditions as small callables, and it makes the request's events. The engine asks it
``sample(logits)`` and ``take(token)``; everything that can go wrong for one request happens
inside these calls, which the engine runs inside that request's failure boundary.
"""
from __future__ import annotations

import time

import numpy as np

from .events import FinalEvent, TokenEvent
from .request import Request, Status
from .text import IncrementalText, StopStrings, limit_reached

__all__ = ["Generation", "stop_string", "token_limit", "time_limit", "top_probs"]


def top_probs(logits: np.ndarray, n: int, token: int) -> tuple[list[tuple[int, float]], float]:
    """The ``n`` most probable tokens of ``softmax(logits)``, most likely first, and the
    probability of ``token``: llama-server's n_probs, the model's distribution before any
    sampler touches it. argpartition keeps it to one pass over the vocabulary plus a sort of
    ``n`` entries: 0.4 ms for 49152 logits and n = 20, against 1.9 ms for a full argsort."""
    n = min(n, logits.shape[0])
    top = np.argpartition(logits, -n)[-n:]
    top = top[np.argsort(-logits[top], kind="stable")]
    mx = logits[top[0]]
    if not np.isfinite(mx):
        return [(int(t), 0.0) for t in top], 0.0
    total = float(np.exp(logits - mx).sum(dtype=np.float64))
    probs = np.exp(logits[top] - mx) / total
    return ([(int(t), float(p)) for t, p in zip(top, probs)],
            float(np.exp(logits[token] - mx) / total))


# --- stop conditions: (generation, delta, now) -> the finish status, or None --------------
def stop_string(gen: "Generation", delta: str, now: float) -> Status | None:
    return Status.FINISHED_STOP if gen.stops.matched is not None else None


def token_limit(gen: "Generation", delta: str, now: float) -> Status | None:
    return Status.FINISHED_LIMIT if limit_reached(gen.req.n_generated, gen.n_predict) else None


def time_limit(gen: "Generation", delta: str, now: float) -> Status | None:
    """llama-server's t_max_predict_ms: checked at a new line, from the first generated token."""
    if "\n" in delta and (now - gen.t_started) * 1000 > gen.req.options.t_max_predict_ms:
        return Status.FINISHED_LIMIT
    return None


class Generation:
    def __init__(self, req: Request, sampler, vocab, *, n_predict_cap: int = -1,
                 special: bool = False):
        self.req = req
        self.sampler = sampler
        self.vocab = vocab
        self.special = special
        self.text = IncrementalText()
        self.stops = StopStrings(req.options.stop)
        n_predict = req.options.n_predict
        if n_predict < 0 or (n_predict_cap >= 0 and n_predict > n_predict_cap):
            n_predict = n_predict_cap          # the server-wide -n caps every request
        self.n_predict = n_predict
        self.n_probs = req.sampling.n_probs if req.sampling is not None else 0
        # n_probs of the token sampled last: (top n, the chosen token's probability)
        self._probs: tuple[list[tuple[int, float]], float] | None = None
        self.conditions = [stop_string, token_limit] if self.stops.stops else [token_limit]
        if req.options.t_max_predict_ms > 0:
            self.conditions.append(time_limit)
        self.t_started = 0.0          # when generation began (the engine sets it: prompt done)
        # bound once: asked for every token
        self._is_eog = vocab.is_eog
        self._eos_ends = not req.options.ignore_eos
        self._accept = sampler.accept if sampler is not None else None
        # drawn with the other slots in one call (Sampler.sample_rows) rather than alone
        self.batchable = self.n_probs == 0 and bool(getattr(sampler, "batchable", False))

    @property
    def seed(self) -> int | None:
        return getattr(self.sampler, "seed", None)

    def sample(self, logits) -> int:
        """The next token from ``logits`` (the model's own: ignore_eos is a bias inside the
        sampler, so n_probs reports the model's distribution)."""
        token = self.sampler.sample(logits)
        if self.n_probs > 0:
            if self.req.options.post_sampling_probs:
                chain = self.sampler.last_probs or []
                self._probs = ([(t, p) for t, p in chain if p > 0.0], self.sampler.last_prob)
            else:
                self._probs = top_probs(logits, self.n_probs, token)
        return token

    def ends_at(self, token: int) -> bool:
        """An end-of-generation token ends the request (unless it ignores EOS)."""
        return self._eos_ends and self._is_eog(token)

    def take(self, token: int, now: float = 0.0) -> tuple[TokenEvent, Status | None]:
        """The kept ``token`` (already counted by the scheduler): its event, and the finish
        status if a stop condition fires. ``now``: the step's clock (read once per step)."""
        self._accept(token)
        delta = self.text.push_token(self.vocab, token, self.special)
        if self.stops.stops:
            delta = self.stops.feed(delta)
        event = TokenEvent(delta, token)
        if self.n_probs > 0 and self._probs is not None:
            event.probs, event.prob = self._probs
            event.chain_probs = self.sampler.last_probs
        now = now or time.perf_counter()
        for condition in self.conditions:
            status = condition(self, delta, now)
            if status is not None:
                return event, status
        return event, None

    def tail(self) -> tuple[str, str]:
        """(text held back until the end, the stop string that matched or "")."""
        if self.stops.matched is not None:
            return "", self.stops.matched
        return self.stops.feed(self.text.flush()) + self.stops.flush(), ""

    def final_event(self, status: Status, slot, timings: dict, embeddings=None) -> FinalEvent:
        tail, stopping_word = self.tail()
        req = self.req
        return FinalEvent(status, tail, stopping_word, slot.n_prompt, req.n_cached,
                          slot.n_prompt_evaluated, req.n_generated, req.truncated, timings,
                          embeddings=embeddings, slot_id=slot.id, seed=self.seed)
