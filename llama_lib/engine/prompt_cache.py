"""A host-RAM prompt cache: slot prompts evicted from the KV cache, kept to be restored.

llama-server's ``--cache-ram``: when a slot is about to lose most of its cached prompt to a
new request, the slot's sequence state (``llama_state_seq_get_data``) goes into a bounded
LRU held in host memory; then the entry that serves the new prompt best (see ``take``) is
written back into the slot (``llama_state_seq_set_data``), so only the prompt's tail is
evaluated. With ``--cache-idle-slots`` every idle slot is saved whenever a request is
admitted, so nothing is lost when the slot is reused later.

``PromptCache`` is model-free (tokens, bytes, statistics); ``SlotPromptCache`` ties it to a
context and is the hook the scheduler calls before it starts a request in a slot.
"""
from __future__ import annotations

import collections
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import StateError

__all__ = ["PromptCache", "SlotPromptCache", "default_limit_mib"]

logger = logging.getLogger(__name__)

MIB = 1 << 20
# A cached prompt must keep at least this fraction of itself to be restored (llama-server:
# a large prompt is not trashed for a short match).
MIN_KEEP = 0.25
# A slot saves its prompt before a request that keeps less than this fraction of it.
SAVE_BELOW_KEEP = 0.5


def lcp(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the common prefix of two int32 token arrays, vectorised."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


def default_limit_mib(requested: int, explicit: bool) -> int:
    """The limit in MiB: the flag's value when given (-1: no limit, 0: off), else llama-server's
    8192 MiB capped at a quarter of this machine's physical memory."""
    if explicit:
        return requested
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return requested
    return max(1, min(requested, total // 4 // MIB))


@dataclass(eq=False)     # entries are compared by identity (list.remove); tokens are arrays
class Entry:
    tokens: np.ndarray       # int32: exactly what the state holds
    lora: Any                # the adapter set the state was computed with
    data: bytearray

    @property
    def nbytes(self) -> int:
        return len(self.data)


class PromptCache:
    """Bounded LRU of prompt states by bytes (``limit_bytes`` <= 0: no limit), oldest first."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self.entries: collections.deque[Entry] = collections.deque()
        self.n_saved = 0
        self.n_hits = 0
        self.n_tokens_restored = 0
        self.n_evicted = 0

    @property
    def bytes_held(self) -> int:
        return sum(e.nbytes for e in self.entries)

    @property
    def n_tokens(self) -> int:
        return sum(len(e.tokens) for e in self.entries)

    def holds(self, tokens: np.ndarray, lora=None) -> bool:
        """Whether an entry already holds ``tokens`` (as a prefix of its own)."""
        return any(e.lora == lora and lcp(e.tokens, tokens) == len(tokens) for e in self.entries)

    def save(self, tokens: np.ndarray, lora, read: Callable[[], bytearray]) -> bool:
        """Keep the state ``read()`` returns for ``tokens`` (called only when it is needed):
        entries it contains are dropped, the oldest are evicted to make room. False when
        already held, or larger than the whole limit."""
        if not len(tokens) or self.holds(tokens, lora):
            return False
        data = read()
        if 0 < self.limit_bytes < len(data):
            logger.info("prompt cache: a %d-token state (%.1f MiB) exceeds --cache-ram, not kept",
                        len(tokens), len(data) / MIB)
            return False
        self.entries = collections.deque(
            e for e in self.entries if not (e.lora == lora and lcp(e.tokens, tokens) == len(e.tokens)))
        if self.limit_bytes > 0:
            held = self.bytes_held
            while self.entries and held + len(data) > self.limit_bytes:
                held -= self.entries.popleft().nbytes
                self.n_evicted += 1
        self.entries.append(Entry(tokens.copy(), lora, data))
        self.n_saved += 1
        return True

    def take(self, current: np.ndarray, prompt: np.ndarray, lora) -> Entry | None:
        """The entry to restore for ``prompt`` into a slot holding ``current`` (removed from
        the cache), or None. As llama-server: an entry must keep at least MIN_KEEP of itself
        and beat the slot's own cache on both counts, the fraction of the entry kept and the
        fraction of the prompt served, so neither a short match of a long prompt nor a long
        entry with little use wins."""
        if not len(prompt):
            return None
        base = lcp(current, prompt)
        best_keep = base / len(current) if len(current) else -1.0
        best_sim = base / len(prompt)
        best = None
        for entry in self.entries:
            if entry.lora != lora or not len(entry.tokens):
                continue
            n = lcp(entry.tokens, prompt)
            keep, sim = n / len(entry.tokens), n / len(prompt)
            if keep >= MIN_KEEP and keep > best_keep and sim > best_sim:
                best, best_keep, best_sim = entry, keep, sim
        if best is not None:
            self.entries.remove(best)
        return best

    def clear(self) -> None:
        self.entries.clear()

    def stats(self) -> dict:
        return {"prompt_cache_hits": self.n_hits, "prompt_cache_tokens_restored": self.n_tokens_restored,
                "prompt_cache_bytes": self.bytes_held, "prompt_cache_entries": len(self.entries),
                "prompt_cache_saved": self.n_saved, "prompt_cache_evicted": self.n_evicted}


class SlotPromptCache:
    """The prompt cache over one context: the scheduler's ``before_start`` hook (save the slot
    before it loses most of its prompt, restore the best entry) and ``save_idle``."""

    def __init__(self, ctx, limit_mib: int, *, idle_slots: bool = True):
        self.ctx = ctx
        self.cache = PromptCache(limit_mib * MIB if limit_mib > 0 else 0)
        self.idle_slots = idle_slots
        # slot id -> (id, length, last token) of the idle slot's token list when save_idle last saw it:
        # an idle slot's tokens do not change, so it is not compared with every entry again
        self._seen: dict[int, tuple[int, int, int]] = {}

    def _save(self, slot) -> bool:
        tokens = np.asarray(slot.cache_tokens, dtype=np.int32)
        try:
            return self.cache.save(tokens, slot.lora, lambda: self.ctx.sequence_state(slot.id))
        except StateError as exc:
            logger.warning("prompt cache: slot %d not saved: %s", slot.id, exc)
            return False

    def before_start(self, slot, req, prompt: list[int]) -> None:
        """Called by the scheduler (engine thread) before ``req`` starts in ``slot``, when the
        slot's cache may be reused; may replace what the slot holds (its ``cache_tokens``)."""
        self._seen.pop(slot.id, None)
        new = np.asarray(prompt, dtype=np.int32)
        current = np.asarray(slot.cache_tokens, dtype=np.int32)
        lora = req.options.lora
        kept = lcp(current, new) if slot.lora == lora else 0
        if len(current) and kept < SAVE_BELOW_KEEP * len(current):
            self._save(slot)
        if slot.lora != lora:
            current = current[:0]
        entry = self.cache.take(current, new, lora)
        if entry is None:
            return
        try:
            self.ctx.set_sequence_state(entry.data, slot.id)
        except StateError as exc:
            logger.warning("prompt cache: restoring %d tokens into slot %d failed: %s",
                           len(entry.tokens), slot.id, exc)
            slot.cache_tokens = []
            return
        slot.cache_tokens = entry.tokens.tolist()
        slot.lora = entry.lora
        slot.shared = False
        self.cache.n_hits += 1
        self.cache.n_tokens_restored += lcp(entry.tokens, new)

    def save_idle(self, slots, clear: bool) -> None:
        """--cache-idle-slots: keep every idle slot's prompt; with a unified KV cache also
        free its cells (the cache restores them when they are wanted again)."""
        for slot in slots:
            if slot.idle and slot.cache_tokens:
                mark = (id(slot.cache_tokens), len(slot.cache_tokens), slot.cache_tokens[-1])
                if self._seen.get(slot.id) == mark and not clear:
                    continue
                self._save(slot)
                self._seen[slot.id] = mark
                if clear:
                    self.ctx.seq_rm(slot.id, -1, -1)
                    slot.cache_tokens = []
