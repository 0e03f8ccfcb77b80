"""Llama 3.1 / 3.2 / 3.3: a call is a bare JSON object, or follows ``<|python_tag|>``.

The templates ask for ``{"name": function name, "parameters": {...}}`` and render past calls
that way, alone in the assistant turn. Also read: ``{"type": "function", "name": ...,
"parameters": ...}`` and ``"arguments"`` for ``"parameters"``; several objects separated by
whitespace or ``;`` (parallel calls); and, after ``<|python_tag|>`` (a control token: the
parser needs its text), the same JSON, a built-in tool call ``brave_search.call(query="...")``
(keyword arguments of Python literals; the JSON arguments are built from them), or plain
Python code, which becomes a call to the request's ``python`` (or ``code_interpreter``) tool
with ``{"code": "..."}``.

A JSON call counts only where it starts a line (or the output, or follows another call), so
that JSON quoted inside an answer is not taken for a call; its first key must be "name" or
"type". "auto" mode triggers the grammar on such a ``{"name"`` and on ``<|python_tag|>``.
"""
from __future__ import annotations

import ast
import json
import re

from .base import ParseOptions, Probe, ToolCall
from .grammar import GrammarBuilder
from .jsonscan import (COMPLETE, INVALID, PARTIAL, Block, CallBlockFormat, code_call, growing_call,
                       scan_call_object, selected_tools, skip_ws)

__all__ = ["Llama3Format", "FORMATS", "python_tool_name", "builtin_call"]

TAG = "<|python_tag|>"
_LINE_JSON = re.compile(r"(?<![^\n])[ \t]*\{")
_SEPARATORS = re.compile(r"[\s;]*")
_BUILTIN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\.call\(")
_BUILTIN_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.(?:c(?:a(?:l(?:l)?)?)?)?)?\Z")
_RENDERED_CALL = re.compile(r'\{"name": "probe_weather", "parameters": \{')
_WS = r'(?: |\n[ \t]{0,20})?'
# where the grammar starts in "auto" mode: a {"name" or {"type" at the start of a line
TRIGGER = r'(?:^\s*|\n[ \t]*)(\{' + _WS + r'"(?:name|type)")'


def python_tool_name(opts: ParseOptions) -> str | None:
    """The request's tool that runs code written after ``<|python_tag|>``."""
    if not opts.tool_names:
        return "python"
    return next((n for n in ("python", "code_interpreter") if n in opts.tool_names), None)


def builtin_call(name: str, inner: str) -> ToolCall | None:
    """``name.call(k=v, ...)``'s arguments (``inner``) as a JSON call, or None."""
    try:
        node = ast.parse(f"f({inner})", mode="eval").body
    except (SyntaxError, ValueError):
        return None
    if not isinstance(node, ast.Call) or node.args or any(k.arg is None for k in node.keywords):
        return None
    try:
        args = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        return ToolCall(name, json.dumps(args, ensure_ascii=False))
    except (ValueError, TypeError, SyntaxError):
        return None


def tagged_code(text: str, j: int, eof: bool, opts: ParseOptions) -> Block:
    """What follows ``<|python_tag|>`` when it is not JSON: ``name.call(...)`` or code."""
    rest = text[j:]
    m = _BUILTIN.match(text, j)
    if m:
        if not eof:
            return Block(PARTIAL)           # shows once complete: its JSON is built at the end
        inner = rest.rstrip()
        call = builtin_call(m.group(1), inner[m.end() - j:-1]) if inner.endswith(")") else None
        if call is not None:
            return Block(COMPLETE, len(text), [call])
    elif not eof and _BUILTIN_PREFIX.match(rest):
        return Block(PARTIAL)           # may still become name.call(
    name = python_tool_name(opts)
    if name is None or not rest.strip():
        return Block(INVALID)
    if not eof:
        return Block(PARTIAL, calls=[code_call(name, rest, False)])
    return Block(COMPLETE, len(text), [code_call(name, rest, True)])


class Llama3Format(CallBlockFormat):
    name = "llama3"
    reasoning_start = ""
    reasoning_end = ""
    arguments_as_object = True
    needs_special_tokens = True
    openers = (TAG,)

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        if probe.with_call:
            return "<|start_header_id|>" in probe.with_call and bool(_RENDERED_CALL.search(probe.with_call))
        src = probe.source
        return "<|start_header_id|>" in src and '"parameters": ' in src and "<|python_tag|>" in src \
            and "<function=" not in src

    def find(self, text: str, start: int) -> int:
        found = [text.find(TAG, start)]
        m = _LINE_JSON.search(text, start)
        if m:
            found.append(m.end() - 1)
        if text.startswith("{", start) and start > 0:
            found.append(start)             # right after a call
        found = [i for i in found if i >= 0]
        return min(found) if found else -1

    def block(self, text: str, i: int, eof: bool, opts: ParseOptions) -> Block:
        j = i
        if text.startswith(TAG, i):
            j = skip_ws(text, i + len(TAG))
            if j >= len(text):
                return Block(INVALID if eof else PARTIAL)
            if text[j] != "{":
                return tagged_code(text, j, eof, opts)
        obj = scan_call_object(text, j, eof, args_keys=("parameters", "arguments"), first_keys=("name", "type"))
        if obj.status == INVALID:
            return Block(INVALID)
        if obj.status == PARTIAL:
            return Block(PARTIAL, calls=growing_call(obj))
        return Block(COMPLETE, _SEPARATORS.match(text, obj.end).end(), [ToolCall(obj.name, obj.arguments)])

    def tool_grammar(self, tools, choice, parallel, single_token):
        chosen = selected_tools(tools, choice)
        if not chosen:
            return None
        g = GrammarBuilder(single_token)
        g.rule("type-function", f'{g.json_string("type")} ws ":" ws {g.json_string("function")} ws "," ws')
        calls = []
        for t in chosen:
            args = g.schema(t.parameters, f"{t.name}-args")
            calls.append(g.rule(g.fresh(f"{t.name}-call"),
                                f'"{{" ws type-function? {g.json_string("name")} ws ":" ws {g.json_string(t.name)} '
                                f'ws "," ws {g.json_string("parameters")} ws ":" ws {args} ws "}}"'))
        return self.plan(g, calls, choice, parallel, words=[TAG], patterns=[TRIGGER],
                         prefix=f"{g.marker(TAG)}?")


FORMATS = [Llama3Format]
