"""Mistral: calls after the ``[TOOL_CALLS]`` control token, in two generations of syntax.

- Mistral Nemo (``mistral-nemo``): one ``[TOOL_CALLS]`` and a JSON array of calls, each with
  the model's own 9-character alphanumeric ``id``::

      [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1b2c3d4e"}]

- Ministral 3, Magistral, Devstral (``ministral``): one ``[TOOL_CALLS]`` per call, the
  name, then the arguments after ``[ARGS]``; reasoning in ``[THINK]...[/THINK]``::

      [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}

- Mistral Small 3.2 (``mistral-small``): the same with the call's id after ``[CALL_ID]``::

      [TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}

The markers are control tokens (the parser needs their text). The templates refuse call ids
that are not 9 alphanumeric characters, so ids the model wrote are kept; the grammars make
the model write them.
"""
from __future__ import annotations

import re

from .base import ParseOptions, Probe, ToolCall
from .grammar import GrammarBuilder, lit
from .jsonscan import (COMPLETE, INVALID, PARTIAL, Block, CallBlockFormat, growing_call, is_json_object,
                       scan_call_object, scan_value, selected_tools, skip_ws)

__all__ = ["MistralNemoFormat", "MinistralFormat", "MistralSmallFormat", "FORMATS"]

TOOL_CALLS = "[TOOL_CALLS]"
ARGS = "[ARGS]"
CALL_ID = "[CALL_ID]"
_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
_ID = re.compile(r"[A-Za-z0-9]+")
_ID_GBNF = "[a-zA-Z0-9]{9}"


class MistralNemoFormat(CallBlockFormat):
    name = "mistral-nemo"
    reasoning_start = ""
    reasoning_end = ""
    arguments_as_object = True
    needs_special_tokens = True
    openers = (TOOL_CALLS,)

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        return TOOL_CALLS in probe.source and ARGS not in probe.source

    def block(self, text: str, i: int, eof: bool, opts: ParseOptions) -> Block:
        n = len(text)
        j = skip_ws(text, i + len(TOOL_CALLS))
        if j >= n:
            return Block(INVALID if eof else PARTIAL)
        bracket = text[j] == "["
        calls: list[ToolCall] = []
        j = skip_ws(text, j + 1) if bracket else j
        while True:
            obj = scan_call_object(text, j, eof) if j < n else None
            if obj is None or obj.status == PARTIAL:
                if eof:
                    return Block(INVALID)
                if obj is not None:
                    calls.extend(growing_call(obj))
                return Block(PARTIAL, calls=calls)
            if obj.status == INVALID:
                return Block(INVALID)
            calls.append(ToolCall(obj.name, obj.arguments, obj.id))
            j = skip_ws(text, obj.end)
            if not bracket:
                return Block(COMPLETE, j, calls)
            if j >= n:
                return Block(INVALID if eof else PARTIAL, calls=calls)
            if text[j] == "]":
                return Block(COMPLETE, j + 1, calls)
            if text[j] != ",":
                return Block(INVALID)
            j = skip_ws(text, j + 1)

    def tool_grammar(self, tools, choice, parallel, single_token):
        chosen = selected_tools(tools, choice)
        if not chosen:
            return None
        g = GrammarBuilder(single_token)
        calls = []
        for t in chosen:
            args = g.schema(t.parameters, f"{t.name}-args")
            calls.append(g.rule(g.fresh(f"{t.name}-call"),
                                f'"{{" ws {g.json_string("name")} ws ":" ws {g.json_string(t.name)} ws "," ws '
                                f'{g.json_string("arguments")} ws ":" ws {args} ws "," ws '
                                f'{g.json_string("id")} ws ":" ws "\\"" {_ID_GBNF} "\\"" ws "}}"'))
        return self.plan(g, calls, choice, parallel, sep='ws "," ws', words=[TOOL_CALLS],
                         prefix=f'{g.marker(TOOL_CALLS)} "[" ws', suffix='ws "]"')


class MinistralFormat(CallBlockFormat):
    name = "ministral"
    reasoning_start = "[THINK]"
    reasoning_end = "[/THINK]"
    arguments_as_object = True
    needs_special_tokens = True
    openers = (TOOL_CALLS,)
    with_call_id = False

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        src = probe.source
        return TOOL_CALLS in src and ARGS in src and (CALL_ID in src) == cls.with_call_id

    def block(self, text: str, i: int, eof: bool, opts: ParseOptions) -> Block:
        n = len(text)
        j = skip_ws(text, i + len(TOOL_CALLS))
        m = _NAME.match(text, j)
        if not m:
            return Block(INVALID if eof or j < n else PARTIAL)
        name, j, call_id = m.group(), m.end(), ""
        cut = Block(INVALID if eof else PARTIAL)        # the text ends before the arguments
        if j >= n:
            return cut
        if text.startswith(CALL_ID, j):
            m = _ID.match(text, j + len(CALL_ID))
            if j + len(CALL_ID) >= n or (m and m.end() >= n):
                return cut
            if not m:
                return Block(INVALID)
            call_id, j = m.group(), m.end()
        if not text.startswith(ARGS, j):
            maybe = ARGS.startswith(text[j:]) or (not call_id and CALL_ID.startswith(text[j:]))
            return cut if maybe else Block(INVALID)
        j = skip_ws(text, j + len(ARGS))
        if j >= n:
            return Block(INVALID if eof else PARTIAL)
        if text[j] != "{":
            return Block(INVALID)
        status, end = scan_value(text, j, eof)
        if status == INVALID:
            return Block(INVALID)
        if status == PARTIAL:
            return Block(PARTIAL, calls=[ToolCall(name, text[j:], call_id)])
        if not is_json_object(text[j:end]):
            return Block(INVALID)
        return Block(COMPLETE, end, [ToolCall(name, text[j:end], call_id)])

    def tool_grammar(self, tools, choice, parallel, single_token):
        chosen = selected_tools(tools, choice)
        if not chosen:
            return None
        g = GrammarBuilder(single_token)
        call_id = f'{g.marker(CALL_ID)} {_ID_GBNF} ' if self.with_call_id else ""
        calls = [g.rule(g.fresh(f"{t.name}-call"),
                        f'{g.marker(TOOL_CALLS)} {lit(t.name)} {call_id}{g.marker(ARGS)} '
                        f'{g.schema(t.parameters, f"{t.name}-args")}') for t in chosen]
        return self.plan(g, calls, choice, parallel, sep="", words=[TOOL_CALLS])


class MistralSmallFormat(MinistralFormat):
    name = "mistral-small"
    reasoning_start = ""
    reasoning_end = ""
    with_call_id = True


FORMATS = [MistralSmallFormat, MinistralFormat, MistralNemoFormat]
