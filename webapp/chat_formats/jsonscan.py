"""JSON in model output that may still be growing, and the parse loop of block formats.

Scanning: :func:`scan_value` finds where the JSON value that starts at a position ends, in
text that may be cut anywhere (streaming). It answers ``COMPLETE`` (and the end index),
``PARTIAL`` (the text ends inside a value it could still become) or ``INVALID`` (no JSON
value starts with this text). With ``eof=True`` the text is known to be complete, so a value
cut off is ``INVALID`` and a trailing number is complete. :func:`scan_call_object` reads a
call written as a JSON object (``{"name": ..., "arguments": {...}}``), member by member: the
name once its string is closed, the arguments as the raw text written so far.

Block formats: a :class:`CallBlockFormat` writes each tool call (or group of calls) as a
*block* that starts with an opener (``<tool_call>``, ``[TOOL_CALLS]``...); a subclass says
how a block reads (``block()``), and the shared loop (:func:`parse_blocks`) does the rest:
content around the blocks, names checked against the request's tools, text held back while
it may still become a call, and the reasoning rule (``base.split_reasoning_at_call``).

Content around calls: each piece of text between blocks is stripped on the side that touches
a block, empty pieces are dropped, and the rest are joined with a newline. While streaming,
trailing whitespace is held back (it may turn out to sit before a call).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .base import (ChatFormat, ChatMessage, FormatError, GrammarPlan, ParseOptions, ToolCall, ToolChoice,
                   ToolSpec, held_back_prefix, split_reasoning_at_call)
from .grammar import GrammarBuilder, reasoning_block

__all__ = ["COMPLETE", "PARTIAL", "INVALID", "scan_value", "skip_ws", "scan_call_object",
           "CallObject", "Block", "CallBlockFormat", "parse_blocks", "is_json_object",
           "code_call", "selected_tools", "growing_call"]

COMPLETE, PARTIAL, INVALID = "complete", "partial", "invalid"

_WS = re.compile(r"[ \t\n\r]*")
_CHARS = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*'
_STRING = re.compile('"' + _CHARS + '"')
_STRING_PREFIX = re.compile('"' + _CHARS + r'(?:\\(?:u[0-9a-fA-F]{0,3})?)?\Z')
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NUMBER_PREFIX = re.compile(
    r"-?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*|\.[0-9]+[eE][+-]?[0-9]*|[eE][+-]?[0-9]*)?)?\Z")
_LITERALS = ("true", "false", "null")

# states of the scanner
_VALUE, _FIRST_KEY, _KEY, _FIRST_ITEM, _AFTER = range(5)


def skip_ws(text: str, i: int) -> int:
    return _WS.match(text, i).end()


def _scalar(text: str, i: int, eof: bool) -> tuple[str, int]:
    """A string, number or literal at ``i``."""
    c = text[i]
    if c == '"':
        m = _STRING.match(text, i)
        if m:
            return COMPLETE, m.end()
        return (PARTIAL if not eof and _STRING_PREFIX.match(text, i) else INVALID), len(text)
    if c == "-" or c.isdigit():
        if not eof and _NUMBER_PREFIX.match(text, i):
            return PARTIAL, len(text)       # "12" may go on, "1." or "1e" may still be a number
        m = _NUMBER.match(text, i)
        return (COMPLETE, m.end()) if m else (INVALID, i)
    for word in _LITERALS:
        if text.startswith(word, i):
            return COMPLETE, i + len(word)
        if not eof and word.startswith(text[i:]):
            return PARTIAL, len(text)
    return INVALID, i


def scan_value(text: str, pos: int = 0, eof: bool = False) -> tuple[str, int]:
    """(status, end) of the JSON value starting exactly at ``pos`` (no leading whitespace).
    ``end`` is where the value ends when COMPLETE; otherwise ``len(text)`` or the error."""
    closers: list[str] = []
    i, n, state = pos, len(text), _VALUE
    cut = (INVALID if eof else PARTIAL), n       # the text ends inside the value
    while True:
        if state == _AFTER:
            if not closers:
                return COMPLETE, i
            i = skip_ws(text, i)
            if i >= n:
                return cut
            c = text[i]
            if c == ",":
                i, state = i + 1, (_KEY if closers[-1] == "}" else _VALUE)
            elif c == closers[-1]:
                closers.pop()
                i += 1
            else:
                return INVALID, i
            continue
        if closers:
            i = skip_ws(text, i)
        if i >= n:
            return cut
        c = text[i]
        if (state == _FIRST_KEY and c == "}") or (state == _FIRST_ITEM and c == "]"):
            closers.pop()
            i, state = i + 1, _AFTER
        elif state in (_FIRST_KEY, _KEY):
            if c != '"':
                return INVALID, i
            status, end = _scalar(text, i, eof)
            if status != COMPLETE:
                return status, end
            i = skip_ws(text, end)
            if i >= n:
                return cut
            if text[i] != ":":
                return INVALID, i
            i, state = i + 1, _VALUE
        elif c in "{[":
            closers.append("}" if c == "{" else "]")
            i, state = i + 1, (_FIRST_KEY if c == "{" else _FIRST_ITEM)
        else:
            status, end = _scalar(text, i, eof)
            if status != COMPLETE:
                return status, end
            i, state = end, _AFTER


def is_json_object(raw: str) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


@dataclass
class CallObject:
    """A call written as a JSON object, as far as the text goes."""
    status: str
    end: int = 0                 # after the closing brace (COMPLETE)
    name: str | None = None      # once its string is complete
    arguments: str | None = None  # raw text of the arguments value so far (complete or not)
    id: str = ""


def scan_call_object(text: str, pos: int, eof: bool, name_keys=("name",), args_keys=("arguments",),
                     first_keys=None) -> CallObject:
    """Read ``{"name": "f", "arguments": {...}, "id": "..."}`` starting at ``pos`` (a "{").
    Other members are skipped; the arguments must be an object. ``first_keys``: the first
    member must be one of these (so that other objects are rejected early)."""
    n = len(text)
    out = CallObject(PARTIAL)
    if pos >= n or text[pos] != "{":
        return CallObject(INVALID if pos < n or eof else PARTIAL)
    i = pos + 1
    first = True
    while True:
        i = skip_ws(text, i)
        if i >= n:
            break
        if text[i] == "}" and first:
            out.status, out.end = COMPLETE, i + 1
            break
        if text[i] != '"':
            return CallObject(INVALID)
        status, end = _scalar(text, i, False)
        if status == INVALID:
            return CallObject(INVALID)
        if status == PARTIAL:
            raw = text[i + 1:]
            if first and first_keys and "\\" not in raw and not any(k.startswith(raw) for k in first_keys):
                return CallObject(INVALID)
            break
        key = json.loads(text[i:end])
        if first and first_keys and key not in first_keys:
            return CallObject(INVALID)
        first = False
        i = skip_ws(text, end)
        if i >= n:
            break
        if text[i] != ":":
            return CallObject(INVALID)
        i = skip_ws(text, i + 1)
        if i >= n:
            break
        status, end = scan_value(text, i, False)
        if key in args_keys:
            if text[i] != "{":
                return CallObject(INVALID)
            out.arguments = text[i:end] if status == COMPLETE else text[i:]
        if status == INVALID:
            return CallObject(INVALID)
        if status == PARTIAL:
            break
        if key in name_keys or key == "id":
            value = json.loads(text[i:end])
            if not isinstance(value, str) or (key != "id" and not value):
                return CallObject(INVALID)
            if key == "id":
                out.id = value
            else:
                out.name = value
        i = skip_ws(text, end)
        if i >= n:
            break
        if text[i] == "}":
            out.status, out.end = COMPLETE, i + 1
            break
        if text[i] != ",":
            return CallObject(INVALID)
        i += 1
    if out.status == PARTIAL:
        return CallObject(INVALID) if eof else out
    if out.name is None:
        return CallObject(INVALID)
    if out.arguments is None:
        out.arguments = "{}"
    elif not is_json_object(out.arguments):
        return CallObject(INVALID)
    return out


def growing_call(obj: CallObject) -> list[ToolCall]:
    """The call of a PARTIAL object, once it may show: its name complete and its arguments
    started as an object (so that most malformed calls are content before they show)."""
    return [ToolCall(obj.name, obj.arguments, obj.id)] if obj.name and obj.arguments is not None else []


def code_call(name: str, code: str, complete: bool) -> ToolCall:
    """A call whose only argument is source code (``{"code": "..."}``); while the code is
    still growing, the JSON text is cut before its closing quote so that it only grows."""
    code = code.strip() if complete else code.lstrip().rstrip()
    args = json.dumps({"code": code}, ensure_ascii=False)
    return ToolCall(name, args if complete else args[:-2])


@dataclass
class Block:
    """One call block as far as the text goes: its status, its end (COMPLETE) and its calls
    (PARTIAL: those whose name is complete; the last one's arguments may still grow)."""
    status: str
    end: int = 0
    calls: list[ToolCall] = field(default_factory=list)


class CallBlockFormat(ChatFormat):
    """A format whose calls are blocks of text that start with one of ``openers``."""
    openers: tuple[str, ...] = ()

    def find(self, text: str, start: int) -> int:
        """Where the next block may start, at or after ``start`` (-1: none)."""
        found = [i for i in (text.find(o, start) for o in self.openers) if i >= 0]
        return min(found) if found else -1

    def block(self, text: str, i: int, eof: bool, opts: ParseOptions) -> Block:
        raise NotImplementedError

    def hold(self, tail: str) -> int:
        """How much of the end of a content piece to hold back while streaming."""
        return held_back_prefix(tail, self.openers)

    def parse(self, text: str, partial: bool, opts: ParseOptions) -> ChatMessage:
        if not opts.parse_tool_calls:
            return super().parse(text, partial, opts)
        reasoning, rest = split_reasoning_at_call(
            text, partial, opts, self.reasoning_start, self.reasoning_end,
            lambda body, p: self.first_call(body, p, opts))
        content, calls = parse_blocks(self, rest, partial, opts)
        return ChatMessage(content, reasoning, calls)

    def plan(self, g: GrammarBuilder, calls: list[str], choice: ToolChoice, parallel: bool, sep: str = "ws",
             words: list[str] | None = None, patterns: list[str] | None = None,
             prefix: str = "", suffix: str = "") -> GrammarPlan:
        """The grammar plan over ``calls`` (one rule per allowed call): "auto" -> lazy, from
        the trigger on; "required"/"named" -> full, with room for a reasoning block first
        when the format has one. One call, or several separated by ``sep`` when parallel;
        nothing after the last. ``prefix``, ``suffix``: GBNF around the calls."""
        g.rule("call", " | ".join(calls))
        g.rule("calls", " ".join(x for x in (prefix, f"call ({sep} call)*" if parallel else "call", suffix) if x))
        return self.finish_plan(g, "calls", choice, words, patterns, start_optional=False)

    def finish_plan(self, g: GrammarBuilder, body: str, choice: ToolChoice, words=(), patterns=(),
                    start_optional: bool = True) -> GrammarPlan:
        """The root over ``body`` (the calls): "auto" -> lazy, from the trigger ``words`` /
        ``patterns`` on; "required"/"named" -> full, with room for a reasoning block first
        when the format has one and the template thinks (``template_thinks``)."""
        if choice.mode == "auto":
            g.rule("root", body)
            return GrammarPlan(g.text(), lazy=True, trigger_words=list(words or []),
                               trigger_patterns=list(patterns or []))
        if self.reasoning_start and self.reasoning_end and self.template_thinks:
            block = reasoning_block(g, self.reasoning_start, self.reasoning_end, start_optional)
            g.rule("root", f"{block}? {body}")
        else:
            g.rule("root", body)
        return GrammarPlan(g.text())

    def first_call(self, body: str, partial: bool, opts: ParseOptions) -> int:
        """For the reasoning rule: where a call starts inside an unclosed reasoning block.
        Final text: the first complete call to a known tool. Streaming: the first block that
        is or may become one (what follows is held back), or a trailing opener prefix."""
        start = 0
        while True:
            i = self.find(body, start)
            if i < 0:
                break
            b = _checked(self.block(body, i, not partial, opts), opts)
            if b.status == COMPLETE or (partial and b.status == PARTIAL):
                return i
            start = i + 1
        if partial:
            keep = self.hold(body)
            if keep:
                return len(body) - keep
        return -1


def selected_tools(tools: list[ToolSpec], choice: ToolChoice) -> list[ToolSpec]:
    """The tools a grammar may call: the named one, or all; [] when ``choice`` is "none"."""
    if choice.mode == "none":
        return []
    if choice.mode == "named":
        chosen = [t for t in tools if t.name == choice.name]
        if not chosen:
            raise FormatError(f"'tool_choice' names function {choice.name!r}, which is not in 'tools'")
        return chosen
    return list(tools)


def _checked(b: Block, opts: ParseOptions) -> Block:
    if b.status != INVALID and opts.tool_names and any(c.name not in opts.tool_names for c in b.calls):
        return Block(INVALID)
    if b.status == COMPLETE and not b.calls:
        return Block(INVALID)
    return b


def parse_blocks(fmt: CallBlockFormat, text: str, partial: bool, opts: ParseOptions) -> tuple[str, list[ToolCall]]:
    """Content and calls of ``text`` (reasoning already split off)."""
    pieces: list[str] = []      # content between blocks
    calls: list[ToolCall] = []
    pos = search = 0
    while True:
        i = fmt.find(text, search)
        if i < 0:
            break
        b = _checked(fmt.block(text, i, not partial, opts), opts)
        if b.status == INVALID:
            search = i + 1
            continue
        pieces.append(text[pos:i])
        calls.extend(b.calls)
        if b.status == PARTIAL:
            return _join(pieces, partial, open_end=True), calls
        pos = search = b.end
    tail = text[pos:]
    if partial:
        keep = fmt.hold(tail)
        tail = tail[:len(tail) - keep]
    pieces.append(tail)
    return _join(pieces, partial, open_end=False), calls


def _join(pieces: list[str], partial: bool, open_end: bool) -> str:
    """Strip each piece where it touches a block; drop empty ones; join with newlines."""
    out = []
    last = len(pieces) - 1
    for k, piece in enumerate(pieces):
        if k > 0:
            piece = piece.lstrip()
        if k < last or open_end or partial:
            piece = piece.rstrip()
        if piece:
            out.append(piece)
    return "\n".join(out)
