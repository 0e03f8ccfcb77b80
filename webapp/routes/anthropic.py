"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic's Messages API.

A request is translated into an OpenAI chat completions body and run by :class:`ChatCall`
(the same template, chat format, tool grammars and reasoning split as
``/v1/chat/completions``); its answer is translated back. As llama-server does:

- ``system`` (a string or text blocks) becomes the first system message. Claude Code's
  ``x-anthropic-billing-header`` line carries a stamp (``cch=``) that changes on every
  request; it is blanked so that the prompt cache reaches past it.
- Content blocks: ``text``; ``image`` becomes an image part (webapp/media.py; a 400
  without --mmproj); on an assistant turn ``thinking`` becomes its reasoning
  (``redacted_thinking`` is dropped) and ``tool_use`` a tool call; on a user turn each
  ``tool_result`` becomes a tool message (before the turn's other blocks), and must answer a
  ``tool_use`` of an earlier assistant turn. Any other block type is a 400.
- ``tools`` (``input_schema`` -> ``parameters``; server tools, which have a ``type`` of
  their own, are left out with a warning), ``tool_choice`` (auto / any -> required / tool ->
  that function / none; ``disable_parallel_tool_use``), ``stop_sequences``, ``max_tokens``
  (4096 when absent), ``temperature``, ``top_p``, ``top_k``, ``thinking`` (enabled: the
  template's ``enable_thinking`` and ``budget_tokens`` as the reasoning budget; disabled:
  ``enable_thinking`` false), ``output_config`` (``effort`` -> ``reasoning_effort``;
  ``format`` json_schema constrains the text to JSON), ``chat_template_kwargs`` (llama.cpp's
  extension).
- The reply's content blocks come in the order thinking, text, tool_use; ``stop_reason`` is
  end_turn, max_tokens, stop_sequence (with ``stop_sequence``) or tool_use. ``usage``:
  ``input_tokens`` excludes the prompt tokens reused from the cache
  (``cache_read_input_tokens``).
- Streamed: ``message_start``, then one content block at a time (``content_block_start``,
  ``content_block_delta`` with ``thinking_delta`` / ``text_delta`` / ``input_json_delta``,
  a ``signature_delta`` closing a thinking block, ``content_block_stop``), then
  ``message_delta`` (stop reason, usage) and ``message_stop``; a failure after the first
  event ends the stream with an ``error`` event.

Every error on these routes, the API key check included, answers Anthropic's shape
(``errors.anthropic_error_body``).
"""
from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Iterator

from flask import Blueprint, Response, g, jsonify, stream_with_context
from werkzeug.exceptions import HTTPException

from ..completion import json_body
from ..errors import ApiError, BadRequest, anthropic_error_body, http_error
from ..sse import dumps
from .openai_chat import ChatCall, chat_setup

__all__ = ["make_blueprint", "chat_body", "message_of", "primed"]

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DEFAULT_MAX_TOKENS = 4096           # Anthropic requires max_tokens; llama-server's default
_PASSED = ("model", "stream", "temperature", "top_p", "top_k", "chat_template_kwargs")
_BILLING_STAMP = re.compile(r"^(x-anthropic-billing-header:[^\n]*?cch=)[^;\n]{5};")


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("anthropic", __name__)

    @bp.post("/v1/messages")
    def messages():
        body = json_body()
        call = ChatCall(state, chat_body(body))
        msg_id = "msg_" + uuid.uuid4().hex[:24]
        if not call.stream:
            return jsonify(message_of(call, call.response(), msg_id))
        chunks = primed(call.chunks())     # a request refused at once is an HTTP error
        events = _sse(_stream_events(call, chunks, msg_id), g.get("request_id", ""))
        return Response(stream_with_context(events), mimetype="text/event-stream",
                        headers=SSE_HEADERS)

    @bp.post("/v1/messages/count_tokens")
    def count_tokens():
        body = json_body()
        engine = state.ready_engine()
        setup = chat_setup(state, engine.vocab, chat_body(body))
        return jsonify({"input_tokens": len(setup.tokens)})

    @bp.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        response = jsonify(anthropic_error_body(exc, g.get("request_id", "")))
        response.status_code = exc.status
        response.headers.update(exc.headers)
        return response

    @bp.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return _api_error(http_error(exc))

    @bp.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error")
        return _api_error(ApiError(f"internal server error: {type(exc).__name__}", "server_error", 500))

    return bp


# --- the request ------------------------------------------------------------------------------

def chat_body(body: dict) -> dict:
    """The OpenAI chat completions request that an Anthropic Messages request asks for."""
    out = {key: body[key] for key in _PASSED if key in body}
    out["messages"] = _system(body.get("system")) + _messages(body.get("messages"))
    max_tokens = body.get("max_tokens")
    out["max_tokens"] = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    out["stream_options"] = {"include_usage": True}
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise BadRequest("'stop_sequences' must be an array of non-empty strings")
        out["stop"] = stops
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
    out.update(_tool_choice(body.get("tool_choice")))
    out.update(_thinking(body.get("thinking")))
    out.update(_output_config(body.get("output_config")))
    return out


def _system(system) -> list[dict]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": _unstamped(system)}]
    if not isinstance(system, list):
        raise BadRequest("'system' must be a string or an array of text blocks")
    parts = []
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" \
                or not isinstance(block.get("text"), str):
            raise BadRequest(f"system[{j}] must be a text block: {{\"type\": \"text\", \"text\": ...}}")
        parts.append({"type": "text", "text": _unstamped(block["text"])})
    return [{"role": "system", "content": parts}] if parts else []


def _unstamped(text: str) -> str:
    return _BILLING_STAMP.sub(r"\1fffff;", text, count=1)


def _messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array of {\"role\", \"content\"} objects")
    out: list[dict] = []
    tool_ids: set[str] = set()          # tool_use ids of the assistant turns so far
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"{where} must be an object with 'role' and 'content'")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise BadRequest(f"{where}.role must be 'user' or 'assistant', got {json.dumps(role)}")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif not isinstance(content, list):
            raise BadRequest(f"{where}.content must be a string or an array of content blocks")
        elif role == "assistant":
            out.append(_assistant_turn(content, where, tool_ids))
        else:
            out.extend(_user_turn(content, where, tool_ids))
    return out


def _block_type(block, where: str) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise BadRequest(f"{where} must be a content block: an object with a 'type'")
    return block["type"]


def _string(block: dict, key: str, where: str) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"{where}.{key} must be a string")
    return value


def _assistant_turn(blocks: list, where: str, tool_ids: set[str]) -> dict:
    parts, reasoning, calls = [], [], []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        kind = _block_type(block, at)
        if kind == "text":
            parts.append({"type": "text", "text": _string(block, "text", at)})
        elif kind == "thinking":
            reasoning.append(_string(block, "thinking", at))
        elif kind == "redacted_thinking":
            continue                    # encrypted by Anthropic: nothing a local model can read
        elif kind == "tool_use":
            call_id, name = _string(block, "id", at), _string(block, "name", at)
            args = block.get("input", {})
            if not isinstance(args, dict):
                raise BadRequest(f"{at}.input must be an object")
            tool_ids.add(call_id)
            calls.append({"id": call_id, "type": "function",
                          "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}})
        else:
            raise BadRequest(f"{at}.type {kind!r} is not supported in an assistant turn "
                             "(text, thinking, redacted_thinking or tool_use)")
    out: dict = {"role": "assistant", "content": parts or ""}
    if calls:
        out["tool_calls"] = calls
    if reasoning:
        out["reasoning_content"] = "".join(reasoning)
    return out


def _user_turn(blocks: list, where: str, tool_ids: set[str]) -> list[dict]:
    """Tool messages for the turn's tool_result blocks, then a user message with the rest
    (the order Anthropic requires, and the one templates expect after tool calls)."""
    results, parts = [], []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        kind = _block_type(block, at)
        if kind == "tool_result":
            call_id = _string(block, "tool_use_id", at)
            if call_id not in tool_ids:
                raise BadRequest(f"{at}.tool_use_id {call_id!r} does not answer any tool_use block "
                                 "of an earlier assistant turn")
            results.append({"role": "tool", "tool_call_id": call_id,
                            "content": _tool_result_content(block, at)})
        elif kind in ("text", "image"):
            parts.append(_user_part(block, kind, at))
        else:
            raise BadRequest(f"{at}.type {kind!r} is not supported in a user turn "
                             "(text, image or tool_result)")
    if parts or not results:
        results.append({"role": "user", "content": parts})
    return results


def _user_part(block: dict, kind: str, at: str) -> dict:
    if kind == "text":
        return {"type": "text", "text": _string(block, "text", at)}
    source = block.get("source")
    source_type = source.get("type") if isinstance(source, dict) else None
    if source_type == "base64":
        media = source.get("media_type", "image/jpeg")
        data = _string(source, "data", f"{at}.source")
        if not isinstance(media, str):
            raise BadRequest(f"{at}.source.media_type must be a string")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if source_type == "url":
        return {"type": "image_url", "image_url": {"url": _string(source, "url", f"{at}.source")}}
    raise BadRequest(f"{at}.source must be {{\"type\": \"base64\", \"media_type\", \"data\"}} "
                     "or {\"type\": \"url\", \"url\"}")


def _tool_result_content(block: dict, at: str):
    content = block.get("content", "")
    if isinstance(content, str):
        parts = [{"type": "text", "text": content}] if content else []
    elif isinstance(content, list):
        parts = []
        for k, part in enumerate(content):
            kind = _block_type(part, f"{at}.content[{k}]")
            if kind not in ("text", "image"):
                raise BadRequest(f"{at}.content[{k}].type {kind!r} is not supported in a "
                                 "tool_result (text or image)")
            parts.append(_user_part(part, kind, f"{at}.content[{k}]"))
    else:
        raise BadRequest(f"{at}.content must be a string or an array of text blocks")
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool):
        raise BadRequest(f"{at}.is_error must be a boolean")
    if is_error:
        parts.insert(0, {"type": "text", "text": "Error:"})
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _tools(tools) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools[{i}] must be an object with 'name' and 'input_schema'")
        kind = tool.get("type", "custom")
        if kind != "custom":            # Anthropic's server tools (web search...): not ours to run
            logger.warning("tools[%d]: server tool type %r left out", i, kind)
            continue
        name = tool.get("name")
        if not isinstance(name, str):
            raise BadRequest(f"tools[{i}].name must be a string")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise BadRequest(f"tools[{i}].input_schema must be a JSON Schema object")
        description = tool.get("description", "")
        if not isinstance(description, str):
            raise BadRequest(f"tools[{i}].description must be a string")
        out.append({"type": "function",
                    "function": {"name": name, "description": description, "parameters": schema}})
    return out


def _tool_choice(choice) -> dict:
    if choice is None:
        return {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise BadRequest("'tool_choice' must be {\"type\": \"auto\"}, {\"type\": \"any\"}, "
                         "{\"type\": \"tool\", \"name\": ...} or {\"type\": \"none\"}")
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            raise BadRequest("'tool_choice.name' must be the name of one of the tools")
        out: dict = {"tool_choice": {"type": "function", "function": {"name": name}}}
    else:
        out = {"tool_choice": {"auto": "auto", "any": "required", "none": "none"}[kind]}
    no_parallel = choice.get("disable_parallel_tool_use", False)
    if not isinstance(no_parallel, bool):
        raise BadRequest("'tool_choice.disable_parallel_tool_use' must be a boolean")
    if no_parallel:
        out["parallel_tool_calls"] = False
    return out


def _thinking(thinking) -> dict:
    if thinking is None:
        return {}
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return {"enable_thinking": False}
    if kind == "adaptive":
        return {"enable_thinking": True}
    if kind != "enabled":
        raise BadRequest("'thinking' must be {\"type\": \"enabled\", \"budget_tokens\": N}, "
                         "{\"type\": \"adaptive\"} or {\"type\": \"disabled\"}")
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise BadRequest("'thinking.budget_tokens' must be an integer >= 0")
    return {"enable_thinking": True, "reasoning_budget_tokens": budget}


def _output_config(config) -> dict:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise BadRequest("'output_config' must be an object")
    out = {}
    if config.get("effort") is not None:
        out["reasoning_effort"] = config["effort"]
    fmt = config.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" \
                or not isinstance(fmt.get("schema"), dict):
            raise BadRequest("'output_config.format' must be {\"type\": \"json_schema\", \"schema\": {...}}")
        out["response_format"] = {"type": "json_schema", "json_schema": {"schema": fmt["schema"]}}
    return out


# --- the answer -------------------------------------------------------------------------------

def _tool_input(arguments: str) -> dict:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {}


def _stop(call, finish: str | None) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of the finished reply."""
    if finish == "tool_calls":
        return "tool_use", None
    if finish == "length":
        return "max_tokens", None
    if not call.body.get("stop"):
        return "end_turn", None
    word = call.finals[0].stopping_word       # which stop sequence matched, if one did
    return ("stop_sequence", word) if word else ("end_turn", None)


def _usage(usage: dict) -> dict:
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return {"input_tokens": usage["prompt_tokens"] - cached, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached, "output_tokens": usage["completion_tokens"]}


def message_of(call, completion: dict, msg_id: str) -> dict:
    """The Anthropic message for ChatCall's ``chat.completion``."""
    choice = completion["choices"][0]
    msg = choice["message"]
    content: list[dict] = []
    if msg.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": msg["reasoning_content"], "signature": ""})
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    for tc in msg.get("tool_calls") or ():
        fn = tc["function"]
        content.append({"type": "tool_use", "id": tc["id"], "name": fn["name"],
                        "input": _tool_input(fn["arguments"])})
    stop_reason, stop_sequence = _stop(call, choice["finish_reason"])
    return {"id": msg_id, "type": "message", "role": "assistant", "model": completion["model"],
            "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "usage": _usage(completion["usage"])}


def primed(chunks: Iterator[dict]) -> Iterator[dict]:
    """Start the stream now (the first chunk submits the request), so that a request refused
    at once is answered with an HTTP error instead of a stream."""
    first = next(chunks, None)

    def rest():
        try:
            if first is not None:
                yield first
                yield from chunks
        finally:
            chunks.close()
    return rest()


def _sse(events: Iterator[tuple[str, dict]], request_id: str) -> Iterator[bytes]:
    try:
        for name, data in events:
            yield f"event: {name}\ndata: {dumps(data)}\n\n".encode("utf-8")
    except ApiError as exc:
        yield f"event: error\ndata: {dumps(anthropic_error_body(exc, request_id))}\n\n".encode("utf-8")


class _Blocks:
    """The stream's content blocks, one open at a time, numbered in order."""

    def __init__(self):
        self.index = -1
        self.kind: str | None = None            # the open block's type
        self.calls: dict[int, int] = {}         # tool call index -> block index

    def open(self, block: dict) -> Iterator[tuple[str, dict]]:
        yield from self.close()
        self.index += 1
        self.kind = block["type"]
        yield "content_block_start", {"type": "content_block_start", "index": self.index,
                                      "content_block": block}

    def delta(self, delta: dict, index: int | None = None) -> tuple[str, dict]:
        return "content_block_delta", {"type": "content_block_delta",
                                       "index": self.index if index is None else index, "delta": delta}

    def close(self) -> Iterator[tuple[str, dict]]:
        if self.kind is None:
            return
        if self.kind == "thinking":     # Anthropic's clients expect a signature; a local model has none
            yield self.delta({"type": "signature_delta", "signature": ""})
        yield "content_block_stop", {"type": "content_block_stop", "index": self.index}
        self.kind = None


def _stream_events(call, chunks: Iterator[dict], msg_id: str) -> Iterator[tuple[str, dict]]:
    model = call.meta["model"]
    yield "message_start", {"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": len(call.setup.tokens), "output_tokens": 0}}}
    blocks = _Blocks()
    finish, usage = None, None
    for chunk in chunks:
        if not chunk["choices"]:
            usage = chunk.get("usage")
            continue
        choice = chunk["choices"][0]
        delta = choice.get("delta") or {}
        if delta.get("reasoning_content"):
            if blocks.kind != "thinking":
                yield from blocks.open({"type": "thinking", "thinking": "", "signature": ""})
            yield blocks.delta({"type": "thinking_delta", "thinking": delta["reasoning_content"]})
        if delta.get("content"):
            if blocks.kind != "text":
                yield from blocks.open({"type": "text", "text": ""})
            yield blocks.delta({"type": "text_delta", "text": delta["content"]})
        for tc in delta.get("tool_calls") or ():
            if "id" in tc:
                yield from blocks.open({"type": "tool_use", "id": tc["id"],
                                        "name": tc["function"]["name"], "input": {}})
                blocks.calls[tc["index"]] = blocks.index
            fragment = tc.get("function", {}).get("arguments")
            if fragment:
                yield blocks.delta({"type": "input_json_delta", "partial_json": fragment},
                                   blocks.calls[tc["index"]])
        if choice.get("finish_reason"):
            finish = choice["finish_reason"]
            yield from blocks.close()
    stop_reason, stop_sequence = _stop(call, finish)
    out_usage = _usage(usage) if usage else {"output_tokens": 0}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                            "usage": out_usage}
    yield "message_stop", {"type": "message_stop"}
