"""Shared machinery of the generation routes: body parsing, prompts, submission, waiting.

Routes turn a body into (tokens, options, sampling params), build engine requests with
``new_request()`` (the sampler is made here, on the request's greenlet, not on the engine
thread), then submit and read them through one ``webapp.group.RequestGroup``:
``stream_group()`` for streams, ``collect_all()`` for whole answers.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from flask import current_app, request

from llama_lib.engine import FinalEvent, GenerationOptions, Request, Status, TokenEvent
from sampling import ParamError, parse_sampling_params

from .errors import ApiError, BadRequest, error_for
from .group import RequestGroup

__all__ = ["json_body", "tokenize_prompt", "parse_options", "sampling_for", "new_request",
           "submit", "collect_all", "Collected", "probs_entry", "call_engine",
           "raise_for_failure", "lora_scales", "choice_params", "INT32_MAX"]

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def json_body() -> dict:
    data = request.get_data(cache=True)
    if not data:
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the request body is not valid JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if b"\\ud" in data or b"\\uD" in data:
        _check_surrogates(body)
    return body


def _check_surrogates(value) -> None:
    """JSON may escape a lone UTF-16 surrogate (``\\ud800``), which is no character at all:
    refuse it here (llama-server's parser does too) rather than fail later on encoding."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest("the request body is not valid JSON: a string holds a lone "
                                 "UTF-16 surrogate") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_token(t, vocab, where: str) -> int:
    if isinstance(t, bool) or not isinstance(t, int):
        raise BadRequest(f"{where} must hold strings or token ids")
    if not 0 <= t < vocab.n_tokens:
        raise BadRequest(f"token id {t} in {where} is out of range [0, {vocab.n_tokens})")
    return t


def tokenize_prompt(vocab, prompt, where: str = "prompt", add_special: bool = True) -> list[int]:
    """A string, a token list, or a mixed list of strings and token ids.

    As in the seed, BOS is added when the prompt is a string or starts with a string and the
    model asks for it."""
    if isinstance(prompt, str):
        return vocab.tokenize(prompt, add_special=add_special, parse_special=True)
    if isinstance(prompt, list):
        tokens: list[int] = []
        for i, part in enumerate(prompt):
            if isinstance(part, str):
                tokens.extend(vocab.tokenize(part, add_special=add_special and i == 0, parse_special=True))
            else:
                tokens.append(_check_token(part, vocab, where))
        return tokens
    raise BadRequest(f"'{where}' must be a string or a list of strings and token ids")


def _int(body, key, default, lo=None, hi=None):
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise BadRequest(f"'{key}' must be an integer")
    v = int(v)
    if hi is not None and (v > hi or (lo is not None and v < lo)):
        raise BadRequest(f"'{key}' must be between {lo} and {hi}, but got {v}")
    if lo is not None and v < lo:
        raise BadRequest(f"'{key}' must be >= {lo}")
    return v


def _bool(body, key, default):
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise BadRequest(f"'{key}' must be a boolean")
    return v


def parse_stop(value, key: str = "stop") -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    raise BadRequest(f"'{key}' must be a string or a list of strings")


def parse_options(body: dict, settings, n_predict_key: str = "n_predict") -> GenerationOptions:
    """llama-server's request fields beyond sampling, with its defaults and ranges (a value
    out of range is a 400 naming the field, as its hard limits are)."""
    n_predict = _int(body, n_predict_key, -1, lo=-1, hi=INT32_MAX)
    t_max = body.get("t_max_predict_ms", 0) or 0
    if isinstance(t_max, bool) or not isinstance(t_max, (int, float)) or not math.isfinite(t_max):
        raise BadRequest("'t_max_predict_ms' must be a number")
    if not -1 <= t_max <= INT64_MAX:
        raise BadRequest(f"'t_max_predict_ms' must be between -1 and {INT64_MAX}, but got {t_max}")
    return GenerationOptions(
        n_predict=n_predict,
        n_keep=_int(body, "n_keep", settings.keep, lo=-1, hi=INT32_MAX),
        n_discard=_int(body, "n_discard", 0, lo=0, hi=INT32_MAX),
        stop=parse_stop(body.get("stop")),
        ignore_eos=_bool(body, "ignore_eos", settings.ignore_eos),
        cache_prompt=_bool(body, "cache_prompt", True),
        id_slot=_int(body, "id_slot", -1, lo=-1),
        n_probs=_int(body, "n_probs", 0, lo=0),
        post_sampling_probs=_bool(body, "post_sampling_probs", False),
        stream=_bool(body, "stream", False),
        timings_per_token=_bool(body, "timings_per_token", False),
        return_progress=_bool(body, "return_progress", False),
        t_max_predict_ms=float(t_max),
        lora=_request_lora(body.get("lora")),
    )


