"""Slot: one sequence of the shared context and the request it serves."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .request import Request

__all__ = ["Slot", "common_prefix"]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class Slot:
    id: int
    n_ctx: int
    cache_tokens: list[int] = field(default_factory=list)  # exactly what the KV cache holds
    request: Request | None = None
    pending: list[int] = field(default_factory=list)        # tokens still to evaluate
    n_prompt: int = 0                                        # prompt length after truncation
    # Per-request timing marks (perf_counter seconds)
    t_start: float = 0.0
    t_prompt_done: float = 0.0
    t_last: float = 0.0
    n_prompt_evaluated: int = 0
    last_prompt: list[int] = field(default_factory=list)
    # n_cmpl: the slot whose prompt evaluation this one waits to share (-1: none), and
    # whether this slot's cells may be shared with another sequence (seq_cp in a unified
    # KV cache: its positions must not be edited then)
    leader: int = -1
    shared: bool = False
    lora: Any = None               # the adapter set the cached tokens were computed with

    @property
    def idle(self) -> bool:
        return self.request is None

    @property
    def n_past(self) -> int:
        return len(self.cache_tokens)
