"""Qwen3-Coder's XML tool calls, also written by Qwen3.5, Nemotron 3 Nano and StepFun 3.5::

    <tool_call>
    <function=NAME>
    <parameter=KEY>
    VALUE
    </parameter>
    ...
    </function>
    </tool_call>

A value is raw text. The function's JSON Schema (``ParseOptions.tool_schemas``) types it: a
string property keeps the text; a number, boolean, object or array property is parsed as
JSON (text that does not parse stays a string); with no type known, JSON is tried first. The
call's ``arguments`` is the JSON object built from the values (compact): while streaming it
grows one complete parameter at a time, and its closing ``}`` comes with ``</function>``.

Qwen3-Coder does not reason and now and then leaves out the opening ``<tool_call>``
(accepted before ``<function=`` as llama.cpp does); the others reason in ``<think>``, which
their generation prompt opens, and a ``<tool_call>`` may end the reasoning without
``</think>``.
"""
from __future__ import annotations

import json
from typing import Callable

from .base import ParseOptions, Probe, ToolCall, ToolSpec
from .grammar import GrammarBuilder, lit, text_without
from .jsonscan import COMPLETE, INVALID, PARTIAL, Block, CallBlockFormat, selected_tools, skip_ws

__all__ = ["Qwen3CoderFormat", "Qwen3CoderThinkingFormat", "FORMATS", "schema_types", "typed_value",
           "parameter_rules", "literal_at", "json_member"]

OPEN, CLOSE = "<tool_call>", "</tool_call>"
FUNC, FUNC_END = "<function=", "</function>"
PARAM, PARAM_END = "<parameter=", "</parameter>"
_MAX_NAME = 200


def schema_types(schema) -> set[str] | None:
    """The JSON types ``schema`` allows, None when it does not say (any)."""
    if not isinstance(schema, dict):
        return None
    t = schema.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return {x for x in t if isinstance(x, str)} or None
    for key in ("anyOf", "oneOf"):
        subs = schema.get(key)
        if isinstance(subs, list) and subs:
            out: set[str] = set()
            for sub in subs:
                st = schema_types(sub)
                if st is None:
                    return None
                out |= st
            return out
    values = [schema["const"]] if "const" in schema else schema.get("enum")
    if isinstance(values, list) and values:
        return {_json_type(v) for v in values}
    if "properties" in schema:
        return {"object"}
    if "items" in schema:
        return {"array"}
    return None


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(value), "null")


def typed_value(raw: str, schema):
    """The JSON value a parameter's raw text stands for, under its property ``schema``."""
    types = schema_types(schema)
    if types == {"string"}:
        return raw
    try:
        value = json.loads(raw.strip())
    except ValueError:
        return raw
    kind = _json_type(value)
    if types is None or "string" not in types or kind in types or (kind == "integer" and "number" in types):
        return value
    return raw


def parameter_rules(g: GrammarBuilder, tool: ToolSpec,
                    param: Callable[[str | None, str | None], str]) -> list[str]:
    """GBNF for a function's parameters, in schema order, the optional ones with ``?``. Each
    is written by ``param(key, json_rule)``: ``json_rule`` is the rule of the value's JSON
    (None: the value is raw text), ``key`` None stands for any name (a function that declares
    no properties takes any number of those)."""
    params = tool.parameters
    props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
    required = set(params.get("required") or [])
    defs = {k: params[k] for k in ("$defs", "definitions") if k in params}
    parts = []
    for key, prop in props.items():
        types = schema_types(prop)
        json_rule = None
        if types is not None and "string" not in types:
            json_rule = g.schema({**defs, **prop}, f"{tool.name}-{key}")
        rule = g.rule(g.fresh(f"{tool.name}-param"), param(key, json_rule))
        parts.append(rule if key in required else f"{rule}?")
    if not props and params.get("additionalProperties", True) is not False:
        parts.append(g.rule(g.fresh(f"{tool.name}-param"), param(None, None)) + "*")
    return parts


def json_member(key: str, value, first: bool) -> str:
    """``"key":value`` for a call's arguments text, after a comma unless it comes first."""
    return ("" if first else ",") + json.dumps(key, ensure_ascii=False) + ":" \
        + json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _plausible(name: str) -> bool:
    return len(name) <= _MAX_NAME and not any(c.isspace() or c in "<>" for c in name)


def literal_at(text: str, i: int, literal: str, eof: bool) -> str:
    """COMPLETE if ``literal`` is at ``i``, PARTIAL if the text ends inside it, else INVALID."""
    got = text[i:i + len(literal)]
    if got == literal:
        return COMPLETE
    return PARTIAL if not eof and literal.startswith(got) else INVALID


