"""``POST /v1/responses`` (and ``/responses``) and ``POST /v1/responses/input_tokens``:
OpenAI's Responses API, stateless.

A request is translated into an OpenAI chat completions body and run by :class:`ChatCall`
(the same template, chat format, tool grammars and reasoning split as
``/v1/chat/completions``); its answer is translated back. Nothing is stored: ``store`` is
accepted and the response says ``"store": false``; ``previous_response_id``,
``conversation`` and ``background`` are refused (400), so a client sends the whole
conversation in ``input`` each time, as the ``openai-agents`` SDK does without a server-side
conversation.

- ``instructions`` becomes the first system message; ``input`` is a string (one user
  message) or items: messages (``input_text`` / ``output_text`` / ``refusal`` parts;
  ``input_image`` becomes an image part (webapp/media.py; a 400 without
  --mmproj), ``function_call`` items, ``function_call_output`` items (a tool message; the
  ``call_id`` must belong to an earlier ``function_call``) and ``reasoning`` items. Assistant
  items in a row (reasoning, message, function calls) make one assistant message.
- ``tools`` of type function (others, the hosted tools, are left out with a warning, as in
  llama-server), ``tool_choice`` (auto / none / required / ``{"type": "function", "name"}``),
  ``parallel_tool_calls``, ``max_output_tokens``, ``temperature``, ``top_p``,
  ``reasoning.effort``, ``text.format`` (json_schema / json_object: the reply is constrained
  to JSON); llama.cpp's own fields (``n_predict``, ``seed``, ``min_p``, ``grammar``...) pass
  through, as in llama-server.
- The reply's ``output`` items: ``reasoning`` (its text as ``reasoning_text`` content),
  ``message`` (one ``output_text``), ``function_call`` items (``call_id``, ``arguments``).
  A reply cut by ``max_output_tokens`` (or the context) is ``status: "incomplete"`` with
  ``incomplete_details.reason`` ``max_output_tokens``, as OpenAI answers.
- Streamed: ``response.created``, ``response.in_progress``, then one output item at a time
  (``response.output_item.added``, its content part added, the ``*.delta`` events, the
  ``*.done`` events, ``response.output_item.done``), then ``response.completed`` (or
  ``response.incomplete``); every event has its ``sequence_number``. A failure after the
  first event sends ``error`` and ``response.failed``.

Errors answer the OpenAI error shape, as every other route.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Iterator

from flask import Blueprint, Response, jsonify, stream_with_context

from ..completion import json_body
from ..errors import ApiError, BadRequest
from ..sse import dumps
from .anthropic import primed
from .openai import NATIVE_FIELDS
from .openai_chat import ChatCall, chat_setup

__all__ = ["make_blueprint", "chat_body"]

logger = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_PASSED = ("model", "stream", "temperature", "top_p", "parallel_tool_calls", "chat_template_kwargs")
_STATEFUL = {"previous_response_id": "'previous_response_id' is not supported: this server keeps "
                                     "no responses; send the whole conversation in 'input'",
             "conversation": "'conversation' is not supported: this server keeps no "
                             "conversations; send the whole conversation in 'input'"}


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("responses", __name__)

    @bp.post("/v1/responses")
    @bp.post("/responses")
    def responses():
        body = json_body()
        call = ChatCall(state, chat_body(body))
        reply = _Reply(call, body)
        if not call.stream:
            return jsonify(reply.whole(call.response()))
        chunks = primed(call.chunks())     # a request refused at once is an HTTP error
        return Response(stream_with_context(_sse(reply, chunks)), mimetype="text/event-stream",
                        headers=SSE_HEADERS)

    @bp.post("/v1/responses/input_tokens")
    @bp.post("/responses/input_tokens")
    def input_tokens():
        body = json_body()
        engine = state.ready_engine()
        setup = chat_setup(state, engine.vocab, chat_body(body))
        return jsonify({"object": "response.input_tokens", "input_tokens": len(setup.tokens)})

    return bp


# --- the request ------------------------------------------------------------------------------

def chat_body(body: dict) -> dict:
    """The OpenAI chat completions request that a Responses request asks for."""
    for key, message in _STATEFUL.items():
        if body.get(key) is not None:
            raise BadRequest(message)
    if body.get("background"):
        raise BadRequest("'background' is not supported: this server answers while you wait")
    # llama.cpp's own fields (n_predict, seed, min_p, grammar...) pass through, as in llama-server
    out = {key: value for key, value in body.items() if key in _PASSED or key in NATIVE_FIELDS}
    messages = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise BadRequest("'instructions' must be a string")
        messages.append({"role": "system", "content": instructions})
    out["messages"] = messages + _input(body.get("input"))
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    out["stream_options"] = {"include_usage": True}
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _tool_choice(body["tool_choice"])
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise BadRequest("'reasoning' must be an object such as {\"effort\": \"low\"}")
        if reasoning.get("effort") is not None:
            out["reasoning_effort"] = reasoning["effort"]
    text = body.get("text")
    if text is not None:
        out.update(_text_format(text))
    return out


def _input(value) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise BadRequest("'input' must be a string or a non-empty array of input items")
    out: list[dict] = []
    call_ids: set[str] = set()          # call_id of the function_call items so far
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object (an input item)")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            _message_item(item, where, out)
        elif kind == "function_call":
            call_id, name = _string(item, "call_id", where), _string(item, "name", where)
            arguments = _string(item, "arguments", where)
            call_ids.add(call_id)
            _assistant(out).setdefault("tool_calls", []).append(
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        elif kind == "function_call_output":
            call_id = _string(item, "call_id", where)
            if call_id not in call_ids:
                raise BadRequest(f"{where}.call_id {call_id!r} does not answer any function_call "
                                 "item before it")
            out.append({"role": "tool", "tool_call_id": call_id, "content": _tool_output(item, where)})
        elif kind == "reasoning":
            text = _reasoning_text(item, where)
            if text:
                message = _assistant(out)
                message["reasoning_content"] = message.get("reasoning_content", "") + text
        else:
            raise BadRequest(f"{where}.type {json.dumps(kind)} is not supported (message, "
                             "function_call, function_call_output or reasoning)")
    return out


def _string(item: dict, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"{where}.{key} must be a string")
    return value


def _assistant(out: list[dict]) -> dict:
    """The assistant message that assistant items in a row add to."""
    if not out or out[-1]["role"] != "assistant":
        out.append({"role": "assistant", "content": ""})
    return out[-1]


def _message_item(item: dict, where: str, out: list[dict]) -> None:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        raise BadRequest(f"{where}.role must be 'user', 'system', 'developer' or 'assistant', "
                         f"got {json.dumps(role)}")
    content = item.get("content")
    if isinstance(content, str):
        parts = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        parts = [_part(part, role, f"{where}.content[{j}]") for j, part in enumerate(content)]
    else:
        raise BadRequest(f"{where}.content must be a string or an array of content parts")
    if role != "assistant":
        out.append({"role": role, "content": parts})
        return
    message = _assistant(out)
    texts = [message["content"]] if message["content"] else []
    message["content"] = "\n".join(texts + [p["text"] for p in parts])


def _part(part, role: str, where: str) -> dict:
    kind = part.get("type") if isinstance(part, dict) else None
    if role == "assistant":
        if kind in ("output_text", "input_text"):
            return {"type": "text", "text": _string(part, "text", where)}
        if kind == "refusal":
            return {"type": "text", "text": _string(part, "refusal", where)}
        raise BadRequest(f"{where}.type must be 'output_text' or 'refusal' in an assistant message")
    if kind == "input_text":
        return {"type": "text", "text": _string(part, "text", where)}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise BadRequest(f"{where}.image_url must be a URL or a data URL (file_id is not "
                             "supported: this server keeps no files)")
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "input_file":
        raise BadRequest(f"{where}: 'input_file' is not supported by this server")
    raise BadRequest(f"{where}.type must be 'input_text', 'input_image' or 'input_file'")


def _tool_output(item: dict, where: str):
    output = item.get("output")
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        raise BadRequest(f"{where}.output must be a string or an array of content parts")
    parts = [_part(part, "tool", f"{where}.output[{j}]") for j, part in enumerate(output)]
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _reasoning_text(item: dict, where: str) -> str:
    """The reasoning's own text (``content``), else its summary."""
    for key, part_type in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(key)
        if parts is None:
            continue
        if not isinstance(parts, list) or not all(
                isinstance(p, dict) and p.get("type") == part_type and isinstance(p.get("text"), str)
                for p in parts):
            raise BadRequest(f"{where}.{key} must be an array of {{\"type\": \"{part_type}\", "
                             "\"text\"}} parts")
        if parts:
            return "".join(p["text"] for p in parts)
    return ""


