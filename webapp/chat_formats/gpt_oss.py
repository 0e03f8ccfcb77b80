"""GPT-OSS (OpenAI's harmony format): the reply is a run of messages on channels::

    <|channel|>analysis<|message|>reasoning...<|end|>
    <|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>
    <|start|>assistant<|channel|>final<|message|>the answer<|return|>

The generation prompt ends with ``<|start|>assistant``, so the first message starts at its
channel. ``analysis`` is reasoning, ``final`` and a plain ``commentary`` (a preamble) are
content, and a message addressed ``to=functions.NAME`` (in the channel header, or before
``<|channel|>`` in the role header) is a call whose body is the JSON arguments. ``<|call|>``
and ``<|return|>`` end generation, so they are usually not in the text. All the markers are
control tokens. A message the parser does not understand (another recipient, an unknown
function, arguments that are not a JSON object) is kept, markup and all, as content.
"""
from __future__ import annotations

import re

from .base import (ChatFormat, ChatMessage, GrammarPlan, ParseOptions, Probe, ToolCall,
                   held_back_prefix)
from .grammar import GrammarBuilder, lit, regex_escape, text_without
from .jsonscan import COMPLETE, INVALID, PARTIAL, is_json_object, scan_value, selected_tools, skip_ws

__all__ = ["GptOssFormat", "FORMATS"]

START, CHANNEL, MESSAGE, CONSTRAIN = "<|start|>", "<|channel|>", "<|message|>", "<|constrain|>"
END, CALL, RETURN = "<|end|>", "<|call|>", "<|return|>"
ASSISTANT = START + "assistant"
TERMINATORS = (END, CALL, RETURN)
FUNCTIONS = "functions."
_HEADER = re.compile(r"\s*(?:to=(?P<r1>[^\s<]+)\s*)?<\|channel\|>(?P<ch>[A-Za-z0-9_-]+)"
                     r"(?:\s+to=(?P<r2>[^\s<]+))?(?:\s*(?:<\|constrain\|>)?\s*(?P<ct>[A-Za-z0-9_-]+))?\s*")
# gpt-oss-20b now and then writes a stray commentary channel before the real one
_STRAY = re.compile(r"\s*<\|channel\|>commentary(?:\s+to=assistant)?(?=\s*<\|channel\|>)")


def _first_terminator(text: str, pos: int) -> tuple[int, str]:
    best, term = -1, ""
    for t in TERMINATORS:
        k = text.find(t, pos)
        if k >= 0 and (best < 0 or k < best):
            best, term = k, t
    return best, term


def _call(body: str, name: str, eof: bool) -> tuple[str, ToolCall | None]:
    """A call's body (its JSON arguments): (status, call); PARTIAL: the arguments so far
    (no call before they start)."""
    s = skip_ws(body, 0)
    if s >= len(body):
        return (INVALID, None) if eof else (PARTIAL, None)
    if body[s] != "{":
        return INVALID, None
    st, e = scan_value(body, s, eof)
    if st == PARTIAL:
        return PARTIAL, ToolCall(name, body[s:])
    if st == INVALID or body[e:].strip() or not is_json_object(body[s:e]):
        return INVALID, None
    return COMPLETE, ToolCall(name, body[s:e])


