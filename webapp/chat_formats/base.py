"""The contract every chat output format implements (tool calls and reasoning).

A *format* knows how one family of chat templates makes the model write tool calls and
reasoning, and it does three things:

- ``parse(text, partial, opts)``: split the model's generated text into a
  :class:`ChatMessage` (content, reasoning, tool calls). With ``partial=True`` the text is a
  prefix of what will be generated (streaming): the result must be a *prefix* of the result
  for any longer text (see :func:`is_prefix_of`): content and reasoning only grow, tool calls
  are only appended, a call appears once its name is complete and its ``arguments`` only
  grow. Anything that might still turn into a marker (a trailing ``"<tool_"``) is held back.
  With ``partial=False`` the text is complete; text that is not a well-formed call is content,
  never an exception.
- ``tool_grammar(tools, choice, parallel, single_token)``: the GBNF (a :class:`GrammarPlan`)
  that makes the model's output parse: ``choice`` "required" or a function name -> a full
  grammar (``lazy=False``) whose output is always a valid call; "auto" -> a lazy grammar
  that starts at the format's trigger. ``single_token(text)`` tells whether a marker is one
  token in the model's vocabulary; such markers are written in the grammar as token
  references (``<tool_call>`` in GBNF, which llama.cpp's grammar parser resolves to that
  token) so the model emits the special token, not its spelling.
- ``detect(probe)`` (a classmethod): whether a chat template belongs to this format, judged
  from its source and from what it renders (:class:`Probe`).

Reasoning (``<think>...</think>`` and the like) is split by the shared :func:`split_reasoning`
helper with the format's markers, before tool calls are looked for in the rest.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Callable, Iterable

__all__ = ["ToolCall", "ChatMessage", "ParseOptions", "GrammarPlan", "ToolSpec", "ToolChoice",
           "Probe", "ChatFormat", "FormatError", "split_reasoning", "split_reasoning_at_call", "is_prefix_of",
           "held_back_prefix", "REASONING_FORMATS"]

REASONING_FORMATS = ("none", "deepseek", "deepseek-legacy", "auto")


class FormatError(ValueError):
    """A request's tools or tool_choice cannot be served (the message is for the client: 400)."""


@dataclass
class ToolCall:
    name: str
    arguments: str = ""      # JSON text of an object; while streaming, a prefix of the final text
    id: str = ""             # an id the model wrote (Mistral, Kimi...); "" -> the route assigns one


@dataclass
class ChatMessage:
    content: str = ""
    reasoning_content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)

    def copy(self) -> "ChatMessage":
        return ChatMessage(self.content, self.reasoning_content,
                           [dataclasses.replace(c) for c in self.tool_calls])


@dataclass(frozen=True)
class ParseOptions:
    reasoning_format: str = "auto"        # none | deepseek | deepseek-legacy | auto
    thinking_forced_open: bool = False    # the prompt already opened the reasoning block
    parse_tool_calls: bool = True         # False when no tools were given or tool_choice "none"
    tool_names: frozenset = frozenset()   # the request's function names (empty: accept any)
    # name -> the function's parameters JSON Schema, for formats whose argument values are
    # raw text to be typed by the schema (Qwen3-Coder's XML); empty: values are guessed
    tool_schemas: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ToolSpec:
    """One function tool of a request, validated."""
    name: str
    description: str
    parameters: dict                      # a JSON Schema object ({"type": "object"} when absent)


@dataclass(frozen=True)
class ToolChoice:
    mode: str                             # "auto" | "required" | "none" | "named"
    name: str = ""                        # the function, when mode is "named"


@dataclass
class GrammarPlan:
    gbnf: str
    lazy: bool = False
    # Regexes (ECMAScript) over all the text generated so far, as libllama applies them at
    # this commit: searched anywhere, except a pattern written ^...$, which must match the
    # whole text; when one matches, the grammar starts at its first non-empty capture group.
    # Example: "(<tool_call>)" (see grammar.trigger_anywhere). Keep them simple: no
    # leading [\s\S]*, which libstdc++'s recursive matcher pays for on long outputs.
    trigger_patterns: list[str] = field(default_factory=list)
    # Markers that start the grammar as soon as the model emits them; those that are single
    # tokens become libllama trigger tokens, the others are turned into trigger patterns.
    trigger_words: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Probe:
    """What a chat template is and what it renders, for format detection."""
    source: str                 # the Jinja source
    plain: str                  # [user] + generation prompt, no tools
    with_tools: str             # same, with one tool given ("" if the template raised)
    with_call: str              # user, assistant calling the tool, tool result, user ("" if raised)
    generation_prompt: str      # what add_generation_prompt appends (the suffix of `plain`)


