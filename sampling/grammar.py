"""GBNF constraints through libllama's own grammar engine (``llama_sampler_init_grammar``).

``GrammarConstraint(vocab, gbnf)`` follows one generation: ``allows(token)`` checks a single
token (cheap: the sampler chain samples first and only constrains the full vocabulary when
the drawn token is rejected), ``constrain(logits)`` masks every rejected token to -inf,
``accept(token)`` advances the grammar. When the grammar is complete libllama allows only
end-of-generation tokens, so generation stops with EOS by itself.
"""
from __future__ import annotations

import re

import numpy as np

from llama_lib import GrammarError
from llama_lib.engine import GenerationExhausted
from llama_lib.native_sampler import NativeSampler

__all__ = ["GrammarConstraint", "LazyGrammarConstraint", "validate_grammar", "GrammarError",
           "GrammarExhausted"]


class GrammarExhausted(GenerationExhausted):
    """No token the sampler may draw is allowed by the grammar (e.g. only end-of-generation
    is allowed and ``ignore_eos`` or a logit bias bans it): the generation must end."""


class GrammarConstraint:
    def __init__(self, vocab, gbnf: str):
        """Raises llama_lib.GrammarError when libllama cannot parse ``gbnf``."""
        self._sampler = NativeSampler.grammar(vocab, gbnf, root="root")
        self._ids = np.arange(vocab.n_tokens, dtype=np.int32)
        self._one_id = np.zeros(1, dtype=np.int32)
        self._one_logit = np.zeros(1, dtype=np.float32)
        # What is already known about the next token, so that accept() need not ask libllama
        # again: the last token allows() passed, and the mask of the last constrain().
        self._passed = -1
        self._mask: np.ndarray | None = None

    def allows(self, token: int) -> bool:
        """Whether ``token`` may come next (EOG tokens: whether the grammar is complete)."""
        self._one_id[0] = token
        kept = self._sampler.apply(self._one_id, self._one_logit)
        ok = len(kept.logits) == 1 and bool(np.isfinite(kept.logits[0]))
        if ok:
            self._passed = token
        return ok

    def constrain(self, logits: np.ndarray) -> np.ndarray:
        """A float32 copy of ``logits`` (one per vocabulary token) with rejected tokens at -inf."""
        if len(logits) != len(self._ids):
            raise ValueError(f"expected {len(self._ids)} logits, got {len(logits)}")
        # the grammar sampler only overwrites logits; it keeps the candidates' order and size
        out = self._sampler.apply(self._ids, logits).logits
        self._mask = np.isfinite(out)
        return out

    def masked_in(self, token: int) -> bool:
        """Whether the last constrain() allowed ``token``."""
        return self._mask is not None and 0 <= token < len(self._mask) and bool(self._mask[token])

    def accept(self, token: int) -> None:
        """Advance past ``token``, which must be allowed: libllama aborts the process on a
        token its grammar rejects, so that is checked here first."""
        known = token == self._passed or (self._mask is not None
                                          and 0 <= token < len(self._mask) and self._mask[token])
        if not known and not self.allows(token):
            raise ValueError(f"token {token} is not allowed by the grammar here")
        self._sampler.accept(token)
        self._passed, self._mask = -1, None

    def close(self) -> None:
        self._sampler.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def validate_grammar(vocab, gbnf: str) -> None:
    """Raise llama_lib.GrammarError ("Failed to parse grammar") unless libllama parses ``gbnf``."""
    NativeSampler.grammar(vocab, gbnf, root="root").close()


class LazyGrammarConstraint(GrammarConstraint):
    """A grammar that constrains only from a trigger on (libllama's lazy grammar sampler):
    a trigger token, or a trigger pattern found in the text generated so far (the grammar
    starts at the pattern's first non-empty group). Tool calls in "auto" mode use it.

    libllama replays the text from the trigger into the grammar inside ``accept``; a text
    the grammar rejects there is a C++ exception that aborts the process. So this class
    mirrors the trigger logic in Python (same buffer, same patterns): when a candidate
    token would fire a trigger, ``allows`` first checks, on a fresh non-lazy copy of the
    grammar, that the text from the trigger on is accepted, and refuses the token if not.
    """

    def __init__(self, vocab, gbnf: str, patterns: list[str] = (), tokens: list[int] = ()):
        self._vocab = vocab
        self._gbnf = gbnf
        self._sampler = NativeSampler.grammar_lazy(vocab, gbnf, "root", list(patterns), list(tokens))
        self._ids = np.arange(vocab.n_tokens, dtype=np.int32)
        self._one_id = np.zeros(1, dtype=np.int32)
        self._one_logit = np.zeros(1, dtype=np.float32)
        self._passed = -1
        self._mask = None
        self._awaiting = True
        self._buffer = b""
        self._tokens = frozenset(tokens)
        self._patterns = [(re.compile(p.encode()), p.startswith("^") and p.endswith("$"))
                          for p in patterns]
        self._refused: set[int] = set()
        self._fired = (-1, None)      # (token, what _fires said): allows() then accept() ask once

    def _trigger_start(self, text: bytes) -> int:
        for rx, full in self._patterns:
            m = rx.fullmatch(text) if full else None
            if m is None:
                m = rx.search(text)
            if m is None:
                continue
            for i in range(1, (m.lastindex or 0) + 1):
                if m.start(i) >= 0 and m.end(i) > m.start(i):
                    return m.start(i)
            return m.start()
        return -1

    def _fires(self, token: int) -> bytes | None:
        """The text the grammar would be given if ``token`` came next, or None if it would
        not fire a trigger (the last answer is kept: the sampler asks allows() then accept()
        for the same token, and the search runs over all the text so far)."""
        if self._fired[0] == token:
            return self._fired[1]
        if token in self._tokens:
            fired = self._vocab.piece(token)
        else:
            text = self._buffer + self._vocab.piece(token)
            start = self._trigger_start(text)
            fired = None if start < 0 else text[start:]
        self._fired = (token, fired)
        return fired

    def _accepts(self, text: bytes) -> bool:
        probe = GrammarConstraint(self._vocab, self._gbnf)
        try:
            for t in self._vocab.tokenize(text, add_special=False, parse_special=True):
                if not probe.allows(t):
                    return False
                probe.accept(t)
            return True
        finally:
            probe.close()

    def allows(self, token: int) -> bool:
        if not self._awaiting:
            return super().allows(token)
        if token in self._refused:
            return False
        fired = self._fires(token)
        if fired is not None and not self._accepts(fired):
            self._refused.add(token)
            return False
        self._passed = token
        return True

    def constrain(self, logits: np.ndarray) -> np.ndarray:
        if not self._awaiting:
            return super().constrain(logits)
        out = np.array(logits, dtype=np.float32, copy=True)
        for t in self._refused:
            out[t] = -np.inf
        self._mask = np.isfinite(out)
        return out

    def accept(self, token: int) -> None:
        if not self._awaiting:
            return super().accept(token)
        if self._passed != token and not self.allows(token):
            raise ValueError(f"token {token} is not allowed by the grammar here")
        fired = self._fires(token) is not None
        self._sampler.accept(token)
        self._passed, self._mask = -1, None
        self._refused.clear()
        self._fired = (-1, None)
        if fired:
            self._awaiting = False
            self._buffer = b""
        else:
            self._buffer += self._vocab.piece(token)
