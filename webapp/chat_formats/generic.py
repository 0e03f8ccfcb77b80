"""Tool calls for chat templates with no tool support of their own (SmolLM2's ChatML, Gemma,
Phi...): the server describes the tools to the model and reads calls in a fixed format.

What the model is told (a system message: appended to the conversation's own system
message, or a new one in front; :func:`fold_system_message` moves it into the first user
message for templates that refuse a system role):

    # Tools

    You can call the functions below. Each one is given as JSON: its name, its
    description, and a JSON Schema of its arguments.

    {"name": "get_weather", "description": "Get the weather.", "parameters": {...}}

    To call a function, write a block like this, with the arguments as a JSON object
    that follows the function's schema:
    <tool_call>{"name": "function_name", "arguments": {"argument": "value"}}</tool_call>
    To call several functions, write one block for each. Write nothing after the last
    block: the results come back in the next message, each one between
    <tool_response name="function_name"> and </tool_response>.

followed by one line from ``tool_choice``: "auto" says to call a function only when it helps,
"required" that a call must come now, a named function that this one must be called now.

What the model writes: one or more ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
blocks (``"parameters"`` is read for ``"arguments"`` too), text before them being content.
The tool grammars force exactly this syntax.

History: such templates drop or refuse ``tool_calls`` and ``tool`` messages, so the server
rewrites them as text before rendering: an assistant message's calls become the same
``<tool_call>`` blocks after its content, and ``tool`` messages become a user message of
``<tool_response name="...">...</tool_response>`` blocks (merged with the user message next
to it, as templates often want user and assistant turns to alternate).
"""
from __future__ import annotations

import json

from .base import ParseOptions, Probe, ToolChoice, ToolSpec
from .grammar import GrammarBuilder
from .hermes import json_block
from .jsonscan import Block, CallBlockFormat, selected_tools

__all__ = ["GenericFormat", "FORMATS", "describe_tools", "fold_system_message"]

OPEN, CLOSE = "<tool_call>", "</tool_call>"

_INTRO = ("# Tools\n\nYou can call the functions below. Each one is given as JSON: its name, its "
          "description, and a JSON Schema of its arguments.\n\n")
_HOW = ("To call a function, write a block like this, with the arguments as a JSON object that "
        "follows the function's schema:\n"
        '<tool_call>{"name": "function_name", "arguments": {"argument": "value"}}</tool_call>\n'
        "To call several functions, write one block for each. Write nothing after the last block: "
        "the results come back in the next message, each one between "
        '<tool_response name="function_name"> and </tool_response>.\n')


def describe_tools(tools: list[ToolSpec], choice: ToolChoice) -> str:
    """The system-message text that tells the model about ``tools``."""
    listed = "\n".join(json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters},
                                  ensure_ascii=False) for t in tools)
    if choice.mode == "required":
        rule = "You must call at least one function now."
    elif choice.mode == "named":
        rule = f'You must call the function "{choice.name}" now.'
    else:
        rule = "Call a function only when it helps you answer; otherwise answer directly."
    return _INTRO + listed + "\n\n" + _HOW + rule


def _call_text(call: dict) -> str:
    fn = call.get("function") or {}
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            pass
    payload = {"name": fn.get("name", ""), "arguments": args}
    return OPEN + json.dumps(payload, ensure_ascii=False) + CLOSE


def _history_as_text(messages: list[dict]) -> list[dict]:
    out: list[dict] = []
    names: dict[str, str] = {}         # call id -> function name, for the results
    merge = False                      # whether the last user message in `out` may take more
    for m in messages:
        role = m.get("role")
        if role == "assistant" and m.get("tool_calls"):
            for call in m["tool_calls"]:
                names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
            blocks = "\n".join(_call_text(c) for c in m["tool_calls"])
            content = m.get("content") or ""
            rest = {k: v for k, v in m.items() if k not in ("tool_calls", "content")}
            out.append({**rest, "content": f"{content}\n{blocks}" if content else blocks})
            merge = False
        elif role == "tool":
            name = m.get("name") or names.get(m.get("tool_call_id", ""), "")
            text = f'<tool_response name="{name}">\n{m.get("content", "")}\n</tool_response>'
            if out and merge and out[-1]["role"] == "user":
                out[-1] = {**out[-1], "content": out[-1]["content"] + "\n" + text}
            else:
                out.append({"role": "user", "content": text})
            merge = True
        elif role == "user" and merge and out and out[-1]["role"] == "user":
            out[-1] = {**out[-1], "content": out[-1]["content"] + "\n\n" + (m.get("content") or "")}
            merge = False
        else:
            out.append(m)
            merge = False
    return out


def fold_system_message(messages: list[dict]) -> list[dict]:
    """For a template that refuses the system role (Gemma 2): the leading system message
    moved to the front of the first user message."""
    if not messages or messages[0].get("role") != "system":
        return messages
    system, rest = messages[0].get("content") or "", messages[1:]
    if rest and rest[0].get("role") == "user":
        return [{**rest[0], "content": f"{system}\n\n{rest[0].get('content') or ''}"}] + rest[1:]
    return [{"role": "user", "content": system}] + rest


class GenericFormat(CallBlockFormat):
    name = "generic"
    arguments_as_object = True
    # a vocabulary may have <tool_call> as a control token: its text must reach the parser
    needs_special_tokens = True
    describes_tools = True
    openers = (OPEN,)

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        return True

    def prepare_messages(self, messages: list[dict], tools: list[ToolSpec], choice: ToolChoice) -> list[dict]:
        out = _history_as_text(messages)
        if not tools or choice.mode == "none":
            return out
        text = describe_tools(tools, choice)
        if out and out[0].get("role") == "system":
            first = out[0].get("content") or ""
            return [{**out[0], "content": f"{first}\n\n{text}" if first else text}] + out[1:]
        return [{"role": "system", "content": text}] + out

    def block(self, text: str, i: int, eof: bool, opts: ParseOptions) -> Block:
        return json_block(text, i, eof, OPEN, CLOSE, args_keys=("arguments", "parameters"))

    def tool_grammar(self, tools, choice, parallel, single_token):
        chosen = selected_tools(tools, choice)
        if not chosen:
            return None
        # the markers as plain text: the model was told to spell them, whatever the vocabulary
        g = GrammarBuilder()
        calls = [g.rule(g.fresh(f"{t.name}-block"), f"{g.marker(OPEN)} ws {g.call_object(t)} ws {g.marker(CLOSE)}")
                 for t in chosen]
        return self.plan(g, calls, choice, parallel, words=[OPEN])


FORMATS = [GenericFormat]
