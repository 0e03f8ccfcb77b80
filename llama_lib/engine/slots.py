"""Slot: one sequence of the shared context and the request it serves."""
from __future__ import annotations

from dataclasses import dataclass, field

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

    @property
    def idle(self) -> bool:
        return self.request is None

    @property
    def n_past(self) -> int:
        return len(self.cache_tokens)
