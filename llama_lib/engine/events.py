"""What the engine publishes into a request's mailbox."""
from __future__ import annotations

from dataclasses import dataclass, field

from .request import Status

__all__ = ["TokenEvent", "FinalEvent", "ProgressEvent"]


@dataclass(slots=True)
class TokenEvent:
    text: str                         # text safe to publish (may be "" while a stop is pending)
    token: int
    # With n_probs: the top n (token, probability) pairs, most likely first, of the model's
    # distribution before sampling (softmax of the raw logits), or with post_sampling_probs
    # of the candidates the sampler chain kept; ``prob``: the chosen token's probability in
    # that same distribution.
    probs: list[tuple[int, float]] | None = None
    prob: float | None = None
    chain_probs: list[tuple[int, float]] | None = None   # the chain's top n (the seed's format)
    timings: dict | None = None       # with timings_per_token: the request's timings so far


@dataclass(slots=True)
class ProgressEvent:
    """return_progress: how far the prompt's evaluation is (streams only)."""
    total: int                        # prompt tokens
    cache: int                        # reused from the slot's cache (or a shared evaluation)
    processed: int                    # in the cache now: cache + evaluated so far
    time_ms: int
    timings: dict | None = None       # with timings_per_token


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
