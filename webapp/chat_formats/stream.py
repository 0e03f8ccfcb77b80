"""Streaming: re-parse the text generated so far and send only what changed.

The route keeps one :class:`MessageStream` per choice. Each ``push(text)`` parses the whole
text with ``partial=True``; ``finish(text)`` parses it as complete. Both return the OpenAI
``delta`` objects to send (possibly none): ``{"reasoning_content": ...}``, ``{"content": ...}``
and, for tool calls, first ``{"tool_calls": [{"index", "id", "type": "function",
"function": {"name", "arguments": ""}}]}`` then ``{"tool_calls": [{"index", "function":
{"arguments": fragment}}]}``. The concatenated deltas equal the final message, because a
partial parse is always a prefix of the final one (the formats' contract, checked here: a
parse that breaks it is not sent until it is consistent again).
"""
from __future__ import annotations

import secrets
import string
import uuid

from .base import ChatFormat, ChatMessage, ParseOptions, ToolCall, is_prefix_of

__all__ = ["MessageStream", "new_call_id", "finalize_ids"]


_ALNUM = string.ascii_letters + string.digits


def new_call_id(fmt: ChatFormat | None = None) -> str:
    """OpenAI-style ``call_<hex>``, or the 9 letters and digits Mistral's templates insist on."""
    if fmt is not None and fmt.name.startswith(("mistral", "ministral")):
        return "".join(secrets.choice(_ALNUM) for _ in range(9))
    return "call_" + uuid.uuid4().hex[:24]


def finalize_ids(msg: ChatMessage, ids: list[str] | None = None, fmt: ChatFormat | None = None) -> ChatMessage:
    """Give every call an id: the one already sent for it, the model's own, or a new one."""
    ids = ids or []
    for i, call in enumerate(msg.tool_calls):
        if i < len(ids):
            call.id = ids[i]
        elif not call.id:
            call.id = new_call_id(fmt)
    return msg


class MessageStream:
    def __init__(self, fmt: ChatFormat, opts: ParseOptions):
        self.fmt = fmt
        self.opts = opts
        self.sent = ChatMessage()       # what the deltas so far add up to
        self.ids: list[str] = []        # call ids, fixed when a call is first sent

    def push(self, text: str) -> list[dict]:
        return self._advance(self.fmt.parse(text, True, self.opts))

    def finish(self, text: str) -> tuple[list[dict], ChatMessage]:
        """The last deltas and the final message (ids as streamed)."""
        final = self.fmt.parse(text, False, self.opts)
        deltas = self._advance(final)
        if not is_prefix_of(self.sent, final):
            # Should not happen (a format broke the contract); the message still says it all.
            deltas.append({"content": ""})
        return deltas, finalize_ids(final, self.ids, self.fmt)

    def _advance(self, cur: ChatMessage) -> list[dict]:
        if not is_prefix_of(self.sent, cur):
            return []
        out: list[dict] = []
        sent = self.sent
        if len(cur.reasoning_content) > len(sent.reasoning_content):
            out.append({"reasoning_content": cur.reasoning_content[len(sent.reasoning_content):]})
            sent.reasoning_content = cur.reasoning_content
        if len(cur.content) > len(sent.content):
            out.append({"content": cur.content[len(sent.content):]})
            sent.content = cur.content
        for i, call in enumerate(cur.tool_calls):
            if i == len(sent.tool_calls):
                self.ids.append(call.id or new_call_id(self.fmt))
                # the model's own id (or ""): what later parses are compared with
                sent.tool_calls.append(ToolCall(call.name, "", call.id))
                out.append({"tool_calls": [{"index": i, "id": self.ids[i], "type": "function",
                                            "function": {"name": call.name, "arguments": ""}}]})
            done = sent.tool_calls[i].arguments
            if len(call.arguments) > len(done):
                out.append({"tool_calls": [{"index": i, "function": {"arguments": call.arguments[len(done):]}}]})
                sent.tool_calls[i].arguments = call.arguments
        return out
