"""Speculative decoding: draft tokens proposed for each generating slot, verified by the target.

llama-server gets this from libcommon; here it is written over libllama. A proposer looks at
a slot's tokens (its KV cache plus the last sampled token) and proposes up to ``n`` tokens
that may come next. The engine decodes ``[last, d1..dk]`` in the slot's batch entry with
logits at every position, samples each position with the request's own sampler (its
penalties, grammar and random generator, exactly as without speculation) and keeps tokens
while they equal the draft; the first token that differs (or the one after the last draft)
is the next pending token, and the rejected positions leave the KV cache. Every token kept
is a draw of the target's sampler from the target's logits, so the output is the same as
without speculation: token for token at temperature 0, and with a fixed seed too.

Proposers:
- ``NgramSimple`` (``ngram-simple``): the latest earlier occurrence of the last ``size_n``
  tokens; the ``size_m`` tokens that followed it.
- ``NgramMod`` (``ngram-mod``): a hashed table of n-gram -> next token, shared by all slots,
  fed from prompts and outputs; drafts by walking it.
- ``DraftModel`` (``draft-simple``): a smaller model with the same vocabulary, one sequence
  per slot in its own context, greedy with ``p_min``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["SpecConfig", "Speculator", "NgramSimple", "NgramMod", "DraftModel", "SPEC_TYPES",
           "check_vocab_compatible", "VocabMismatch"]

logger = logging.getLogger(__name__)

SPEC_TYPES = ("none", "ngram-simple", "ngram-mod", "draft-simple")


@dataclass
class SpecConfig:
    """llama-server's defaults at 0c1e570 (common.h)."""
    types: tuple[str, ...] = ()
    draft_n_max: int = 3
    draft_n_min: int = 0
    draft_p_min: float = 0.0
    ngram_simple_size_n: int = 12
    ngram_simple_size_m: int = 48
    ngram_mod_n_match: int = 24
    ngram_mod_n_max: int = 64
    ngram_mod_n_min: int = 48


class NgramSimple:
    """Self-speculation from the slot's own history (llama-server's ``ngram-simple``)."""

    name = "ngram-simple"

    def __init__(self, size_n: int = 12, size_m: int = 48):
        self.size_n, self.size_m = size_n, size_m

    def begin(self, seq: int, prompt: list[int]) -> None:
        pass

    def propose(self, wants: dict[int, tuple[list[int], int]]) -> dict[int, list[int]]:
        return {seq: self.draft(tokens, n) for seq, (tokens, n) in wants.items()}

    def draft(self, tokens: list[int], n_max: int) -> list[int]:
        """``tokens``: the slot's tokens with the last sampled one at the end."""
        n, m = self.size_n, min(self.size_m, n_max)
        if m <= 0 or len(tokens) <= n + 1:
            return []
        arr = np.asarray(tokens, dtype=np.int32)
        pattern = arr[-n:]
        # every window that starts before the pattern itself; vectorised: one comparison
        # pass per pattern position (n of them) instead of a Python loop per window
        starts = len(arr) - n
        hits = np.ones(starts, dtype=bool)
        for k in range(n):
            hits &= arr[k:k + starts] == pattern[k]
        where = np.flatnonzero(hits)
        if not len(where):
            return []
        j = int(where[-1])
        return arr[j + n:j + n + m].tolist()

    def accepted(self, seq: int, n_drafted: int, n_accepted: int) -> None:
        pass


_HASH_MUL = 6364136223846793005
_MASK = (1 << 64) - 1