class GptOssFormat(ChatFormat):
    name = "gpt-oss"
    reasoning_start = CHANNEL + "analysis" + MESSAGE
    reasoning_end = END
    arguments_as_object = True
    needs_special_tokens = True

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        return CHANNEL in probe.source and MESSAGE in probe.source

    def parse(self, text: str, partial: bool, opts: ParseOptions) -> ChatMessage:
        reasoning: list[str] = []
        content: list[str] = []
        calls: list[ToolCall] = []
        raw_reasoning = opts.reasoning_format in ("none", "deepseek-legacy")
        if opts.thinking_forced_open:           # the prompt opened the analysis (a prefill)
            text = self.reasoning_start + text
        n = len(text)
        pos = len(ASSISTANT) if text.startswith(ASSISTANT) else 0
        while pos < n:
            k = text.find(MESSAGE, pos)
            if k < 0:
                if not partial or not self._may_be_header(text[pos:]):
                    content.append(text[pos:])
                break
            m = _HEADER.fullmatch(_STRAY.sub("", text[pos:k], count=1))
            if m is None:
                content.append(text[pos:])
                break
            body_at = k + len(MESSAGE)
            e, term = _first_terminator(text, body_at)
            closed = e >= 0
            body = text[body_at:e] if closed else text[body_at:]
            if partial and not closed:
                body = body[:len(body) - held_back_prefix(body, TERMINATORS + (START,))]
            raw = text[pos:body_at] + body + term
            recipient = m["r1"] or m["r2"] or ""
            if recipient and recipient != "assistant":
                name = recipient[len(FUNCTIONS):] if recipient.startswith(FUNCTIONS) else ""
                st, call = INVALID, None
                if name and opts.parse_tool_calls and (not opts.tool_names or name in opts.tool_names):
                    st, call = _call(body, name, closed or not partial)
                if st == INVALID:
                    content.append(raw)
                elif call is not None:
                    calls.append(call)
                if st == PARTIAL:
                    break
            elif m["ch"] == "analysis":
                if opts.reasoning_format != "none":
                    reasoning.append(body)
                if raw_reasoning:
                    content.append(raw)
            else:                                 # final, a commentary preamble, or unknown
                content.append(body)
            if not closed:
                break
            pos = e + len(term)
            if text.startswith(ASSISTANT, pos):
                pos += len(ASSISTANT)
            elif pos < n:
                if not (partial and ASSISTANT.startswith(text[pos:])):
                    content.append(text[pos:])
                break
        return ChatMessage("".join(content), "".join(reasoning), calls)

    @staticmethod
    def _may_be_header(text: str) -> bool:
        """Whether ``text`` (no <|message|> yet) may still become a message header."""
        head = text.lstrip()
        return not head or head.startswith((CHANNEL, "to=")) or CHANNEL.startswith(head) \
            or "to=".startswith(head)

    def tool_grammar(self, tools, choice, parallel, single_token):
        tools = selected_tools(tools, choice)
        if not tools:
            return None
        g = GrammarBuilder(single_token)
        ch, msg = g.marker(CHANNEL), g.marker(MESSAGE)
        g.rule("channel", f'{ch} ( "commentary" | "analysis" )')
        g.rule("constraint", f'( " "? ( {g.marker(CONSTRAIN)} )? "json" )?')
        calls = []
        for tool in tools:
            args = g.schema(tool.parameters, f"{tool.name}-args")
            to = lit(f" to={FUNCTIONS}{tool.name}")
            calls.append(g.rule(g.fresh(f"{tool.name}-call"),
                                f"{to} channel constraint {msg} {args} | channel {to} constraint {msg} {args}"))
        g.rule("call", " | ".join(calls))
        # at most one call: <|call|> ends the generation
        if choice.mode == "auto":
            g.rule("root", "call")
            # searched in the text so far (no leading [\s\S]*?: std::regex recurses per character)
            fn = regex_escape(" to=" + FUNCTIONS)
            patterns = [rf"^({fn})", rf"{regex_escape(ASSISTANT)}({fn})",
                        rf"({regex_escape(CHANNEL)}(?:commentary|analysis){fn})"]
            return GrammarPlan(g.text(), lazy=True, trigger_patterns=patterns)
        body = text_without(g, END, "body")
        header = g.rule("header", f'{g.marker(START)} "assistant"')
        g.rule("before", f'{ch} ( "analysis" | "commentary" ) {msg} {body} {g.marker(END)} {header}')
        # (a header first: after a prompt that opened the analysis, the grammar starts at <|end|>)
        g.rule("root", "header? before* call")
        return GrammarPlan(g.text(), lazy=False)


FORMATS = [GptOssFormat]
