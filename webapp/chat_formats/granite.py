"""IBM Granite tool calls.

Granite 3.x writes one list of calls after a control token, and when asked to think
(template kwarg ``thinking``) brackets its reasoning and its answer::

    <think>...</think><response>...</response>
    <|tool_call|>[{"name": "NAME", "arguments": {...}}, ...]

Granite 4.0 and 4.1 write Hermes-style blocks and do not reason::

    <tool_call>
    {"name": "NAME", "arguments": {...}}
    </tool_call>
"""
from __future__ import annotations

from .base import ChatMessage, ParseOptions, Probe, ToolCall, held_back_prefix, split_reasoning
from .deepseek import cut_at
from .grammar import GrammarBuilder
from .hermes import HermesFormat
from .jsonscan import (COMPLETE, INVALID, PARTIAL, Block, CallBlockFormat, growing_call, scan_call_object,
                       selected_tools, skip_ws)

__all__ = ["GraniteFormat", "Granite4Format", "FORMATS", "call_array_block", "WrappedAnswer"]

ROLE = "<|start_of_role|>"
END_OF_TEXT = "<|end_of_text|>"
TOOL_CALL = "<|tool_call|>"


def call_array_block(text: str, i: int, eof: bool, opener: str, closer: str = "",
                     name_keys=("name",), args_keys=("arguments",)) -> Block:
    """``opener [{"name": ..., "arguments": {...}}, ...] closer`` at ``i`` (no ``closer``:
    the block ends with the list; a missing closer is tolerated). A call's ``"id"`` is kept."""
    n = len(text)
    j = skip_ws(text, i + len(opener))
    if j >= n:
        return Block(INVALID if eof else PARTIAL)
    if text[j] != "[":
        return Block(INVALID)
    j += 1
    calls: list[ToolCall] = []
    while True:
        j = skip_ws(text, j)
        if j >= n:
            return Block(INVALID if eof else PARTIAL, calls=calls)
        if text[j] == "]" and calls:
            j += 1
            if not closer:
                return Block(COMPLETE, j, calls)
            k = skip_ws(text, j)
            got = text[k:k + len(closer)]
            if got == closer:
                return Block(COMPLETE, k + len(closer), calls)
            if not eof and closer.startswith(got):
                return Block(PARTIAL, calls=calls)
            return Block(COMPLETE, j, calls)                 # closer left out
        if calls:
            if text[j] != ",":
                return Block(INVALID)
            j = skip_ws(text, j + 1)
            if j >= n:
                return Block(INVALID if eof else PARTIAL, calls=calls)
        obj = scan_call_object(text, j, eof, name_keys=name_keys, args_keys=args_keys)
        if obj.status == INVALID:
            return Block(INVALID)
        if obj.status == PARTIAL:
            return Block(PARTIAL, calls=calls + growing_call(obj))
        calls.append(ToolCall(obj.name, obj.arguments, obj.id))
        j = obj.end


class WrappedAnswer(CallBlockFormat):
    """A format that brackets its answer (``wrappers``: the brackets, dropped from the
    content, which is then stripped) and writes ``end_of_turn`` as text."""
    wrappers: tuple[str, ...] = ()
    end_of_turn = ""

    def hold(self, tail: str) -> int:
        return held_back_prefix(tail, self.openers + self.wrappers)

    def parse(self, text: str, partial: bool, opts: ParseOptions) -> ChatMessage:
        if self.end_of_turn:
            text = cut_at(text, self.end_of_turn, partial)
        if opts.parse_tool_calls:
            msg = super().parse(text, partial, opts)
        else:
            reasoning, rest = split_reasoning(text, partial, opts, self.reasoning_start, self.reasoning_end)
            if partial:
                rest = rest[:len(rest) - held_back_prefix(rest, self.wrappers)]
            msg = ChatMessage(rest, reasoning)
        for w in self.wrappers:
            msg.content = msg.content.replace(w, "")
        msg.content = msg.content.strip()
        return msg


class GraniteFormat(WrappedAnswer):
    """Granite 3.x (3.3's template; 3.2 writes the same calls)."""
    name = "granite"
    arguments_as_object = True
    needs_special_tokens = True
    openers = (TOOL_CALL,)
    wrappers = ("<response>", "</response>")
    end_of_turn = END_OF_TEXT

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        return ROLE in probe.source and TOOL_CALL in probe.source

    def block(self, text: str, i: int, eof: bool, opts: ParseOptions) -> Block:
        return call_array_block(text, i, eof, TOOL_CALL)

    def tool_grammar(self, tools, choice, parallel, single_token):
        chosen = selected_tools(tools, choice)
        if not chosen:
            return None
        g = GrammarBuilder(single_token)
        g.rule("call", " | ".join(g.call_object(t) for t in chosen))
        more = ' ( ws "," ws call )*' if parallel else ""
        g.rule("calls", f'{g.marker(TOOL_CALL)} "[" ws call{more} ws "]"')
        return self.finish_plan(g, "calls", choice, [TOOL_CALL])


class Granite4Format(HermesFormat):
    """Granite 4.0 and 4.1: Hermes's blocks, no reasoning."""
    name = "granite-4"
    reasoning_start = ""
    reasoning_end = ""

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        return ROLE in probe.source and super().detect(probe)

    def parse(self, text: str, partial: bool, opts: ParseOptions) -> ChatMessage:
        return super().parse(cut_at(text, END_OF_TEXT, partial), partial, opts)


FORMATS = [GraniteFormat, Granite4Format]