def _request_lora(value) -> tuple[float, ...] | None:
    """A request's ``lora`` (``[{"id", "scale"}]``): the scales of every loaded adapter for
    this request (one left out gets 0), or None for the server's (no field, null, or [] as in
    llama-server). An unknown id is a 400 (llama-server ignores it silently)."""
    if value is None or value == []:
        return None
    state = current_app.extensions.get("llama")
    engine = state.engine if state is not None else None
    return tuple(lora_scales(value, len(engine.lora_adapters) if engine is not None else 0, "'lora'"))


def lora_scales(items, n_adapters: int, where: str) -> list[float]:
    """``[{"id": int, "scale": number}, ...]`` -> one scale per adapter (0 for those left
    out); ``where`` names the JSON value in errors (a field, or "the request body")."""
    shape = f"{where} must be an array of {{\"id\": int, \"scale\": number}}"
    if not isinstance(items, list):
        raise BadRequest(shape)
    scales = [0.0] * n_adapters
    for item in items:
        if not isinstance(item, dict):
            raise BadRequest(shape)
        adapter_id, scale = item.get("id"), item.get("scale")
        if isinstance(adapter_id, bool) or not isinstance(adapter_id, int) \
                or not 0 <= adapter_id < n_adapters:
            raise BadRequest(f"{where}: invalid adapter id {adapter_id!r}: this server has "
                             f"{n_adapters} adapter(s)")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise BadRequest(f"{where}: the scale of adapter {adapter_id} must be a finite number")
        scales[adapter_id] = float(scale)
    return scales


def choice_params(params, j: int):
    """Sampling settings of choice ``j`` of n (n_cmpl / n): its own seed, the request's plus
    j, when a seed was given (as llama-server's child tasks)."""
    if params is None or params.seed < 0 or params.seed == 0xFFFFFFFF:    # random: each its own
        return params
    seed = (params.seed & 0xFFFFFFFF) if j == 0 else (params.seed + j) & 0xFFFFFFFF
    return params.with_(seed=seed)


def sampling_for(body: dict, state, vocab):
    try:
        params = parse_sampling_params(body, state.defaults)
    except ParamError as exc:
        raise BadRequest(str(exc)) from None
    params = _resolve_logit_bias(params, vocab)
    grammar = body.get("grammar")
    schema = body.get("json_schema")
    if grammar is not None and schema is not None:
        raise BadRequest("use either 'grammar' or 'json_schema', not both")
    if schema is not None:
        grammar = schema_grammar(schema)
    if grammar is not None:
        if not isinstance(grammar, str):
            raise BadRequest("'grammar' must be a string of GBNF")
        if grammar.strip():
            # parsed once, by libllama, when new_request() builds the request's sampler
            params = params.with_(grammar=grammar)
    return params


def schema_grammar(schema) -> str:
    try:
        from sampling.json_schema import SchemaError, schema_to_grammar
    except ImportError:
        raise ApiError("JSON schema constraints are not available in this build",
                       "not_supported_error", 501) from None
    if not isinstance(schema, (dict, bool)):
        raise BadRequest("'json_schema' must be a JSON Schema object")
    try:
        return schema_to_grammar(schema)
    except SchemaError as exc:
        raise BadRequest(f"JSON schema not supported: {exc}") from None
    except (OverflowError, RecursionError, ValueError) as exc:
        # e.g. a pattern quantifier beyond what re can compile, or nesting beyond the stack
        raise BadRequest(f"JSON schema not supported: {type(exc).__name__}: {exc}") from None


def _resolve_logit_bias(params, vocab):
    if not params.logit_bias:
        return params
    out = []
    for key, bias in params.logit_bias:
        if isinstance(key, str):
            for t in vocab.tokenize(key, add_special=False, parse_special=False):
                out.append((t, bias))
        else:
            if not 0 <= key < vocab.n_tokens:
                raise BadRequest(f"'logit_bias': token id {key} is out of range [0, {vocab.n_tokens})")
            out.append((key, bias))
    return params.with_(logit_bias=tuple(out))


