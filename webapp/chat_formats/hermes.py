"""Hermes 2 Pro / 3, Qwen 2.5, Qwen 3 and QwQ: calls as JSON inside ``<tool_call>`` tags.

The model writes each call as::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

several blocks in a row for parallel calls, text before them being content. Qwen 3 and QwQ
think first, in ``<think>...</think>`` (QwQ's prompt opens the block itself).

Parsing, in every format of this package:

- ``arguments`` is the arguments object exactly as the model wrote it; a block whose JSON
  does not parse, whose arguments are not an object, or that calls a function the request
  did not give, is not a call: its text stays content.
- A missing closing tag at the very end of the output is tolerated (generation may stop on
  an end-of-turn token right after the JSON).
- Tool calls inside reasoning: inside a reasoning block that closes, everything is
  reasoning. If the block never closes and a complete, well-formed call to one of the
  request's tools appears in it, the reasoning ends there and the call is a call (this is
  what happens when a lazy tool grammar fires inside the reasoning: the call ends the
  output). While streaming, reasoning stops at such a call until the output ends.
"""
from __future__ import annotations

import re

from .base import ParseOptions, Probe, ToolCall
from .grammar import GrammarBuilder
from .jsonscan import (COMPLETE, INVALID, PARTIAL, Block, CallBlockFormat, growing_call, scan_call_object,
                       selected_tools, skip_ws)

__all__ = ["HermesFormat", "FORMATS", "json_block"]

_RENDERED_CALL = re.compile(r'<tool_call>\s*\{"name": "probe_weather", "arguments": ')


def json_block(text: str, i: int, eof: bool, opener: str, closer: str,
               args_keys=("arguments",)) -> Block:
    """``opener {"name": ..., "arguments": {...}} closer`` at ``i`` (whitespace allowed
    around the object; the closer may be missing at the end of a final text)."""
    n = len(text)
    j = skip_ws(text, i + len(opener))
    if j >= n:
        return Block(INVALID if eof else PARTIAL)
    obj = scan_call_object(text, j, eof, args_keys=args_keys)
    if obj.status == INVALID:
        return Block(INVALID)
    if obj.status == PARTIAL:
        return Block(PARTIAL, calls=growing_call(obj))
    call = ToolCall(obj.name, obj.arguments, obj.id)
    k = skip_ws(text, obj.end)
    if text.startswith(closer, k):
        return Block(COMPLETE, k + len(closer), [call])
    if k >= n:
        return Block(COMPLETE, n, [call]) if eof else Block(PARTIAL, calls=[call])
    if not eof and closer.startswith(text[k:]):
        return Block(PARTIAL, calls=[call])
    return Block(INVALID)


class HermesFormat(CallBlockFormat):
    name = "hermes"
    reasoning_start = "<think>"
    reasoning_end = "</think>"
    arguments_as_object = True
    needs_special_tokens = True       # <tool_call> is an added (sometimes control) token
    openers = ("<tool_call>",)
    closer = "</tool_call>"

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        if probe.with_call:
            return bool(_RENDERED_CALL.search(probe.with_call))
        src = probe.source
        return ("<tool_call>" in src and '"arguments"' in src and "<function=" not in src
                and "<arg_key>" not in src and "<parameter" not in src)

    def block(self, text: str, i: int, eof: bool, opts: ParseOptions) -> Block:
        return json_block(text, i, eof, self.openers[0], self.closer)

    def tool_grammar(self, tools, choice, parallel, single_token):
        chosen = selected_tools(tools, choice)
        if not chosen:
            return None
        g = GrammarBuilder(single_token)
        open_, close = g.marker(self.openers[0]), g.marker(self.closer)
        calls = [g.rule(g.fresh(f"{t.name}-block"), f"{open_} ws {g.call_object(t)} ws {close}")
                 for t in chosen]
        return self.plan(g, calls, choice, parallel, words=[self.openers[0]])


FORMATS = [HermesFormat]