class NgramMod:
    """llama-server's ``ngram-mod``: a table of ``size`` entries, indexed by a hash of the
    ``n_match`` tokens before a position and holding the token that followed them, shared by
    every slot. Prompts are added at admission, outputs as they grow; a slot's draft walks the
    table from its last ``n_match`` tokens. The table is emptied when a quarter of it is used,
    or after five drafts in a row with less than a quarter accepted."""

    name = "ngram-mod"
    RESET_USED = 0.25

    def __init__(self, n_match: int = 24, n_max: int = 64, n_min: int = 48, size: int = 1 << 22):
        self.n, self.n_max, self.n_min = n_match, n_max, n_min
        self.table = np.full(size, -1, dtype=np.int32)
        self.used = 0
        self._added: dict[int, int] = {}     # seq -> tokens of it added so far
        self._low: dict[int, int] = {}       # seq -> drafts in a row with low acceptance

    def _hashes(self, arr: np.ndarray) -> np.ndarray:
        """The table index of every window of ``n`` tokens of ``arr`` (uint64 arithmetic
        wraps modulo 2**64, as the C++ size_t does)."""
        count = len(arr) - self.n + 1
        h = np.zeros(count, dtype=np.uint64)
        mul = np.uint64(_HASH_MUL)
        with np.errstate(over="ignore"):
            for k in range(self.n):
                h = h * mul + arr[k:k + count].astype(np.int64).astype(np.uint64)
        return (h % np.uint64(len(self.table))).astype(np.int64)

    def _hash(self, window) -> int:
        h = 0
        for t in window:
            h = (h * _HASH_MUL + (t & _MASK)) & _MASK
        return h % len(self.table)

    def _add(self, seq: int, tokens: list[int]) -> None:
        start = self._added.get(seq, 0)
        if len(tokens) - start <= self.n:
            return
        arr = np.asarray(tokens[start:], dtype=np.int32)
        idx = self._hashes(arr[:-1])          # windows followed by a token
        nxt = arr[self.n:]
        self.used += int(np.count_nonzero(self.table[idx] == -1))
        self.table[idx] = nxt
        self._added[seq] = len(tokens) - self.n
        if self.used > self.RESET_USED * len(self.table):
            self.reset()

    def reset(self) -> None:
        self.table.fill(-1)
        self.used = 0
        self._added.clear()

    def begin(self, seq: int, prompt: list[int]) -> None:
        self._added[seq] = 0
        self._low[seq] = 0
        self._add(seq, prompt)

    def propose(self, wants: dict[int, tuple[list[int], int]]) -> dict[int, list[int]]:
        return {seq: self.draft(seq, tokens, n) for seq, (tokens, n) in wants.items()}

    def draft(self, seq: int, tokens: list[int], n_max: int) -> list[int]:
        if len(tokens) < self.n:
            return []
        if len(tokens) - self._added.get(seq, 0) > 32 + self.n:   # new n-grams, in chunks
            self._add(seq, tokens)
        window = list(tokens[-self.n:])
        out: list[int] = []
        for _ in range(min(self.n_max, n_max)):
            token = int(self.table[self._hash(window[-self.n:])])
            if token < 0:
                break
            out.append(token)
            window.append(token)
        return out if len(out) >= min(self.n_min, n_max) else []

    def accepted(self, seq: int, n_drafted: int, n_accepted: int) -> None:
        if n_drafted <= 0:
            return
        if n_accepted / n_drafted < 0.25:
            self._low[seq] = self._low.get(seq, 0) + 1
            if self._low[seq] >= 5:
                self.reset()
                self._low[seq] = 0
        else:
            self._low[seq] = 0


class VocabMismatch(ValueError):
    """The draft model's vocabulary is not the target's."""


# llama-server's limits (common/speculative.cpp): ids below 5 may differ (special tokens),
# and the sizes may differ by at most 128 (padding)
_VOCAB_CHECK_START = 5
_VOCAB_MAX_SIZE_DIFFERENCE = 128


def check_vocab_compatible(target, draft) -> None:
    """Raise VocabMismatch naming the first difference between two models' vocabularies."""
    tv, dv = target.vocab, draft.vocab
    lib = tv._lib
    if lib.llama_vocab_type(tv.handle) != lib.llama_vocab_type(dv.handle):
        raise VocabMismatch("the draft model's vocabulary type differs from the target's")
    for what in ("add_bos", "add_eos", "bos", "eos"):
        if getattr(tv, what) != getattr(dv, what):
            raise VocabMismatch(f"the draft model's {what} ({getattr(dv, what)}) differs from "
                                f"the target's ({getattr(tv, what)})")
    if abs(tv.n_tokens - dv.n_tokens) > _VOCAB_MAX_SIZE_DIFFERENCE:
        raise VocabMismatch(f"the draft model has {dv.n_tokens} tokens, the target {tv.n_tokens} "
                            f"(at most {_VOCAB_MAX_SIZE_DIFFERENCE} apart)")
    for i in range(_VOCAB_CHECK_START, min(tv.n_tokens, dv.n_tokens)):
        if tv.text(i) != dv.text(i):
            raise VocabMismatch(f"token {i} is {dv.text(i)!r} in the draft model and "
                                f"{tv.text(i)!r} in the target")


