"""Shared machinery of the generation routes: body parsing, prompts, submission, waiting.

Routes call ``prepare()`` to turn a request body into (tokens, options, sampling params),
``start()`` to submit, then either ``stream_events()`` (a generator that aborts the request
when the client goes away) or ``collect()``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from flask import current_app, request

from llama_lib.engine import FinalEvent, GenerationOptions, QueueFull, Request, Status, TokenEvent
from sampling import ParamError, parse_sampling_params

from .errors import ApiError, BadRequest

__all__ = ["json_body", "tokenize_prompt", "parse_options", "sampling_for", "start",
           "stream_events", "collect", "Collected", "probs_seed_format", "WAIT_SLICE", "call_engine"]

CLIENT_CLOSED = 499
WAIT_SLICE = 1.0   # seconds a waiting greenlet sleeps between checks of its client


def client_gone() -> bool:
    """True when the client of a non-streamed request has closed its connection.

    The production server puts the connection's socket in the environ; a readable socket
    whose peek returns no bytes has been closed by the peer. (A streamed response finds out
    on its next write instead.)"""
    sock = request.environ.get("llama.socket")
    if sock is None:
        return False
    try:
        import select
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        import socket as _socket
        return sock.recv(1, _socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def json_body() -> dict:
    data = request.get_data(cache=True)
    if not data:
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        import json
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


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


def _int(body, key, default, lo=None):
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise BadRequest(f"'{key}' must be an integer")
    v = int(v)
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
    n_predict = _int(body, n_predict_key, -1, lo=-1)
    t_max = body.get("t_max_predict_ms", 0) or 0
    if isinstance(t_max, bool) or not isinstance(t_max, (int, float)) or not math.isfinite(t_max):
        raise BadRequest("'t_max_predict_ms' must be a number")
    return GenerationOptions(
        n_predict=n_predict,
        n_keep=_int(body, "n_keep", settings.keep, lo=-1),
        stop=parse_stop(body.get("stop")),
        ignore_eos=_bool(body, "ignore_eos", settings.ignore_eos),
        cache_prompt=_bool(body, "cache_prompt", True),
        id_slot=_int(body, "id_slot", -1, lo=-1),
        n_probs=_int(body, "n_probs", 0, lo=0),
        stream=_bool(body, "stream", False),
        t_max_predict_ms=float(t_max),
    )


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
            check_grammar(vocab, grammar)
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


def check_grammar(vocab, grammar: str) -> None:
    from llama_lib import GrammarError
    try:
        from sampling.grammar import validate_grammar
    except ImportError:
        raise ApiError("grammar constraints are not available in this build",
                       "not_supported_error", 501) from None
    try:
        validate_grammar(vocab, grammar)
    except GrammarError as exc:
        raise BadRequest(f"Failed to parse grammar: {exc.describe()}") from None


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


def start(engine, tokens: list[int], options: GenerationOptions, params, *,
          system_prompt: bool = True) -> Request:
    """Submit one request. The server-wide system prompt goes in front of generation
    prompts (webapp/system_prompt.py); routes whose prompts must stay exactly as given
    (e.g. infill's fill-in-the-middle layout) pass ``system_prompt=False``."""
    if not tokens:
        raise BadRequest("the prompt is empty")
    state = current_app.extensions.get("llama")
    if system_prompt and not options.embedding and state is not None:
        tokens, options = state.system.apply(engine.vocab, tokens, options)
    if options.id_slot >= engine.config.n_slots:
        raise BadRequest(f"'id_slot' {options.id_slot} does not exist (slots: {engine.config.n_slots})")
    try:
        return engine.submit(Request(prompt_tokens=tokens, options=options, sampling=params))
    except QueueFull:
        raise ApiError("the server is busy: the request queue is full", "unavailable_error", 503,
                       headers={"Retry-After": "1"}) from None


def call_engine(engine, fn, timeout: float = 30.0):
    """Run fn(engine) on the engine thread between decodes and return its result (or raise
    its exception); 503 if the engine does not get to it within timeout seconds."""
    box = engine.call(fn)
    items = box.get(timeout)
    if not items:
        raise ApiError("the engine is not answering; try again later", "unavailable_error", 503,
                       headers={"Retry-After": "1"})
    kind, value = items[0]
    if kind == "error":
        raise value
    return value


def stream_events(engine, req: Request, watch_client: bool = False):
    """Yield lists of events as they come; abort the request if the consumer stops early
    (or, with watch_client, if the client closes its connection while we wait)."""
    done = False
    next_check = time.monotonic() + WAIT_SLICE
    try:
        while not done:
            events = req.mailbox.get(WAIT_SLICE)
            if watch_client and time.monotonic() >= next_check:
                next_check = time.monotonic() + WAIT_SLICE
                if client_gone():
                    return
            if not events:
                continue
            for ev in events:
                if isinstance(ev, FinalEvent):
                    done = True
            yield events
    finally:
        if not done:
            engine.abort(req.id)


@dataclass
class Collected:
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    probs: list = field(default_factory=list)
    final: FinalEvent | None = None


def collect(engine, req: Request) -> Collected:
    out = Collected()
    parts: list[str] = []
    for events in stream_events(engine, req, watch_client=True):
        for ev in events:
            if isinstance(ev, TokenEvent):
                parts.append(ev.text)
                out.tokens.append(ev.token)
                if ev.probs is not None:
                    out.probs.append((ev.token, ev.probs))
            else:
                parts.append(ev.text)
                out.final = ev
    out.text = "".join(parts)
    if out.final is None:
        # stream_events only ends without a final event when the client left: nobody reads
        # this answer, but the access log and metrics should say what happened (nginx's 499)
        raise ApiError("the client closed the connection", "invalid_request_error", CLIENT_CLOSED)
    raise_for_failure(out.final)
    return out


def raise_for_failure(final: FinalEvent | None) -> None:
    if final is None:
        raise ApiError("the request ended without a result", "server_error", 500)
    if final.status is Status.FAILED:
        if final.error_type == "exceed_context_size_error":
            raise ApiError(final.error or "the prompt does not fit the context", "exceed_context_size_error", 400)
        raise ApiError(final.error or "generation failed", final.error_type or "server_error")
    if final.status is Status.ABORTED and final.error:
        raise ApiError(final.error, "unavailable_error", 503)


def probs_seed_format(vocab, token: int, probs) -> dict:
    """The seed's completion_probabilities entry for one generated token."""
    return {
        "content": vocab.piece(token).decode("utf-8", "replace"),
        "probs": [{"tok_str": vocab.piece(t).decode("utf-8", "replace"), "prob": p} for t, p in probs],
    }