def _tools(tools) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools[{i}] must be an object")
        if tool.get("type") != "function":
            logger.warning("tools[%d]: tool type %r left out (only function tools run here)",
                           i, tool.get("type"))
            continue
        fn = {"name": tool.get("name")}
        for key in ("description", "parameters"):
            if tool.get(key) is not None:
                fn[key] = tool[key]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice):
    if isinstance(choice, str):
        return choice                   # auto | none | required, checked by the chat route
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise BadRequest("'tool_choice' must be 'auto', 'none', 'required' or "
                     "{\"type\": \"function\", \"name\": ...}")


def _text_format(text) -> dict:
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        if not isinstance(text, dict):
            raise BadRequest("'text' must be an object such as {\"format\": {\"type\": \"text\"}}")
        return {}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise BadRequest("'text.format.schema' must be a JSON Schema object")
        return {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}
    raise BadRequest("'text.format.type' must be 'text', 'json_object' or 'json_schema'")


# --- the answer -------------------------------------------------------------------------------

def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class _Reply:
    """The response object around the output items of one call."""

    def __init__(self, call, body: dict):
        self.call, self.body = call, body
        self.id = _item_id("resp")
        self.created = int(time.time())

    def response(self, status: str, output: list[dict], usage: dict | None = None,
                 error: dict | None = None) -> dict:
        body = self.body
        reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
        out = {
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "model": self.call.meta["model"], "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
            "previous_response_id": None,
            "reasoning": {"effort": reasoning.get("effort"), "summary": None},
            "store": False, "temperature": body.get("temperature"), "top_p": body.get("top_p"),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice") or "auto",
            "tools": [t for t in body.get("tools") or ()
                      if isinstance(t, dict) and t.get("type") == "function"],
            "truncation": "disabled", "metadata": body.get("metadata") or {}, "usage": usage,
        }
        if status != "in_progress":
            out["completed_at"] = int(time.time())
        return out

    def usage(self, usage: dict, reasoning: str) -> dict:
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        # The reasoning's share of the output, counted again from its text (markers aside).
        n_reasoning = len(self.call.vocab.tokenize(reasoning, add_special=False, parse_special=False)) \
            if reasoning else 0
        return {"input_tokens": usage["prompt_tokens"], "input_tokens_details": {"cached_tokens": cached},
                "output_tokens": usage["completion_tokens"],
                "output_tokens_details": {"reasoning_tokens": n_reasoning},
                "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}

    def whole(self, completion: dict) -> dict:
        """The response for ChatCall's ``chat.completion``."""
        choice = completion["choices"][0]
        msg = choice["message"]
        truncated = choice["finish_reason"] == "length"
        output = []
        if msg.get("reasoning_content"):
            output.append(reasoning_item(_item_id("rs"), msg["reasoning_content"]))
        if msg.get("content"):
            output.append(message_item(_item_id("msg"), msg["content"],
                                       "incomplete" if truncated else "completed"))
        for tc in msg.get("tool_calls") or ():
            output.append(function_call_item(_item_id("fc"), tc["id"], tc["function"]["name"],
                                             tc["function"]["arguments"]))
        usage = self.usage(completion["usage"], msg.get("reasoning_content") or "")
        return self.response("incomplete" if truncated else "completed", output, usage)


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict:
    return {"id": item_id, "type": "reasoning", "summary": [],
            "content": [{"type": "reasoning_text", "text": text}] if text else [], "status": status}


def output_text(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str, status: str = "completed") -> dict:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [output_text(text)] if text or status != "in_progress" else []}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str,
                       status: str = "completed") -> dict:
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