class DraftModel:
    """``draft-simple``: a draft model's context with one sequence per slot. Each call brings
    every asking slot's draft sequence up to the slot's tokens (reusing the common prefix),
    then drafts greedily, one batch per step for all slots together, stopping a slot when the
    draft model's probability of its choice falls below ``p_min``."""

    name = "draft-simple"

    def __init__(self, model, ctx, *, n_max: int = 3, n_min: int = 0, p_min: float = 0.0):
        from ..batch import Batch
        self.model, self.ctx = model, ctx
        self.n_max, self.n_min, self.p_min = n_max, n_min, p_min
        self.cache: dict[int, list[int]] = {}     # seq -> tokens its KV holds
        self.n_batch = ctx.n_batch
        self._batch = Batch(max(ctx.n_batch, ctx.n_seq_max))

    def begin(self, seq: int, prompt: list[int]) -> None:
        pass

    def accepted(self, seq: int, n_drafted: int, n_accepted: int) -> None:
        pass

    def close(self) -> None:
        self.ctx.close()
        self.model.close()

    def reset(self) -> None:
        """Forget every draft sequence (after a failed draft decode)."""
        self.ctx.clear()
        self.cache.clear()

    def _choose(self, i: int) -> tuple[int, float]:
        logits = self.ctx.logits(i)
        token = int(np.argmax(logits))
        if self.p_min <= 0.0:
            return token, 1.0
        mx = logits[token]
        return token, float(1.0 / np.exp(logits - mx).sum(dtype=np.float64))

    def propose(self, wants: dict[int, tuple[list[int], int]]) -> dict[int, list[int]]:
        first: dict[int, tuple[int, float]] = {}
        todo: list[tuple[int, list[int], int]] = []        # (seq, tokens to evaluate, first pos)
        for seq, (tokens, n) in wants.items():
            have = self.cache.get(seq, [])
            keep = min(_lcp(have, tokens), len(tokens) - 1)   # the last token gives the logits
            self.ctx.seq_rm(seq, keep, -1)
            self.cache[seq] = list(tokens[:keep])
            todo.append((seq, list(tokens[keep:]), keep))
        # bring the sequences up to date: chunks of n_batch, logits at each one's last token
        batch = self._batch
        while todo:
            batch.clear()
            room, done, rest = self.n_batch, [], []
            for seq, toks, pos in todo:
                take = min(len(toks), room)
                if take:
                    last = batch.add(toks[:take], pos, seq, take == len(toks))
                    room -= take
                    self.cache[seq].extend(toks[:take])
                    if take == len(toks):
                        done.append((seq, last))
                        continue
                rest.append((seq, toks[take:], pos + take))
            self.ctx.decode(batch)
            for seq, last in done:
                first[seq] = self._choose(last)
            todo = rest
        drafts: dict[int, list[int]] = {seq: [] for seq in wants}
        active = {seq: first[seq] for seq in wants}
        while active:
            batch.clear()
            index: dict[int, int] = {}
            for seq, (token, p) in active.items():
                if p < self.p_min:
                    continue
                drafts[seq].append(token)
                if len(drafts[seq]) >= min(self.n_max, wants[seq][1]):
                    continue
                index[seq] = batch.add([token], len(self.cache[seq]), seq, True)
                self.cache[seq].append(token)
            if not index:
                break
            self.ctx.decode(batch)
            active = {seq: self._choose(i) for seq, i in index.items()}
        return {seq: d if len(d) >= self.n_min else [] for seq, d in drafts.items()}


def _lcp(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if len(diff) else n


class Speculator:
    """The proposers of ``--spec-type``, tried in order for each slot until one drafts."""

    def __init__(self, proposers: list, n_max: int):
        self.proposers = proposers
        self.n_max = n_max            # the most any proposer drafts (sizes the batch room)
        self.name = ",".join(p.name for p in proposers)

    def begin(self, seq: int, prompt: list[int]) -> None:
        for p in self.proposers:
            p.begin(seq, prompt)

    def propose(self, wants: dict[int, tuple[list[int], int]]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        left = dict(wants)
        for p in self.proposers:
            if not left:
                break
            for seq, draft in p.propose(left).items():
                if draft:
                    out[seq] = draft[:left[seq][1]]
                    del left[seq]
        return out

    def accepted(self, seq: int, n_drafted: int, n_accepted: int) -> None:
        for p in self.proposers:
            p.accepted(seq, n_drafted, n_accepted)

    def close(self) -> None:
        for p in self.proposers:
            if hasattr(p, "close"):
                p.close()

    def reset(self) -> None:
        for p in self.proposers:
            if hasattr(p, "reset"):
                p.reset()

    @classmethod
    def from_config(cls, cfg: SpecConfig, draft: "DraftModel | None" = None) -> "Speculator | None":
        proposers: list = []
        for t in cfg.types:
            if t == "ngram-simple":
                proposers.append(NgramSimple(cfg.ngram_simple_size_n, cfg.ngram_simple_size_m))
            elif t == "ngram-mod":
                proposers.append(NgramMod(cfg.ngram_mod_n_match, cfg.ngram_mod_n_max, cfg.ngram_mod_n_min))
            elif t == "draft-simple":
                if draft is None:
                    raise ValueError("--spec-type draft-simple needs a draft model (-md)")
                proposers.append(draft)
            elif t != "none":
                raise ValueError(f"unknown speculative type {t!r} (one of {', '.join(SPEC_TYPES)})")
        if not proposers:
            return None
        n_max = max(cfg.draft_n_max if isinstance(p, DraftModel) else
                    cfg.ngram_simple_size_m if isinstance(p, NgramSimple) else cfg.ngram_mod_n_max
                    for p in proposers)
        return cls(proposers, n_max)
