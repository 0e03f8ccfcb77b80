"""DeepSeek tool calls: R1 (and its distills), V3.1, and the DSML markup of V3.2 and V4.

R1 writes::

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
    ```json
    {...}
    ```<｜tool▁call▁end｜>
    <｜tool▁call▁begin｜>function<｜tool▁sep｜>...<｜tool▁call▁end｜><｜tool▁calls▁end｜>

and V3.1 drops the type, the code fence and the newlines::

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>
    <｜tool▁call▁begin｜>...<｜tool▁call▁end｜><｜tool▁calls▁end｜>

The parser reads either syntax (and the misspelt section openers R1 distills drift to,
which llama.cpp accepts too); each format's grammar makes its model write its own. V3.2
and V4 write an XML-like block whose parameters say whether their value is a raw string::

    <｜DSML｜function_calls>            (V4: <｜DSML｜tool_calls>)
    <｜DSML｜invoke name="NAME">
    <｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>
    <｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>
    </｜DSML｜invoke>
    </｜DSML｜function_calls>

All reason in ``<think>...</think>``. R1's generation prompt opens the block; V3.1's, V3.2's
and V4's do when thinking is on (else they close it or leave it out).
"""
from __future__ import annotations

import re

from .base import ChatMessage, GrammarPlan, ParseOptions, Probe, ToolCall, held_back_prefix
from .grammar import GrammarBuilder, lit, text_without
from .jsonscan import (COMPLETE, INVALID, PARTIAL, Block, CallBlockFormat, is_json_object, scan_value,
                       selected_tools, skip_ws)
from .qwen3_coder import json_member, literal_at, parameter_rules, typed_value

__all__ = ["DeepSeekR1Format", "DeepSeekV3Format", "DeepSeekV32Format", "DeepSeekV4Format", "FORMATS",
           "cut_at"]

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"
EOS = "<｜end▁of▁sentence｜>"
BEGIN_VARIANTS = ("<｜tool_calls_begin｜>", "<｜tool calls begin｜>", "<｜tool\\_calls\\_begin｜>",
                  "<｜tool▁calls｜>")
FENCE = "```json"
_MAX_HEAD = 200          # a type or name longer than this is not one


def _name(head: str) -> bool:
    """Whether ``head`` may be (the start of) a call's type or name."""
    return len(head) <= _MAX_HEAD and not any(c.isspace() or c in "<>" for c in head)


def cut_at(text: str, marker: str, partial: bool) -> str:
    """``text`` up to ``marker`` (an end-of-turn token written as text); while streaming, a
    trailing start of it is held back too."""
    k = text.find(marker)
    if k >= 0:
        return text[:k]
    return text[:len(text) - held_back_prefix(text, [marker])] if partial else text


def _call(text: str, j: int, eof: bool) -> tuple[str, int, ToolCall | None]:
    """One call at ``j`` (its CALL_BEGIN optional), either syntax: (status, end, call); with
    PARTIAL the call is there once its name is complete and its arguments have started."""
    n = len(text)
    if text.startswith(CALL_BEGIN, j):
        j += len(CALL_BEGIN)
    elif literal_at(text, j, CALL_BEGIN, eof) == PARTIAL:
        return PARTIAL, n, None
    k = text.find(SEP, j)
    if k < 0:
        head = text[j:]
        keep = held_back_prefix(head, [SEP])
        return (PARTIAL, n, None) if not eof and _name(head[:len(head) - keep]) else (INVALID, j, None)
    head = text[j:k]
    if not head or not _name(head):
        return INVALID, j, None
    i = k + len(SEP)
    fenced = head == "function"                  # R1: NAME\n```json\n{...}\n```
    if fenced:
        e = text.find("\n", i)
        if e < 0:
            return (PARTIAL, n, None) if not eof and _name(text[i:].rstrip()) else (INVALID, j, None)
        name = text[i:e].strip()
        if not name or not _name(name):
            return INVALID, j, None
        call = ToolCall(name)
        i = skip_ws(text, e)
        st = literal_at(text, i, FENCE, eof)
        if st != COMPLETE:
            return st, n, None
        i = skip_ws(text, i + len(FENCE))
    else:                                        # V3: NAME<｜tool▁sep｜>{...}
        call = ToolCall(head)
        i = skip_ws(text, i)
    if i >= n:
        return (INVALID if eof else PARTIAL), n, None
    if text[i] != "{":
        return INVALID, j, None
    st, e = scan_value(text, i, eof)
    if st != COMPLETE:
        call.arguments = text[i:]
        return st, n, call
    call.arguments = text[i:e]
    if not is_json_object(call.arguments):
        return INVALID, j, None
    i = skip_ws(text, e)
    for closing in (("```", CALL_END) if fenced else (CALL_END,)):
        st = literal_at(text, i, closing, eof)
        if st != COMPLETE:
            return st, n, call
        i += len(closing)
        if closing == "```":
            i = skip_ws(text, i)
    return COMPLETE, i, call


