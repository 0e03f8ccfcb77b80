"""Cohere Command R7B: reasoning, answer and calls in control-token brackets::

    <|START_THINKING|>...<|END_THINKING|>
    <|START_ACTION|>[
        {"tool_call_id": "0", "tool_name": "NAME", "parameters": {...}}
    ]<|END_ACTION|>

or ``<|START_RESPONSE|>...<|END_RESPONSE|>`` for an answer (its brackets are dropped from
the content). With thinking off, the template closes an empty thinking block in the prompt
itself. The model's ``tool_call_id`` counts calls within the conversation ("0", "1"...) and
is not unique, so calls get the route's ids (the template maps ids back to its own count).
"""
from __future__ import annotations

from .base import ParseOptions, Probe
from .grammar import GrammarBuilder
from .granite import WrappedAnswer, call_array_block
from .jsonscan import Block, selected_tools

__all__ = ["CommandR7BFormat", "FORMATS"]

ACTION, ACTION_END = "<|START_ACTION|>", "<|END_ACTION|>"


class CommandR7BFormat(WrappedAnswer):
    name = "command-r7b"
    reasoning_start = "<|START_THINKING|>"
    reasoning_end = "<|END_THINKING|>"
    arguments_as_object = True
    needs_special_tokens = True
    openers = (ACTION,)
    wrappers = ("<|START_RESPONSE|>", "<|END_RESPONSE|>")
    end_of_turn = "<|END_OF_TURN_TOKEN|>"

    @classmethod
    def detect(cls, probe: Probe) -> bool:
        src = probe.source
        return ACTION in src and cls.reasoning_start in src and cls.wrappers[0] in src \
            and "<|START_TEXT|>" not in src

    def block(self, text: str, i: int, eof: bool, opts: ParseOptions) -> Block:
        return call_array_block(text, i, eof, ACTION, ACTION_END, ("tool_name",), ("parameters",))

    def tool_grammar(self, tools, choice, parallel, single_token):
        chosen = selected_tools(tools, choice)
        if not chosen:
            return None
        g = GrammarBuilder(single_token)
        calls = []
        for tool in chosen:
            args = g.schema(tool.parameters, f"{tool.name}-args")
            body = (f'"{{" ws {g.json_string("tool_call_id")} ws ":" ws "\\"" [0-9]{{1,3}} "\\"" ws "," ws '
                    f'{g.json_string("tool_name")} ws ":" ws {g.json_string(tool.name)} ws "," ws '
                    f'{g.json_string("parameters")} ws ":" ws {args} ws "}}"')
            calls.append(g.rule(g.fresh(f"{tool.name}-call"), body))
        g.rule("call", " | ".join(calls))
        more = ' ( ws "," ws call )*' if parallel else ""
        g.rule("action", f'{g.marker(ACTION)} "[" ws call{more} ws "]" {g.marker(ACTION_END)}')
        return self.finish_plan(g, "action", choice, [ACTION])


FORMATS = [CommandR7BFormat]
