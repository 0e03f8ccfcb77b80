"""Request: one generation asked of the engine, its status, and how it finished."""
from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Request", "Status", "FinishReason", "GenerationOptions"]

_ids = itertools.count(1)


class Status(enum.Enum):
    WAITING = "waiting"          # in the FIFO queue, no slot yet
    PROMPT = "prompt"            # in a slot, prompt being evaluated
    GENERATING = "generating"    # producing tokens
    FINISHED_EOS = "eos"
    FINISHED_LIMIT = "limit"     # n_predict reached
    FINISHED_CONTEXT = "context"  # context full and no shift allowed
    FINISHED_STOP = "stop_word"
    FINISHED_GRAMMAR = "grammar"  # the grammar admits no further token
    ABORTED = "aborted"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self not in (Status.WAITING, Status.PROMPT, Status.GENERATING)


class FinishReason:
    """One mapping from a final status to the reasons the APIs report."""
    OPENAI = {Status.FINISHED_EOS: "stop", Status.FINISHED_STOP: "stop",
              Status.FINISHED_GRAMMAR: "stop", Status.FINISHED_LIMIT: "length",
              Status.FINISHED_CONTEXT: "length", Status.ABORTED: "abort", Status.FAILED: "error"}

    @staticmethod
    def openai(status: Status) -> str | None:
        return FinishReason.OPENAI.get(status)


@dataclass
class GenerationOptions:
    """What a request asks of the engine beyond sampling; parsed by the web layer."""
    n_predict: int = -1
    n_keep: int = 0
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    cache_prompt: bool = True
    id_slot: int = -1
    n_probs: int = 0
    stream: bool = False
    truncate_prompt: bool = True     # seed behaviour; the OpenAI routes reject instead
    t_max_predict_ms: float = 0.0
    embedding: bool = False          # evaluate the prompt for embeddings, generate nothing
    n_discard: int = 0               # context shift drops this many tokens after n_keep (0: half)
    post_sampling_probs: bool = False  # n_probs reports the sampler chain's survivors, not the model's top
    timings_per_token: bool = False  # every token event carries the timings so far
    return_progress: bool = False    # progress events while the prompt is evaluated (streams)
    # LoRA scales for this request, one per loaded adapter; None: the server's current scales.
    # Requests with different adapter sets never share a batch.
    lora: tuple[float, ...] | None = None
    special: bool = False            # render special tokens as text (chat formats that parse them)


@dataclass
class Request:
    prompt_tokens: list[int]
    options: GenerationOptions
    sampling: Any = None             # sampling.SamplingParams
    id: int = field(default_factory=lambda: next(_ids))
    status: Status = Status.WAITING
    t_arrival: float = field(default_factory=time.perf_counter)
    error: str | None = None
    # The failure's kind, set where it happens, mapped once to an HTTP status by the web
    # layer: exceed_context_size_error (400), unavailable_error (503), server_error (500).
    error_type: str = ""
    mailbox: Any = None
    # Built by the web layer before submission (DRY tables and grammar parsing stay off the
    # engine thread); None: the engine builds one at admission.
    sampler: Any = None
    # n_cmpl / n choices: the request whose evaluated prompt this one shares (same prompt,
    # submitted together, admitted with it into another slot); None: evaluates its own.
    parent: "Request | None" = None
    # Images and audio in the prompt (engine/media.py): placeholder key -> MediaChunk
    media: dict | None = None
    # Filled by the engine as it works:
    slot_id: int = -1
    n_cached: int = 0                # prompt tokens reused from the slot's cache
    truncated: bool = False
    n_generated: int = 0

    def __hash__(self) -> int:
        return self.id