def _section(text: str, j: int, eof: bool, close: str, more: str, read_call) -> Block:
    """The calls from ``j`` to ``close``, each read by ``read_call(text, j, eof) -> (status,
    end, call)``; a call after the first starts with ``more``. A section whose closer is left
    out ends after its last call."""
    n = len(text)
    calls: list[ToolCall] = []
    while True:
        j = skip_ws(text, j)
        if j >= n:
            if eof:
                return Block(COMPLETE, n, calls) if calls else Block(INVALID)
            return Block(PARTIAL, calls=calls)
        if calls:
            if text.startswith(close, j):
                return Block(COMPLETE, j + len(close), calls)
            if not text.startswith(more, j):
                if PARTIAL in (literal_at(text, j, close, eof), literal_at(text, j, more, eof)):
                    return Block(PARTIAL, calls=calls)
                return Block(COMPLETE, j, calls)
        st, j, call = read_call(text, j, eof)
        if st == INVALID:
            return Block(INVALID)
        if call is not None:
            calls.append(call)
        if st == PARTIAL:
            return Block(PARTIAL, calls=calls)


class _DeepSeek(CallBlockFormat):
    """What the DeepSeek formats share: reasoning, the end-of-sentence token, the plan."""
    reasoning_start = "<think>"
    reasoning_end = "</think>"
    arguments_as_object = True
    needs_special_tokens = True          # the tool markers are control tokens

    def parse(self, text: str, partial: bool, opts: ParseOptions) -> ChatMessage:
        return super().parse(cut_at(text, EOS, partial), partial, opts)

    def _plan(self, g: GrammarBuilder, choice, section: str, trigger: str) -> GrammarPlan:
        """"auto": lazy, from ``trigger`` on; else the section, after the model's reasoning."""
        return self.finish_plan(g, section, choice, [trigger])


class DeepSeekR1Format(_DeepSeek):
    """R1 and its distills (Llama 8B, Qwen 32B), and llama.cpp's own R1 template."""
    name = "deepseek-r1"
    openers = (CALLS_BEGIN, *BEGIN_VARIANTS, CALL_BEGIN)
    fenced = True

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        src = probe.source
        return CALLS_BEGIN in src and SEP in src and FENCE in src

    def block(self, text: str, i: int, eof: bool, opts: ParseOptions) -> Block:
        opener = next(o for o in self.openers if text.startswith(o, i))
        start = i if opener == CALL_BEGIN else i + len(opener)     # a call without its section
        return _section(text, start, eof, CALLS_END, CALL_BEGIN, _call)

    def tool_grammar(self, tools, choice, parallel, single_token):
        chosen = selected_tools(tools, choice)
        if not chosen:
            return None
        g = GrammarBuilder(single_token)
        calls = []
        for tool in chosen:
            args = g.schema(tool.parameters, f"{tool.name}-args")
            if self.fenced:
                body = (f'{g.marker(CALL_BEGIN)} "function" {g.marker(SEP)} '
                        f'{lit(tool.name + chr(10) + FENCE + chr(10))} {args} "\\n```" {g.marker(CALL_END)}')
            else:
                body = f'{g.marker(CALL_BEGIN)} {lit(tool.name)} {g.marker(SEP)} {args} {g.marker(CALL_END)}'
            calls.append(g.rule(g.fresh(f"{tool.name}-call"), body))
        g.rule("call", " | ".join(calls))
        sep = '"\\n" ' if self.fenced else ""
        more = f" ( {sep}call )*" if parallel else ""
        return self._plan(g, choice, f"{g.marker(CALLS_BEGIN)} call{more} {g.marker(CALLS_END)}", CALLS_BEGIN)


class DeepSeekV3Format(DeepSeekR1Format):
    """V3.1 (hybrid thinking: its prompt ends ``<think>`` or ``<think></think>``)."""
    name = "deepseek-v3"
    fenced = False

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        src = probe.source
        return CALLS_BEGIN in src and SEP in src and FENCE not in src


# --- V3.2 and V4: DSML markup -----------------------------------------------------------

