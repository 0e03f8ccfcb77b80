"""What the engine publishes into a request's mailbox."""
from __future__ import annotations

from dataclasses import dataclass, field

from .request import Status

__all__ = ["TokenEvent", "FinalEvent"]


@dataclass
class TokenEvent:
    text: str                         # text safe to publish (may be "" while a stop is pending)
    token: int
    probs: list[tuple[int, float]] | None = None


@dataclass
class FinalEvent:
    status: Status
    text: str = ""                    # last held-back text, published with the final event
    stopping_word: str = ""
    n_prompt: int = 0                 # prompt tokens (after truncation)
    n_cached: int = 0
    n_evaluated: int = 0
    n_predicted: int = 0
    truncated: bool = False
    timings: dict = field(default_factory=dict)
    error: str | None = None
    error_type: str = "server_error"
    embeddings: list | None = None    # embedding requests: one vector, or one per token
    slot_id: int = -1
    seed: int | None = None