# --- streams ----------------------------------------------------------------------------------

class _Events:
    """Numbered ``response.*`` events and the output items, one open at a time."""

    def __init__(self, reply: _Reply):
        self.reply = reply
        self.seq = 0
        self.output: list[dict] = []            # finished items
        self.kind: str | None = None            # the open item's type
        self.item_id = ""
        self.text = ""                          # the open item's text (or arguments) so far
        self.call: tuple[str, str] = ("", "")   # the open function call's call_id and name
        self.reasoning = ""                     # all reasoning text, for usage

    def event(self, type_: str, **fields) -> tuple[str, dict]:
        data = {"type": type_, "sequence_number": self.seq, **fields}
        self.seq += 1
        return type_, data

    def _at(self) -> dict:
        return {"item_id": self.item_id, "output_index": len(self.output)}

    def open(self, kind: str, item: dict) -> Iterator[tuple[str, dict]]:
        yield from self.close("completed")
        self.kind, self.item_id, self.text = kind, item["id"], ""
        yield self.event("response.output_item.added", output_index=len(self.output), item=item)
        if kind == "message":
            yield self.event("response.content_part.added", **self._at(), content_index=0,
                             part=output_text(""))
        elif kind == "reasoning":
            yield self.event("response.content_part.added", **self._at(), content_index=0,
                             part={"type": "reasoning_text", "text": ""})

    def delta(self, text: str) -> tuple[str, dict]:
        self.text += text
        if self.kind == "message":
            return self.event("response.output_text.delta", **self._at(), content_index=0,
                              delta=text, logprobs=[])
        if self.kind == "reasoning":
            self.reasoning += text
            return self.event("response.reasoning_text.delta", **self._at(), content_index=0, delta=text)
        return self.event("response.function_call_arguments.delta", **self._at(), delta=text)

    def close(self, status: str) -> Iterator[tuple[str, dict]]:
        kind, at, text = self.kind, self._at(), self.text
        if kind is None:
            return
        if kind == "message":
            yield self.event("response.output_text.done", **at, content_index=0, text=text, logprobs=[])
            yield self.event("response.content_part.done", **at, content_index=0, part=output_text(text))
            item = message_item(self.item_id, text, status)
        elif kind == "reasoning":
            yield self.event("response.reasoning_text.done", **at, content_index=0, text=text)
            yield self.event("response.content_part.done", **at, content_index=0,
                             part={"type": "reasoning_text", "text": text})
            item = reasoning_item(self.item_id, text)
        else:
            call_id, name = self.call
            yield self.event("response.function_call_arguments.done", **at, name=name, arguments=text)
            item = function_call_item(self.item_id, call_id, name, text)
        yield self.event("response.output_item.done", output_index=at["output_index"], item=item)
        self.output.append(item)
        self.kind = None

    def run(self, chunks: Iterator[dict]) -> Iterator[tuple[str, dict]]:
        reply = self.reply
        yield self.event("response.created", response=reply.response("in_progress", []))
        yield self.event("response.in_progress", response=reply.response("in_progress", []))
        finish, usage = None, None
        for chunk in chunks:
            if not chunk["choices"]:
                usage = chunk.get("usage")
                continue
            choice = chunk["choices"][0]
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                if self.kind != "reasoning":
                    yield from self.open("reasoning", reasoning_item(_item_id("rs"), "", "in_progress"))
                yield self.delta(delta["reasoning_content"])
            if delta.get("content"):
                if self.kind != "message":
                    yield from self.open("message", message_item(_item_id("msg"), "", "in_progress"))
                yield self.delta(delta["content"])
            for tc in delta.get("tool_calls") or ():
                if "id" in tc:
                    name = tc["function"]["name"]
                    yield from self.open("function_call", function_call_item(
                        _item_id("fc"), tc["id"], name, "", "in_progress"))
                    self.call = (tc["id"], name)
                fragment = tc.get("function", {}).get("arguments")
                if fragment:
                    yield self.delta(fragment)
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
                yield from self.close("incomplete" if finish == "length" else "completed")
        status = "incomplete" if finish == "length" else "completed"
        usage = reply.usage(usage, self.reasoning) if usage else None
        yield self.event(f"response.{status}", response=reply.response(status, self.output, usage))

    def failed(self, exc: ApiError) -> Iterator[tuple[str, dict]]:
        yield self.event("error", code=exc.type, message=exc.message, param=None)
        error = {"code": "server_error" if exc.status >= 500 else "invalid_prompt", "message": exc.message}
        yield self.event("response.failed", response=self.reply.response("failed", self.output, error=error))


def _sse(reply: _Reply, chunks: Iterator[dict]) -> Iterator[bytes]:
    events = _Events(reply)

    def frame(name: str, data: dict) -> bytes:
        return f"event: {name}\ndata: {dumps(data)}\n\n".encode("utf-8")
    try:
        for name, data in events.run(chunks):
            yield frame(name, data)
    except ApiError as exc:
        for name, data in events.failed(exc):
            yield frame(name, data)
