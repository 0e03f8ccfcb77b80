"""GBNF building blocks the formats share.

:class:`GrammarBuilder` collects rules under unique names. ``schema(s)`` converts a JSON
Schema with our converter (``sampling.json_schema``) and adds its rules with a prefix so that
several schemas live in one grammar; it returns the name of the schema's root rule. ``lit``
writes a GBNF string literal; ``marker`` writes a marker as a token reference when it is one
token in the vocabulary (so the model emits that token), else as a literal.

Typical use in a format::

    g = GrammarBuilder(single_token)
    calls = [g.call_object(t) for t in tools]          # {"name": "f", "arguments": {...}}
    g.rule("call", " | ".join(calls))
    g.rule("root", f'{g.marker("<tool_call>")} ws call ws {g.marker("</tool_call>")}')
    return GrammarPlan(g.text(), lazy=..., trigger_words=["<tool_call>"])
"""
from __future__ import annotations

import json
import re
from typing import Callable

from sampling.json_schema import SchemaError, schema_to_grammar

from .base import FormatError, ToolSpec

__all__ = ["GrammarBuilder", "lit", "check_tool_schema", "trigger_anywhere", "regex_escape", "text_without",
           "reasoning_block"]

_RULE_NAME = re.compile(r"^([A-Za-z0-9-]+)\s*::=", re.M)


def lit(text: str) -> str:
    """A GBNF string literal for ``text``."""
    out = []
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def regex_escape(text: str) -> str:
    """Escape for an ECMAScript regex (std::regex)."""
    return re.sub(r"([.^$|()\[\]{}*+?\\/-])", r"\\\1", text)


def trigger_anywhere(words: list[str]) -> str:
    """A trigger pattern that fires when any of ``words`` appears anywhere in the output; the
    grammar then starts at the word."""
    return "(" + "|".join(regex_escape(w) for w in words) + ")"


def check_tool_schema(schema, where: str) -> None:
    """Raise FormatError (-> 400) unless ``schema`` converts to a grammar."""
    try:
        schema_to_grammar(schema)
    except SchemaError as exc:
        raise FormatError(f"{where}: {exc}") from None
    except (RecursionError, ValueError, TypeError) as exc:
        raise FormatError(f"{where}: cannot convert the schema: {exc}") from None


class GrammarBuilder:
    def __init__(self, single_token: Callable[[str], bool] = lambda s: False):
        self.single_token = single_token
        self._rules: dict[str, str] = {}
        self._n = 0
        self.rule("ws", '| " " | "\\n" [ \\t]{0,20}')

    def rule(self, name: str, body: str) -> str:
        self._rules[name] = body
        return name

    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{re.sub(r'[^A-Za-z0-9-]', '-', base)}-{self._n}"

    def marker(self, text: str) -> str:
        # libllama reads a token reference as the text from "<" to the first ">" (both kept)
        return text if self.single_token(text) and "<" not in text[1:-1] and ">" not in text[1:-1] \
            and text.startswith("<") and text.endswith(">") else lit(text)

    def schema(self, schema, base: str = "s") -> str:
        """Add ``schema``'s rules (renamed with a unique prefix); return its root rule name."""
        gbnf = schema_to_grammar(schema)
        prefix = self.fresh(base)
        names = _RULE_NAME.findall(gbnf)
        mapping = {n: f"{prefix}-{n}" for n in names}
        ident = re.compile(r'("(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\])|\b([A-Za-z][A-Za-z0-9-]*)\b')

        def rename(m):
            if m.group(1):
                return m.group(1)
            return mapping.get(m.group(2), m.group(2))
        for line in gbnf.splitlines():
            if "::=" not in line:
                continue
            name, body = line.split("::=", 1)
            self._rules[mapping[name.strip()]] = ident.sub(rename, body.strip())
        return mapping["root"]

    def json_string(self, value: str) -> str:
        """The literal JSON text of a string value (for fixed keys and names)."""
        return lit(json.dumps(value, ensure_ascii=False))

    def call_object(self, tool: ToolSpec, name_key: str = "name", args_key: str = "arguments") -> str:
        """A rule for ``{"name": "<tool>", "arguments": <its schema>}``; returns its name."""
        args = self.schema(tool.parameters, f"{tool.name}-args")
        body = (f'"{{" ws {self.json_string(name_key)} ws ":" ws {self.json_string(tool.name)} ws "," ws '
                f'{self.json_string(args_key)} ws ":" ws {args} ws "}}"')
        return self.rule(self.fresh(f"{tool.name}-call"), body)

    def text(self, root: str = "root") -> str:
        if root not in self._rules:
            raise ValueError("the grammar has no root rule")
        order = [root] + [n for n in self._rules if n != root]
        return "\n".join(f"{n} ::= {self._rules[n]}" for n in order) + "\n"


def _class_char(ch: str) -> str:
    """One character inside a GBNF character class (libllama knows few escapes there)."""
    if ch in "\\[]^-\"" or ord(ch) < 0x20 or ch == "\x7f":
        return f"\\x{ord(ch):02X}"
    return ch


def text_without(g: GrammarBuilder, forbidden: str, base: str = "text") -> str:
    """A rule for any text (empty included) that does not contain ``forbidden``: the
    matcher of ``forbidden`` (Knuth-Morris-Pratt) as one rule per matched-prefix length,
    with no way into the full match. Use it before the delimiter itself, e.g.
    ``text_without(g, "</think>") "</think>"``. Returns the start rule's name."""
    if not forbidden:
        raise ValueError("text_without needs a non-empty string")
    m = len(forbidden)
    fail = [0] * m
    k = 0
    for i in range(1, m):
        while k and forbidden[i] != forbidden[k]:
            k = fail[k - 1]
        if forbidden[i] == forbidden[k]:
            k += 1
        fail[i] = k

    def step(state: int, ch: str) -> int:
        while True:
            if forbidden[state] == ch:
                return state + 1
            if state == 0:
                return 0
            state = fail[state - 1]

    prefix = g.fresh(base)
    chars = sorted(set(forbidden))
    other = "[^" + "".join(_class_char(c) for c in chars) + "]"
    for state in range(m):
        targets: dict[int, list[str]] = {}
        for ch in chars:
            nxt = step(state, ch)
            if nxt < m:
                targets.setdefault(nxt, []).append(ch)
        alts = [""] + [f"[{''.join(_class_char(c) for c in cs)}] {prefix}-{nxt}"
                       for nxt, cs in sorted(targets.items())]
        alts.append(f"{other} {prefix}-0")
        g.rule(f"{prefix}-{state}", " | ".join(alts))
    return f"{prefix}-0"


def reasoning_block(g: GrammarBuilder, start: str, end: str, start_optional: bool = True) -> str:
    """A rule for the reasoning a full (non-lazy) tool grammar lets the model write before
    its calls: ``start`` (optional unless ``start_optional`` is False: some prompts open the
    block themselves), any text without ``end``, ``end``, a little whitespace (bounded: an
    unbounded run of newlines is a loop a small model falls into). Use it as
    ``f"{rule}? calls"``."""
    body = text_without(g, end, "reasoning-text")
    opening = f"( {g.marker(start)} )?" if start_optional else g.marker(start)
    return g.rule(g.fresh("reasoning"), f"{opening} {body} {g.marker(end)} [ \\t\\n]{{0,4}}")