DSML = "｜DSML｜"
INVOKE, INVOKE_END = f'<{DSML}invoke name="', f"</{DSML}invoke>"
PARAM, PARAM_END = f"<{DSML}parameter", f"</{DSML}parameter>"
_PARAM = re.compile(f'<{DSML}parameter name="([^"<>]*)"(?:\\s+string="(true|false)")?\\s*>')


def _dsml_call(text: str, j: int, eof: bool, opts: ParseOptions) -> tuple[str, int, ToolCall | None]:
    """One ``invoke`` at ``j``: (status, end, call); the arguments grow a parameter at a time."""
    n = len(text)
    st = literal_at(text, j, INVOKE, eof)
    if st != COMPLETE:
        return st, n, None
    k = j + len(INVOKE)
    e = text.find('">', k)
    if e < 0:
        return (PARTIAL, n, None) if not eof and _name(text[k:].rstrip('"')) else (INVALID, j, None)
    name = text[k:e]
    if not name or not _name(name):
        return INVALID, j, None
    call, i = ToolCall(name, "{"), e + 2
    schema = opts.tool_schemas.get(name)
    props = schema.get("properties") if isinstance(schema, dict) else None
    while True:
        i = skip_ws(text, i)
        if text.startswith(INVOKE_END, i):
            call.arguments += "}"
            return COMPLETE, i + len(INVOKE_END), call
        m = _PARAM.match(text, i)
        if m is None:
            head = text[i:]
            if not eof and ">" not in head and (INVOKE_END.startswith(head) or head.startswith(PARAM)
                                                or PARAM.startswith(head)):
                return PARTIAL, n, call
            return INVALID, j, None
        v = text.find(PARAM_END, m.end())
        if v < 0:
            return (INVALID if eof else PARTIAL), n, call
        raw, key, string = text[m.end():v], m.group(1), m.group(2)
        if string == "true":
            value = raw
        else:                   # "false": JSON; no attribute: typed by the schema
            prop = props.get(key) if not string and isinstance(props, dict) else None
            value = typed_value(raw, prop)
        call.arguments += json_member(key, value, call.arguments == "{")
        i = v + len(PARAM_END)


class DeepSeekV32Format(_DeepSeek):
    """V3.2: DSML ``invoke`` elements in a ``<｜DSML｜function_calls>`` block."""
    name = "deepseek-v3.2"
    section = "function_calls"

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        src = probe.source
        v32 = "function_calls" in src          # V4 names the block tool_calls
        return "dsml_token" in src and "DSML" in src and v32 == (cls.section == "function_calls")

    @property
    def openers(self) -> tuple[str, ...]:
        return (f"<{DSML}{self.section}>",)

    @property
    def _close(self) -> str:
        return f"</{DSML}{self.section}>"

    def block(self, text: str, i: int, eof: bool, opts: ParseOptions) -> Block:
        return _section(text, i + len(self.openers[0]), eof, self._close, INVOKE,
                        lambda t, j, e: _dsml_call(t, j, e, opts))

    def tool_grammar(self, tools, choice, parallel, single_token):
        chosen = selected_tools(tools, choice)
        if not chosen:
            return None
        g = GrammarBuilder(single_token)
        string = text_without(g, PARAM_END, "dsml-string")

        def param(key: str | None, json_rule: str | None) -> str:
            kind = f'" string="{"false" if json_rule else "true"}">'
            head = lit(f'{PARAM} name="{key}{kind}') if key is not None else \
                f'{lit(PARAM + " name=" + chr(34))} [A-Za-z0-9_.-]+ {lit(kind)}'
            return f"{head} {json_rule or string} {lit(PARAM_END + chr(10))}"

        invokes = []
        for tool in chosen:
            params = " ".join(parameter_rules(g, tool, param))
            head = lit(INVOKE + tool.name + '">\n')
            body = f"{head} {params} {lit(INVOKE_END + chr(10))}"
            invokes.append(g.rule(g.fresh(f"{tool.name}-invoke"), body))
        g.rule("invoke", " | ".join(invokes))
        opener = self.openers[0]
        section = f'{lit(opener + chr(10))} invoke{" invoke*" if parallel else ""} {lit(self._close)}'
        return self._plan(g, choice, section, opener)


class DeepSeekV4Format(DeepSeekV32Format):
    """V4: the same markup in a ``<｜DSML｜tool_calls>`` block."""
    name = "deepseek-v4"
    section = "tool_calls"


FORMATS = [DeepSeekR1Format, DeepSeekV3Format, DeepSeekV32Format, DeepSeekV4Format]
