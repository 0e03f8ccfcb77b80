"""MeetKai Functionary v3.1 and v3.2 (Llama 3 based).

- v3.1 (``functionary-v3.1``): ``<function=get_weather>{"city": "Paris"}</function>``,
  blocks in a row for parallel calls, text before them content; Python code after
  ``<|python_tag|>`` is a call to the ``python`` tool with ``{"code": "..."}``.
- v3.2 (``functionary-v3.2``): the output is a series of messages ``>>>recipient\\n...``
  (the prompt ends with the first ``>>>``): recipient ``all`` is content, any other is a call
  with the JSON arguments (or, for ``python``, code) after the newline::

      all
      Let me look.>>>get_weather
      {"city": "Paris"}>>>get_time
      {"tz": "UTC"}

  Its template concatenates the arguments as a string (``arguments_as_object`` False).
"""
from __future__ import annotations

import re

from .base import ChatMessage, ParseOptions, Probe, ToolCall, held_back_prefix
from .grammar import GrammarBuilder, lit, regex_escape, text_without
from .jsonscan import (COMPLETE, INVALID, PARTIAL, Block, CallBlockFormat, code_call, is_json_object,
                       scan_value, selected_tools, skip_ws)
from .llama3 import TAG, python_tool_name

__all__ = ["FunctionaryV31Format", "FunctionaryV32Format", "FORMATS"]

_FUNCTION = re.compile(r"<function=([A-Za-z0-9_.:-]+)>")
_RENDERED_V31 = re.compile(r'<function=probe_weather>\{"city": "Paris"\}</function>')
_RECIPIENT = re.compile(r"[A-Za-z0-9_.:-]+")
SEP = ">>>"


class FunctionaryV31Format(CallBlockFormat):
    name = "functionary-v3.1"
    reasoning_start = ""
    reasoning_end = ""
    arguments_as_object = True
    needs_special_tokens = True
    openers = ("<function=", TAG)

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        if probe.with_call:
            return bool(_RENDERED_V31.search(probe.with_call))
        src = probe.source
        return "<function=" in src and "</function>" in src and "<|start_header_id|>" in src

    def block(self, text: str, i: int, eof: bool, opts: ParseOptions) -> Block:
        if text.startswith(TAG, i):
            rest = text[i + len(TAG):]
            name = python_tool_name(opts)
            if name is None or not rest.strip():
                return Block(INVALID if eof or name is None else PARTIAL)
            return Block(COMPLETE, len(text), [code_call(name, rest, True)]) if eof \
                else Block(PARTIAL, calls=[code_call(name, rest, False)])
        m = _FUNCTION.match(text, i)
        if not m:
            tail = text[i:]
            maybe = not eof and re.fullmatch(r"<function=[A-Za-z0-9_.:-]*", tail)
            return Block(PARTIAL if maybe else INVALID)
        name, j = m.group(1), skip_ws(text, m.end())
        if j >= len(text):
            return Block(INVALID if eof else PARTIAL)
        inner = _args_block(text, j, eof, "</function>")
        if inner.status == INVALID:
            return inner
        return Block(inner.status, inner.end, [ToolCall(name, inner.calls[0].arguments if inner.calls else "")])

    def tool_grammar(self, tools, choice, parallel, single_token):
        chosen = selected_tools(tools, choice)
        if not chosen:
            return None
        g = GrammarBuilder(single_token)
        calls = [g.rule(g.fresh(f"{t.name}-call"),
                        f'{lit("<function=" + t.name + ">")} {g.schema(t.parameters, f"{t.name}-args")} '
                        f'{lit("</function>")}') for t in chosen]
        return self.plan(g, calls, choice, parallel, sep="ws", words=["<function="])


def _args_block(text: str, j: int, eof: bool, closer: str) -> Block:
    """A JSON object at ``j``, then (optionally at the end of a final text) ``closer``; the
    one call of the result carries the arguments only."""
    if text[j] != "{":
        return Block(INVALID)
    status, end = scan_value(text, j, eof)
    if status == INVALID:
        return Block(INVALID)
    if status == PARTIAL:
        return Block(PARTIAL, calls=[ToolCall("", text[j:])])
    args = text[j:end]
    if not is_json_object(args):
        return Block(INVALID)
    k = skip_ws(text, end)
    if text.startswith(closer, k):
        return Block(COMPLETE, k + len(closer), [ToolCall("", args)])
    if k >= len(text) or (not eof and closer.startswith(text[k:])):
        return Block(COMPLETE, len(text), [ToolCall("", args)]) if eof else Block(PARTIAL, calls=[ToolCall("", args)])
    return Block(INVALID)


