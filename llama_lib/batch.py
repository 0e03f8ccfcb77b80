"""Batch: a llama_batch whose arrays are numpy buffers owned here.

llama_batch_init allocates one tiny seq_id array per token, which forces per-token ctypes
writes. Owning the memory instead lets the engine fill a whole prompt chunk with a few
vectorised numpy assignments; the struct only points at these buffers, which live as long
as the Batch does.
"""
from __future__ import annotations

import ctypes

import numpy as np

from . import _raw

__all__ = ["Batch"]


class Batch:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.tokens = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.seq = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        self._n_seq_id = np.ones(capacity, dtype=np.int32)
        seq_base = self.seq.ctypes.data
        self._seq_ptrs = (ctypes.POINTER(_raw.llama_seq_id) * capacity)(
            *[ctypes.cast(seq_base + 4 * i, ctypes.POINTER(_raw.llama_seq_id)) for i in range(capacity)])
        self.n_tokens = 0
        self._struct = _raw.llama_batch(
            0,
            self.tokens.ctypes.data_as(ctypes.POINTER(_raw.llama_token)),
            None,
            self.pos.ctypes.data_as(ctypes.POINTER(_raw.llama_pos)),
            self._n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            self._seq_ptrs,
            self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )

    def clear(self) -> None:
        self.n_tokens = 0

    def add(self, tokens, first_pos: int, seq_id: int, want_last_logits: bool) -> int:
        """Append tokens at positions first_pos.. for seq_id; returns the index of the last one."""
        n = len(tokens)
        start, end = self.n_tokens, self.n_tokens + n
        if end > self.capacity:
            raise ValueError(f"batch overflow: {end} > {self.capacity}")
        self.tokens[start:end] = tokens
        self.pos[start:end] = np.arange(first_pos, first_pos + n, dtype=np.int32)
        self.seq[start:end] = seq_id
        self.logits[start:end] = 0
        if want_last_logits:
            self.logits[end - 1] = 1
        self.n_tokens = end
        return end - 1

    def add_singles(self, tokens, positions, seq_ids) -> int:
        """Append one token (with logits) for each of several sequences in one vectorised
        write; returns the batch index of the first."""
        n = len(tokens)
        start, end = self.n_tokens, self.n_tokens + n
        if end > self.capacity:
            raise ValueError(f"batch overflow: {end} > {self.capacity}")
        self.tokens[start:end] = tokens
        self.pos[start:end] = positions
        self.seq[start:end] = seq_ids
        self.logits[start:end] = 1
        self.n_tokens = end
        return start

    def add_all_outputs(self, tokens, first_pos: int, seq_id: int) -> int:
        """Append tokens with every position marked as output (embeddings)."""
        last = self.add(tokens, first_pos, seq_id, True)
        self.logits[last - len(tokens) + 1:last + 1] = 1
        return last

    @property
    def struct(self) -> _raw.llama_batch:
        self._struct.n_tokens = self.n_tokens
        return self._struct
