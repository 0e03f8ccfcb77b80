"""Shared helpers of the chat-format tests (test_chat_formats_a.py and test_chat_formats_b.py):
the tools and options both parts use, building expected messages, loading sdist templates, the
streaming harness, comparing messages, and running tool grammars through libllama's grammar engine.
"""
from __future__ import annotations

import random
import re

from sampling.grammar import GrammarConstraint
from tests import sdist
from webapp.chat_formats.base import ChatMessage, ParseOptions, ToolCall, ToolChoice, ToolSpec, is_prefix_of
from webapp.chat_formats.stream import MessageStream
from webapp.chat_template import ChatTemplate

WEATHER = ToolSpec("get_weather", "Get the weather.", {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"]})
TIME = ToolSpec("get_time", "The time.", {"type": "object", "properties": {"tz": {"type": "string"}}})
NO_TOOLS = ParseOptions(parse_tool_calls=False)

PARIS = '{"city": "Paris"}'
UTC = '{"tz": "UTC"}'

REQUIRED, AUTO, NAMED = ToolChoice("required"), ToolChoice("auto"), ToolChoice("named", "get_time")


def msg(content="", reasoning="", calls=()):
    return ChatMessage(content, reasoning, [ToolCall(*c) for c in calls])


def load_template(name: str) -> ChatTemplate:
    return ChatTemplate(sdist.template_source(name), bos_token="<s>", eos_token="</s>")


# --- streaming harness ----------------------------------------------------------------------

def deltas_add_up(fmt, text: str, opts: ParseOptions, chunks: list[int], ids: bool = True) -> ChatMessage:
    """Push ``text`` in chunks through a MessageStream; rebuild the message from the deltas
    (with ``ids``, the streamed call ids must be the final message's)."""
    stream = MessageStream(fmt, opts)
    deltas, pos = [], 0
    for size in chunks:
        pos = min(len(text), pos + size)
        deltas += stream.push(text[:pos])
    last, final = stream.finish(text)
    deltas += last
    got = ChatMessage()
    for d in deltas:
        got.content += d.get("content", "")
        got.reasoning_content += d.get("reasoning_content", "")
        for tc in d.get("tool_calls", []):
            if tc["index"] == len(got.tool_calls):
                got.tool_calls.append(ToolCall(tc["function"]["name"], "", tc["id"] if ids else ""))
            got.tool_calls[tc["index"]].arguments += tc["function"].get("arguments", "")
    if ids:
        assert [c.id for c in got.tool_calls] == [c.id for c in final.tool_calls]
    return got


def check_streaming(fmt, text: str, opts: ParseOptions, max_chunk: int = 7, ids: bool = True) -> ChatMessage:
    """Parse ``text`` whole and as growing prefixes (each a prefix of the next and of the final
    message), then stream it in chunks of 1 and of 1 to ``max_chunk`` characters: the deltas add
    up to the final message. Returns the final message."""
    final = fmt.parse(text, False, opts)
    previous = ChatMessage()
    for k in range(len(text) + 1):
        part = fmt.parse(text[:k], True, opts)
        assert is_prefix_of(part, final), (text[:k], part, final)
        assert is_prefix_of(previous, part), (text[:k], previous, part)
        previous = part
    rng = random.Random(len(text))
    for chunks in ([1] * len(text), [rng.randint(1, max_chunk) for _ in range(len(text))]):
        got = deltas_add_up(fmt, text, opts, chunks, ids)
        assert (got.content, got.reasoning_content) == (final.content, final.reasoning_content)
        assert [(c.name, c.arguments) for c in got.tool_calls] == \
            [(c.name, c.arguments) for c in final.tool_calls]
    return final


def same(got: ChatMessage, want: ChatMessage, ids: bool = True) -> bool:
    def calls(m):
        return [(c.name, c.arguments, c.id if ids else "") for c in m.tool_calls]
    return (got.content, got.reasoning_content) == (want.content, want.reasoning_content) and calls(got) == calls(want)


# --- grammars -------------------------------------------------------------------------------

def single_token(vocab):
    return lambda text: len(vocab.tokenize(text, add_special=False, parse_special=True)) == 1


def accepts(vocab, gbnf: str, text: str, parse_special: bool = False) -> bool:
    """Feed ``text`` token by token: every token allowed, and end-of-generation after it."""
    with GrammarConstraint(vocab, gbnf) as g:
        for token in vocab.tokenize(text, add_special=False, parse_special=parse_special):
            if not g.allows(token):
                return False
            g.accept(token)
        return g.allows(vocab.eos)


def trigger_start(plan, text: str) -> int:
    """Where a lazy grammar would start in ``text``: a trigger word, or a pattern (``^...$``:
    matched against all the text, as libllama does; any other: searched anywhere) from its first
    non-empty group."""
    starts = [text.find(w) for w in plan.trigger_words if w in text]
    for pattern in plan.trigger_patterns:
        m = re.fullmatch(pattern, text) if pattern.startswith("^") and pattern.endswith("$") \
            else re.search(pattern, text)
        if m:
            groups = [m.start(i) for i in range(1, (m.lastindex or 0) + 1) if m.end(i) > m.start(i)]
            starts.append(groups[0] if groups else m.start())
    return min(starts) if starts else -1