class FunctionaryV32Format(CallBlockFormat):
    name = "functionary-v3.2"
    reasoning_start = ""
    reasoning_end = ""
    arguments_as_object = False
    needs_special_tokens = False
    openers = (SEP,)

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        return ">>>all" in probe.source and "'>>>' + tool_call" in probe.source.replace('"', "'")

    def parse(self, text: str, partial: bool, opts: ParseOptions) -> ChatMessage:
        """Messages ``recipient\\nbody`` separated by ``>>>`` (the first one's is in the prompt)."""
        if text.startswith(SEP):
            text = text[len(SEP):]
        pieces: list[str] = []            # content: the "all" messages, and messages that are no call
        calls: list[ToolCall] = []
        pos, n = 0, len(text)
        while pos <= n:
            nl = text.find("\n", pos)
            if nl < 0 and partial and _RECIPIENT.fullmatch(text[pos:] or "x"):
                break                                           # the recipient may go on
            if nl >= 0 and text[pos:nl] == "all":
                pos = self._content(text, nl + 1, partial, pieces)
                continue
            b = self._call(text, pos, nl, not partial, opts) if opts.parse_tool_calls and nl >= 0 \
                else Block(INVALID)
            if b.status == INVALID:
                pos = self._content(text, pos, partial, pieces)  # recipient line included
                continue
            calls.extend(b.calls)
            pieces.append("")                                   # a call ends the content before it
            if b.status == PARTIAL or b.end >= n:
                break
            pos = b.end
        return ChatMessage(_join_messages(pieces, partial), "", calls)

    @staticmethod
    def _content(text: str, start: int, partial: bool, pieces: list[str]) -> int:
        """Add the message body from ``start`` to the next ``>>>``; return where the next
        message starts (past the end when there is none)."""
        end = text.find(SEP, start)
        if end >= 0:
            pieces.append(text[start:end])
            return end + len(SEP)
        body = text[start:]
        pieces.append(body[:len(body) - held_back_prefix(body, [SEP])] if partial else body)
        return len(text) + 1

    def _call(self, text: str, pos: int, nl: int, eof: bool, opts: ParseOptions) -> Block:
        name = text[pos:nl]
        if not _RECIPIENT.fullmatch(name) or (opts.tool_names and name not in opts.tool_names):
            return Block(INVALID)
        j = skip_ws(text, nl + 1)
        if j >= len(text):
            return Block(INVALID if eof else PARTIAL)
        if text[j] != "{":
            if name != python_tool_name(opts):
                return Block(INVALID)
            end = text.find(SEP, j)
            code = text[j:end if end >= 0 else len(text)]
            if end >= 0 or eof:
                return Block(COMPLETE, end + len(SEP) if end >= 0 else len(text), [code_call(name, code, True)])
            code = code[:len(code) - held_back_prefix(code, [SEP])]
            return Block(PARTIAL, calls=[code_call(name, code, False)])
        b = _args_block(text, j, eof, SEP)
        return Block(b.status, b.end, [ToolCall(name, c.arguments) for c in b.calls])

    def tool_grammar(self, tools, choice, parallel, single_token):
        chosen = selected_tools(tools, choice)
        if not chosen:
            return None
        g = GrammarBuilder(single_token)
        calls = [g.rule(g.fresh(f"{t.name}-call"),
                        f'{lit(t.name + chr(10))} {g.schema(t.parameters, f"{t.name}-args")}') for t in chosen]
        if choice.mode == "auto":
            names = "|".join(regex_escape(t.name) for t in chosen)
            # the first message's ">>>" is in the prompt: a call may start the output
            pattern = f"(?:^|{regex_escape(SEP)})((?:{names})\\n)"
            return self.plan(g, calls, choice, parallel, sep=lit(SEP), patterns=[pattern])
        content = text_without(g, SEP, "content")
        return self.plan(g, calls, choice, parallel, sep=lit(SEP),
                         prefix=f'({lit("all" + chr(10))} {content} {lit(SEP)})?')


def _join_messages(pieces: list[str], open_end: bool) -> str:
    out = [p.strip() if k < len(pieces) - 1 or open_end else p.lstrip() for k, p in enumerate(pieces)]
    return "\n".join(p for p in out if p)


FORMATS = [FunctionaryV32Format, FunctionaryV31Format]