def _function(text: str, i: int, eof: bool, opts: ParseOptions) -> Block:
    """The call at ``i``: ``<tool_call>`` (or ``<function=`` straight away)."""
    n = len(text)
    j = skip_ws(text, i + len(OPEN)) if text.startswith(OPEN, i) else i
    st = literal_at(text, j, FUNC, eof)
    if st != COMPLETE:
        return Block(st)
    j += len(FUNC)
    e = text.find(">", j)
    if e < 0:
        return Block(PARTIAL) if not eof and _plausible(text[j:]) else Block(INVALID)
    name = text[j:e]
    if not name or not _plausible(name):
        return Block(INVALID)
    call, j = ToolCall(name, "{"), e + 1
    schema = opts.tool_schemas.get(name)
    props = schema.get("properties") if isinstance(schema, dict) else None
    props = props if isinstance(props, dict) else {}
    while True:
        j = skip_ws(text, j)
        if j >= n:
            return Block(INVALID if eof else PARTIAL, calls=[call])
        if text.startswith(PARAM, j):
            k = j + len(PARAM)
            e = text.find(">", k)
            key = text[k:] if e < 0 else text[k:e]
            if not _plausible(key) or (e >= 0 and not key):
                return Block(INVALID)
            v = -1 if e < 0 else text.find(PARAM_END, e + 1)
            if v < 0:
                return Block(INVALID if eof else PARTIAL, calls=[call])
            raw = text[e + 1:v]
            raw = raw[1:] if raw.startswith("\n") else raw
            raw = raw[:-1] if raw.endswith("\n") else raw
            call.arguments += json_member(key, typed_value(raw, props.get(key)), call.arguments == "{")
            j = v + len(PARAM_END)
            continue
        if text.startswith(CLOSE, j):                  # </function> left out
            call.arguments += "}"
            return Block(COMPLETE, j + len(CLOSE), [call])
        if text.startswith(FUNC_END, j):
            call.arguments += "}"
            j = skip_ws(text, j + len(FUNC_END))
            st = literal_at(text, j, CLOSE, eof)
            if st == COMPLETE:
                return Block(COMPLETE, j + len(CLOSE), [call])
            if st == PARTIAL:
                return Block(PARTIAL, calls=[call])
            return Block(COMPLETE, j, [call])          # </tool_call> left out
        if PARTIAL in (literal_at(text, j, m, eof) for m in (PARAM, FUNC_END, CLOSE)):
            return Block(PARTIAL, calls=[call])
        return Block(INVALID)


class Qwen3CoderFormat(CallBlockFormat):
    name = "qwen3-coder"
    reasoning_start = ""
    reasoning_end = ""
    arguments_as_object = True
    needs_special_tokens = True       # <tool_call> is an added (in some models a control) token
    openers = (OPEN, FUNC)

    @classmethod
    def _xml(cls, probe: Probe) -> bool:
        src = probe.source
        return (OPEN in src and FUNC in src and PARAM in src
                and "'<tool_call><function=' ~ tool_call.name ~ '>'" not in src
                and (not probe.with_call or "<function=probe_weather>" in probe.with_call))

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        return cls._xml(probe) and "<think>" not in probe.source

    def block(self, text: str, i: int, eof: bool, opts: ParseOptions) -> Block:
        return _function(text, i, eof, opts)

    def tool_grammar(self, tools, choice, parallel, single_token):
        chosen = selected_tools(tools, choice)
        if not chosen:
            return None
        g = GrammarBuilder(single_token)
        string = text_without(g, PARAM_END, "xml-string")
        close = lit("\n" + PARAM_END + "\n")

        def param(key: str | None, json_rule: str | None) -> str:
            head = lit(f"{PARAM}{key}>\n") if key is not None else f'{lit(PARAM)} [A-Za-z0-9_.-]+ ">\\n"'
            return f"{head} {json_rule or string} {close}"

        fns = []
        for tool in chosen:
            body = f'{lit(f"{FUNC}{tool.name}>{chr(10)}")} {" ".join(parameter_rules(g, tool, param))} ' \
                   f'{lit(FUNC_END + chr(10))}'
            fns.append(g.rule(g.fresh(f"{tool.name}-fn"), body))
        g.rule("fn", " | ".join(fns))
        g.rule("call", f'{g.marker(OPEN)} "\\n" fn {g.marker(CLOSE)}')
        first = "call"
        if FUNC in self.openers:                       # the opening <tool_call> may be left out
            first = g.rule("call-first", f'( {g.marker(OPEN)} "\\n" )? fn {g.marker(CLOSE)}')
        g.rule("calls", f"{first} ( ws call )*" if parallel else first)
        words = [OPEN] + ([f"{FUNC}{t.name}>" for t in chosen] if FUNC in self.openers else [])
        return self.finish_plan(g, "calls", choice, words)


class Qwen3CoderThinkingFormat(Qwen3CoderFormat):
    """The same calls from models that reason (Qwen3.5, Nemotron 3 Nano, StepFun 3.5)."""
    name = "qwen3-coder-think"
    reasoning_start = "<think>"
    reasoning_end = "</think>"
    openers = (OPEN,)

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        return cls._xml(probe) and "<think>" in probe.source


FORMATS = [Qwen3CoderFormat, Qwen3CoderThinkingFormat]