class ChatFormat:
    """Base class. Subclasses set ``name`` and the markers, and override what differs."""
    name = "content-only"
    reasoning_start = "<think>"
    reasoning_end = "</think>"
    # Whether the template wants tool_calls[].function.arguments as an object (most) or as
    # the JSON string OpenAI clients send.
    arguments_as_object = True
    # Control tokens whose text the parser needs to see (detokenize them as text).
    needs_special_tokens = False
    # Whether the template knows the reasoning markers (set at detection: a Qwen 2.5
    # template shares Qwen 3's format but never thinks). Full tool grammars let the model
    # write a reasoning block first only when it does.
    template_thinks = True

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        return False

    def parse(self, text: str, partial: bool, opts: ParseOptions) -> ChatMessage:
        reasoning, rest = split_reasoning(text, partial, opts, self.reasoning_start, self.reasoning_end)
        return ChatMessage(content=rest, reasoning_content=reasoning)

    def tool_grammar(self, tools: list[ToolSpec], choice: ToolChoice, parallel: bool,
                     single_token: Callable[[str], bool]) -> GrammarPlan | None:
        return None

    # True for a format that describes the tools to the model itself (in the messages, see
    # ``generic.py``) instead of handing them to the template.
    describes_tools = False

    def prepare_messages(self, messages: list[dict], tools: list[ToolSpec], choice: ToolChoice) -> list[dict]:
        """The messages to render (a format that describes tools adds them here)."""
        return messages


def held_back_prefix(text: str, markers: Iterable[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``markers``
    (what a streaming parser must hold back: it may be the start of a marker)."""
    best = 0
    for m in markers:
        for k in range(min(len(m) - 1, len(text)), best, -1):
            if text.endswith(m[:k]):
                best = k
                break
    return best


def split_reasoning(text: str, partial: bool, opts: ParseOptions, start: str, end: str) -> tuple[str, str]:
    """(reasoning, the rest). ``reasoning_format`` "none" keeps everything as content; with
    "deepseek-legacy" the rest keeps the raw block in front too (llama-server's legacy mode).

    A block is recognised when the text starts with ``start`` (after whitespace) or when the
    prompt opened it (``thinking_forced_open``). An unclosed block is all reasoning."""
    if opts.reasoning_format == "none" or not start:
        return "", text
    body = text
    if not opts.thinking_forced_open:
        stripped = text.lstrip()
        if stripped.startswith(start):
            body = stripped[len(start):]
        elif partial and start.startswith(stripped):
            return "", ""            # may still become the opening marker
        else:
            return "", text
    i = body.find(end)
    if i < 0:
        keep = held_back_prefix(body, [end]) if partial else 0
        reasoning = body[:len(body) - keep] if keep else body
        return reasoning.strip(), ""            # trailing space held back while streaming
    reasoning = body[:i].strip()
    rest = body[i + len(end):].lstrip()
    if opts.reasoning_format == "deepseek-legacy":
        rest = text[:len(text) - len(body)] + body[:i + len(end)] + rest if not opts.thinking_forced_open \
            else body[:i + len(end)] + rest
    return reasoning, rest


def split_reasoning_at_call(text: str, partial: bool, opts: ParseOptions, start: str, end: str,
                            first_call: Callable[[str, bool], int]) -> tuple[str, str]:
    """:func:`split_reasoning`, plus the rule for tool calls inside a reasoning block:

    - inside a block that closes, everything stays reasoning;
    - if the block never closes and a complete, well-formed call to one of the request's
      tools appears in it, the block ends there: the call and what follows are parsed as
      the rest (this is what a lazy tool grammar triggered inside the reasoning produces).

    ``first_call(body, partial)`` (the format's) returns where that call starts in the
    block's body, or -1. While streaming it returns where a call *may* start (a block that
    is or may become a call, or a trailing marker prefix): reasoning stops growing there
    until the text says which it is, or until the end (a block may still close after a
    complete call), so that a partial parse stays a prefix of the final one."""
    reasoning, rest = split_reasoning(text, partial, opts, start, end)
    if rest or not opts.parse_tool_calls or opts.reasoning_format == "none" or not start:
        return reasoning, rest
    head, body = "", text
    if not opts.thinking_forced_open:
        stripped = text.lstrip()
        if not stripped.startswith(start):
            return reasoning, rest
        head = text[:len(text) - len(stripped)] + start
        body = stripped[len(start):]
    if end in body:
        return reasoning, rest
    i = first_call(body, partial)
    if i < 0:
        return reasoning, rest
    if partial:
        return body[:i].strip(), ""
    if opts.reasoning_format == "deepseek-legacy":
        return body[:i].strip(), head + body
    return body[:i].strip(), body[i:]


def is_prefix_of(a: ChatMessage, b: ChatMessage) -> bool:
    """Whether ``a`` (a partial parse) can grow into ``b``: the streaming contract."""
    if not b.content.startswith(a.content) or not b.reasoning_content.startswith(a.reasoning_content):
        return False
    if len(a.tool_calls) > len(b.tool_calls):
        return False
    for x, y in zip(a.tool_calls, b.tool_calls):
        if x.name != y.name or not y.arguments.startswith(x.arguments) or (x.id and x.id != y.id):
            return False
    return True


def arguments_json(value) -> str:
    """Arguments as the JSON text OpenAI sends (compact, non-ASCII kept)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