def new_request(engine, tokens: list[int], options: GenerationOptions, params, *,
                system_prompt: bool = True, media: dict | None = None) -> Request:
    """One engine request, not yet submitted, with its sampler built here (grammar parsing
    and DRY tables happen on this greenlet, not on the engine thread). The server-wide
    system prompt goes in front of generation prompts (webapp/system_prompt.py); routes
    whose prompts must stay exactly as given (infill's layout) pass ``system_prompt=False``.
    ``media``: the prompt's media chunks by placeholder key (webapp/media.py)."""
    if not tokens:
        raise BadRequest("the prompt is empty")
    state = current_app.extensions.get("llama")
    if system_prompt and not options.embedding and state is not None:
        tokens, options = state.system.apply(engine.vocab, tokens, options)
    if options.id_slot >= engine.config.n_slots:
        raise BadRequest(f"'id_slot' {options.id_slot} does not exist (slots: {engine.config.n_slots})")
    req = Request(prompt_tokens=tokens, options=options, sampling=params, media=media)
    if params is not None and not options.embedding:
        from llama_lib import GrammarError
        try:
            req.sampler = engine.make_sampler(params, tokens, options.ignore_eos)
        except GrammarError as exc:
            raise BadRequest(exc.describe()) from None     # "Failed to parse grammar: ..."
    return req


def submit(engine, requests: list[Request], *, watch_client: bool = False) -> RequestGroup:
    """Submit requests together; the group owns them from here (see webapp/group.py)."""
    return RequestGroup(engine, requests, watch_client=watch_client).submit()


def call_engine(engine, fn, timeout: float = 30.0):
    """Run fn(engine) on the engine thread between decodes and return its result (or raise
    its exception); 503 if the engine does not get to it within timeout seconds."""
    box = engine.call(fn)
    items = box.get(timeout)
    if not items:
        raise error_for("unavailable_error", "the engine is not answering; try again later")
    kind, value = items[0]
    if kind == "error":
        raise value
    return value


@dataclass
class Collected:
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    token_events: list = field(default_factory=list)
    final: FinalEvent | None = None


def collect_all(engine, requests: list[Request]) -> list[Collected]:
    """Submit the requests and read every one to its end (non-streamed answers): the client
    is watched while waiting, and the first failure aborts the rest and raises its error."""
    out = [Collected() for _ in requests]
    parts: list[list[str]] = [[] for _ in requests]
    with submit(engine, requests, watch_client=True) as group:
        for i, events in group:
            got = out[i]
            for ev in events:
                if isinstance(ev, TokenEvent):
                    parts[i].append(ev.text)
                    got.tokens.append(ev.token)
                    got.token_events.append(ev)
                elif isinstance(ev, FinalEvent):
                    parts[i].append(ev.text)
                    got.final = ev
                    raise_for_failure(ev)
    for got, text in zip(out, parts):
        got.text = "".join(text)
    return out


def raise_for_failure(final: FinalEvent | None) -> None:
    """A failed or refused request's error, by the kind the engine gave it."""
    if final is None:
        raise error_for("server_error", "the request ended without a result")
    if final.status is Status.FAILED:
        raise error_for(final.error_type, final.error or "generation failed")
    if final.status is Status.ABORTED and final.error:
        raise error_for(final.error_type or "unavailable_error", final.error)


def _valid_text(raw: bytes) -> str:
    """The piece as text, cut before its first byte that is not valid UTF-8 (a token may
    hold part of a character), as llama-server reports a token's text."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return raw[:exc.start].decode("utf-8")


def _log(p: float) -> float:
    return math.log(p) if p > 0.0 else LOWEST_LOGPROB


LOWEST_LOGPROB = -3.4028234663852886e38   # llama-server's log(0): the lowest float, not -inf


def probs_entry(vocab, ev: TokenEvent, post_sampling: bool) -> dict:
    """One generated token's ``completion_probabilities`` entry, in llama-server's shape:
    ``id``, ``token``, ``bytes``, then ``logprob`` and ``top_logprobs`` (the model's top
    n_probs before sampling), or with ``post_sampling_probs`` ``prob`` and ``top_probs``
    (the candidates the sampler chain kept, possibly fewer). The seed's keys come along:
    ``content`` and ``probs`` (``[{"tok_str", "prob"}]``, the chain's candidates)."""
    if post_sampling:
        kind, top_kind, value = "prob", "top_probs", float
    else:
        kind, top_kind, value = "logprob", "top_logprobs", _log
    raw = vocab.piece(ev.token)
    top = []
    for t, p in ev.probs or ():
        piece = vocab.piece(t)
        top.append({"id": t, "token": _valid_text(piece), "bytes": list(piece), kind: value(p)})
    return {
        "id": ev.token, "token": _valid_text(raw), "bytes": list(raw),
        kind: value(ev.prob or 0.0), top_kind: top,
        "content": raw.decode("utf-8", "replace"),
        "probs": [{"tok_str": vocab.piece(t).decode("utf-8", "replace"), "prob": p}
                  for t, p in ev.chain_probs or ()],
    }
