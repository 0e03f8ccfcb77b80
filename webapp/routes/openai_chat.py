"""``POST /v1/chat/completions`` (and ``/chat/completions``): OpenAI chat over the chat template.

The messages are validated (``normalize_messages``), rendered with the template the server
chose at startup (``state.chat_template``), and tokenized with special tokens parsed. When
the last message is the assistant's, its text is a prefill: the reply continues it. Tool
definitions (``tools``) reach the template; replies are plain text (no tool-call parsing). With ``n`` > 1 the choices
generate together and a stream interleaves their chunks as they come.
"""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, stream_with_context

from llama_lib.engine import FinalEvent, TokenEvent

from ..chat_template import ChatTemplateError, normalize_messages
from ..completion import json_body, raise_for_failure
from ..errors import ApiError, BadRequest
from ..sse import sse_data, sse_done
from .openai import (Generation, check_known_fields, collect_choices, completion_id, finish_reason,
                     fingerprint, now, open_stream, parse_max_tokens, parse_n, response_model,
                     submit_choices, token_logprobs, top_logprobs_of, usage_of)

__all__ = ["make_blueprint", "chat_prompt_tokens", "response_format_schema", "stream_flags"]

KNOWN_FIELDS = frozenset({
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "stop",
    "n", "seed", "temperature", "top_p", "presence_penalty", "frequency_penalty", "logit_bias",
    "logprobs", "top_logprobs", "response_format", "user", "tools", "tool_choice",
    "parallel_tool_calls", "chat_template_kwargs",
})
# Template variables a request may not replace through chat_template_kwargs.
_RESERVED_VARS = frozenset({"messages", "add_generation_prompt", "tools", "bos_token", "eos_token"})

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("openai_chat", __name__)

    @bp.post("/v1/chat/completions")
    @bp.post("/chat/completions")
    def chat_completions():
        engine = state.ready_engine()
        body = json_body()
        check_known_fields(body, KNOWN_FIELDS, "chat/completions")
        tokens = chat_prompt_tokens(state, engine.vocab, body)
        stream, include_usage = stream_flags(body)
        logprobs = body.get("logprobs")
        if logprobs is not None and not isinstance(logprobs, bool):
            raise BadRequest("'logprobs' must be a boolean")
        top_n = top_logprobs_of(body)
        if body.get("top_logprobs") is not None and not logprobs:
            raise BadRequest("'top_logprobs' needs 'logprobs': true")
        gen = Generation(n=parse_n(body, engine),
                         n_predict=parse_max_tokens(body, "max_completion_tokens", "max_tokens"),
                         logprobs=bool(logprobs), stream=stream,
                         json_schema=response_format_schema(body))
        requests = submit_choices(state, engine, body, [tokens], gen)
        meta = {"id": completion_id("chatcmpl"), "created": now(), "model": response_model(body, state),
                "system_fingerprint": fingerprint()}
        if not stream:
            return jsonify(_response(engine.vocab, meta, collect_choices(engine, requests), gen, top_n))
        events = open_stream(engine, requests)
        return Response(stream_with_context(_stream(engine.vocab, meta, events, gen, top_n, include_usage)),
                        mimetype="text/event-stream", headers=SSE_HEADERS)

    return bp


def stream_flags(body: dict) -> tuple[bool, bool]:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object")
    include_usage = (options or {}).get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise BadRequest("'stream_options.include_usage' must be a boolean")
    return bool(stream), bool(include_usage)


def chat_prompt_tokens(state, vocab, body: dict) -> list[int]:
    template = state.chat_template
    try:
        messages = normalize_messages(body.get("messages"))
    except ChatTemplateError as exc:
        raise BadRequest(str(exc)) from None
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("'tools' must be an array")
    extra = body.get("chat_template_kwargs") or {}
    if not isinstance(extra, dict):
        raise BadRequest("'chat_template_kwargs' must be an object")
    bad = sorted(k for k in extra if not k.isidentifier() or k in _RESERVED_VARS)
    if bad:
        raise BadRequest(f"'chat_template_kwargs' may not set {', '.join(bad)}")
    prefill = ""
    if messages[-1]["role"] == "assistant":
        prefill = messages.pop()["content"]
    try:
        text = template.render(messages, add_generation_prompt=True, tools=tools, **extra) + prefill
    except ChatTemplateError as exc:
        raise BadRequest(str(exc)) from None
    # The template may write BOS itself; then the tokenizer must not add another.
    has_bos = bool(template.bos_token) and text.startswith(template.bos_token)
    return vocab.tokenize(text, add_special=not has_bos, parse_special=True)


def response_format_schema(body: dict):
    """The JSON Schema that ``response_format`` asks for, or None for free text."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise BadRequest("'response_format' must be an object")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = fmt.get("schema", {"type": "object"})
    elif kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise BadRequest("'response_format.json_schema' must be an object with a 'schema'")
        schema = spec.get("schema", {})
    else:
        raise BadRequest("'response_format.type' must be 'text', 'json_object' or 'json_schema'")
    if not isinstance(schema, (dict, bool)):
        raise BadRequest("the schema in 'response_format' must be a JSON Schema object")
    return schema


def _logprobs(vocab, token_events, top_n: int) -> dict:
    return {"content": [token_logprobs(vocab, ev.token, ev.probs, top_n) for ev in token_events]}


def _response(vocab, meta: dict, choices: list[dict], gen: Generation, top_n: int) -> dict:
    finals = [c["final"] for c in choices]
    return {
        "id": meta["id"], "object": "chat.completion", "created": meta["created"],
        "model": meta["model"], "system_fingerprint": meta["system_fingerprint"],
        "choices": [{
            "index": i,
            "message": {"role": "assistant", "content": c["text"]},
            "logprobs": _logprobs(vocab, c["tokens"], top_n) if gen.logprobs else None,
            "finish_reason": finish_reason(c["final"]),
        } for i, c in enumerate(choices)],
        "usage": usage_of(finals, gen.n),
        "timings": finals[0].timings,
    }


def _stream(vocab, meta: dict, events, gen: Generation, top_n: int, include_usage: bool):
    def chunk(choices: list, **extra) -> bytes:
        return sse_data({"id": meta["id"], "object": "chat.completion.chunk", "created": meta["created"],
                         "model": meta["model"], "system_fingerprint": meta["system_fingerprint"],
                         "choices": choices, **extra})

    def delta(i: int, content: str, token_events=()) -> bytes:
        lp = _logprobs(vocab, token_events, top_n) if gen.logprobs and token_events else None
        return chunk([{"index": i, "delta": {"content": content}, "logprobs": lp, "finish_reason": None}])

    finals: dict[int, FinalEvent | None] = {}    # choices arrive interleaved
    try:
        for i, batch in events:
            if i not in finals:
                finals[i] = None
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                              "logprobs": None, "finish_reason": None}])
            tokens = [ev for ev in batch if isinstance(ev, TokenEvent)]
            text = "".join(ev.text for ev in tokens)
            if text or (gen.logprobs and tokens):
                yield delta(i, text, tokens)
            final = next((ev for ev in batch if isinstance(ev, FinalEvent)), None)
            if final is None:
                continue
            try:
                raise_for_failure(final)
            except ApiError as exc:
                yield sse_data(exc.body())
                return
            if final.text:
                yield delta(i, final.text)
            finals[i] = final
            yield chunk([{"index": i, "delta": {}, "logprobs": None,
                          "finish_reason": finish_reason(final)}], timings=final.timings)
        if include_usage:
            yield chunk([], usage=usage_of([finals[i] for i in sorted(finals)], gen.n))
        yield sse_done()
    finally:
        events.close()
