"""Reasoning budget: end a model's thinking after N tokens by forcing the end marker.

:class:`ReasoningBudget` wraps a request's sampler. It watches the accepted tokens' text:
the reasoning block starts when the start marker (``<think>``) is written, or at once when
the prompt already opened it. After ``budget`` tokens inside the block, the next samples are
the end marker's tokens (``</think>``), forced one by one, and the model goes on with its
answer. The block is only looked for at the start of the output (after whitespace), as the
chat formats do. A forced token that the request's grammar would reject is not forced (the
grammar wins); nothing else changes in the sampler.
"""
from __future__ import annotations

__all__ = ["ReasoningBudget"]

_BEFORE, _INSIDE, _AFTER = 0, 1, 2


class ReasoningBudget:
    def __init__(self, sampler, vocab, start: str, end: str, budget: int, opened: bool):
        if budget < 0:
            raise ValueError("a reasoning budget is >= 0 (-1 means none: do not wrap)")
        self.inner = sampler
        self.vocab = vocab
        self.start = start.encode()
        self.end = end.encode()
        self.budget = budget
        self.end_tokens = vocab.tokenize(end, add_special=False, parse_special=True)
        self.state = _INSIDE if opened else _BEFORE
        self.n_inside = 0
        self.text = b""
        self.forced: list[int] = []
        self.n_forced = 0               # end markers forced (0 or 1): for tests and logs
        if self.state == _INSIDE and budget == 0:
            self._force()

    @property
    def seed(self):
        return self.inner.seed

    @property
    def last_probs(self):
        return self.inner.last_probs

    @property
    def last_prob(self):
        return self.inner.last_prob

    @property
    def grammar(self):
        return getattr(self.inner, "grammar", None)

    def _force(self) -> None:
        self.forced = list(self.end_tokens)
        self.n_forced += 1

    def sample(self, logits):
        if self.forced:
            token = self.forced[0]
            grammar = self.grammar
            if grammar is None or grammar.allows(token):
                self.inner.last_probs = None
                self.inner.last_prob = 1.0      # forced: certain
                return token
            self.forced = []          # the grammar says otherwise: let it decide
        return self.inner.sample(logits)

    def accept(self, token: int) -> None:
        self.inner.accept(token)
        if self.forced and token == self.forced[0]:
            self.forced.pop(0)
            if not self.forced:
                self.state = _AFTER
            return
        self.forced = []
        if self.state == _AFTER:
            return
        self.text += self.vocab.piece(token)
        if self.state == _BEFORE:
            head = self.text.lstrip()
            if head.startswith(self.start):
                self.state, self.text, self.n_inside = _INSIDE, head[len(self.start):], 0
                if self.budget == 0:
                    self._force()
            elif head and not self.start.startswith(head):
                self.state = _AFTER
            return
        if self.end in self.text:
            self.state = _AFTER
            return
        self.n_inside += 1
        if self.n_inside >= self.budget:
            self._force()
