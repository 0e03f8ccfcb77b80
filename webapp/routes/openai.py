"""The machinery the OpenAI-compatible routes share (no routes of its own).

The routes live in ``openai_chat.py`` (``/v1/chat/completions``), ``openai_completions.py``
(``/v1/completions``) and ``models.py`` (``/v1/models``); the first two turn an OpenAI body into engine
requests with :func:`submit_choices` and read their events back with :func:`open_stream`.

Differences from the native ``/completion`` that are on purpose (as in llama-server):

- A prompt that does not fit the slot's context is refused with 400
  ``exceed_context_size_error`` (with ``n_prompt_tokens`` and ``n_ctx``) before anything is
  generated or streamed; it is never truncated.
- ``n`` choices are ``n`` engine requests, one slot each, so ``n`` may not exceed the slots;
  the choices of one prompt share its evaluation (choice 0 evaluates it, the others get a
  copy), and streamed, their chunks are interleaved as they are generated.
- Token log-probabilities are those of the model before sampling (the softmax of its raw
  logits, as llama-server reports them): ``top_logprobs`` always has the N entries asked
  for, and the chosen token's own log-probability is exact (``TokenEvent.prob``).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
import uuid


from llama_lib.engine import FinalEvent, FinishReason, Status
from sampling.params import FIELDS

from ..completion import (choice_params, collect_all, new_request, parse_options, raise_for_failure,
                          sampling_for, submit)
from ..errors import ApiError, BadRequest

__all__ = ["submit_choices", "open_stream", "check_known_fields", "completion_id",
           "response_model", "usage_of", "finish_reason", "token_logprobs", "MIN_PROBS",
           "NATIVE_FIELDS", "fingerprint"]

logger = logging.getLogger(__name__)

MIN_PROBS = 20          # top candidates asked of the engine when log-probabilities are wanted
MAX_TOP_LOGPROBS = 20
UNLIKELY = -9999.0

# llama.cpp-specific fields every OpenAI route also accepts (besides the sampling table).
NATIVE_FIELDS = frozenset({"n_predict", "n_keep", "cache_prompt", "id_slot", "n_probs",
                           "t_max_predict_ms", "grammar", "json_schema", "ignore_eos", "samplers",
                           "n_discard", "lora"}
                          | {key for _name, keys, _d, _p in FIELDS for key in keys})


# --- request parsing ------------------------------------------------------------------------

def check_known_fields(body: dict, known: frozenset, route: str) -> None:
    """Unknown fields are ignored, as OpenAI clients send many; they are logged at debug."""
    unknown = sorted(k for k in body if k not in known and k not in NATIVE_FIELDS)
    if unknown and logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s: ignoring unknown fields: %s", route, ", ".join(unknown))


def _count(body: dict, key: str, lo: int, hi: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (isinstance(value, float) and not value.is_integer()):
        raise BadRequest(f"'{key}' must be an integer")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        raise BadRequest(f"'{key}' must be between {lo} and {hi}" if hi is not None
                         else f"'{key}' must be >= {lo}")
    return value


def parse_n(body: dict, engine, n_prompts: int = 1) -> int:
    n = _count(body, "n", 1)
    n = 1 if n is None else n
    slots = engine.config.n_slots
    if n > slots:
        raise BadRequest(f"'n' is {n} but this server has {slots} slot{'s' if slots != 1 else ''} "
                         f"(each choice takes one; start it with -np {n} or more)")
    return n


def parse_max_tokens(body: dict, *keys: str) -> int:
    """n_predict (llama.cpp's own name) wins over the OpenAI names, first given first."""
    for key in ("n_predict", *keys):
        value = _count(body, key, -1 if key == "n_predict" else 0)
        if value is not None:
            return value
    return -1


def top_logprobs_of(body: dict, key: str = "top_logprobs") -> int:
    return _count(body, key, 0, MAX_TOP_LOGPROBS) or 0


@dataclasses.dataclass
class Generation:
    """What a route asks for besides the prompts."""
    n: int = 1
    n_predict: int = -1
    logprobs: bool = False
    stream: bool = False
    json_schema: object = None
    grammar: dict | None = None      # sampling fields of a tool-call grammar (chat formats)
    special: bool = False            # detokenize special tokens as text (the format parses them)
    wrap_sampler: object = None      # callable(sampler) -> sampler (reasoning budget)


def submit_choices(state, engine, body: dict, token_lists: list[list[int]], gen: Generation,
                   media: list | None = None) -> list:
    """Validate and build n requests per prompt (choice index = prompt * n + j); they are
    submitted by open_stream() or collect_choices(). ``media``: per prompt, its media chunks
    (webapp/media.py) or None."""
    native = dict(body)
    native["n_predict"] = gen.n_predict
    native.pop("n_probs", None)
    native["stream"] = gen.stream
    options = parse_options(native, state.settings)
    n_probs = MIN_PROBS if gen.logprobs else 0
    # the OpenAI shapes have no place for progress events, per-token timings or
    # post-sampling probabilities (yet): the engine is not asked for them
    options = dataclasses.replace(options, n_probs=n_probs, truncate_prompt=False,
                                  post_sampling_probs=False, return_progress=False,
                                  timings_per_token=False)
    sampling_body = dict(body)
    sampling_body["n_probs"] = n_probs
    if gen.json_schema is not None:
        if body.get("grammar") is not None or body.get("json_schema") is not None:
            raise BadRequest("use either 'response_format' or 'grammar'/'json_schema', not both")
        sampling_body["json_schema"] = gen.json_schema
    params = sampling_for(sampling_body, state, engine.vocab)
    if gen.grammar is not None:
        params = params.with_(**gen.grammar)
    if gen.special:
        options = dataclasses.replace(options, special=True)
    for tokens in token_lists:
        check_fits(engine, tokens)
    requests = []
    child_options = dataclasses.replace(options, id_slot=-1)
    for k, tokens in enumerate(token_lists):
        chunks = media[k] if media else None
        first = new_request(engine, tokens, options, choice_params(params, 0), media=chunks)
        requests.append(first)
        for j in range(1, gen.n):      # they share choice 0's prompt evaluation
            child = new_request(engine, tokens, child_options, choice_params(params, j), media=chunks)
            child.parent = first
            requests.append(child)
    if gen.wrap_sampler is not None:
        for req in requests:
            req.sampler = gen.wrap_sampler(req.sampler)
    return requests


def check_fits(engine, tokens: list[int]) -> None:
    if not tokens:
        raise BadRequest("the prompt is empty")
    n_ctx = engine.n_ctx_slot
    if len(tokens) >= n_ctx:
        raise ApiError(f"the request exceeds the available context size: the prompt has "
                       f"{len(tokens)} tokens, a slot holds {n_ctx}; shorten it or start the "
                       f"server with a larger -c",
                       "exceed_context_size_error", 400, n_prompt_tokens=len(tokens), n_ctx=n_ctx)


# --- reading the results back --------------------------------------------------------------

def open_stream(engine, requests):
    """Submit the requests and return their (choice index, events), interleaved as they are
    generated, as a generator to close() when done (closing aborts what is unfinished).

    It waits for the first events before returning, so that a request failing at once (the
    queue full, the engine stopping, the prompt refused) is answered with an HTTP error
    instead of a stream that carries one."""
    group = submit(engine, requests)
    events = iter(group)
    try:
        first = next(events)
        for ev in first[1]:
            if isinstance(ev, FinalEvent) and ev.status in (Status.FAILED, Status.ABORTED):
                raise_for_failure(ev)
    except BaseException:
        group.close()
        raise

    def primed():
        try:
            yield first
            yield from events
        finally:
            group.close()
    return primed()


def collect_choices(engine, requests) -> list[dict]:
    """Non-streamed: for each choice, its text, token events and final event. The client
    is watched while the choices generate; the first failure aborts the others."""
    return [{"text": got.text, "tokens": got.token_events, "final": got.final}
            for got in collect_all(engine, requests)]


# --- response pieces -----------------------------------------------------------------------

def completion_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def response_model(body: dict, state) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else state.model_id


@functools.cache
def fingerprint() -> str:
    """``system_fingerprint``: the libllama build, as llama-server reports its build."""
    from llama_lib import library
    raw = library().llama_version()
    return "b" + (raw.decode() if raw else "unknown")


def finish_reason(final: FinalEvent) -> str:
    return FinishReason.openai(final.status) or "stop"


def usage_of(finals: list[FinalEvent], n: int) -> dict:
    """Prompt tokens are counted once per prompt (each prompt's first choice), completion
    tokens over every choice."""
    firsts = finals[::n]
    prompt = sum(f.n_prompt for f in firsts)
    completion = sum(f.n_predicted for f in finals)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": sum(f.n_cached for f in firsts)}}


def _logprob(p: float) -> float:
    return math.log(p) if p > 0 else UNLIKELY


def token_logprobs(vocab, token: int, probs, top_n: int, chosen: float | None = None) -> dict:
    """One token in the chat shape: token, logprob, bytes and its top_logprobs. ``probs``:
    the event's top (token, probability) pairs; ``chosen``: the token's own probability
    (``TokenEvent.prob``), else looked up among ``probs`` (-9999.0 when not there)."""
    probs = probs or []
    if chosen is None:
        chosen = next((p for t, p in probs if t == token), None)
    raw = vocab.piece(token)
    return {
        "token": raw.decode("utf-8", "replace"),
        "logprob": _logprob(chosen) if chosen is not None else UNLIKELY,
        "bytes": list(raw),
        "top_logprobs": [{"token": vocab.piece(t).decode("utf-8", "replace"),
                          "logprob": _logprob(p), "bytes": list(vocab.piece(t))}
                         for t, p in probs[:top_n]],
    }
