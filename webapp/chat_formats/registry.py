"""Which format a chat template speaks: probe it, then ask each format in turn.

:func:`probe_template` renders the template three ways (plain, with a tool, with a tool call
and its result in the history); :func:`detect_format` returns the first format in
``FORMATS`` whose ``detect`` accepts the probe, else the generic format (tools described in
the system message, see ``generic.py``). Order matters: more specific formats come first.
"""
from __future__ import annotations

import importlib
import logging

from .base import ChatFormat, Probe

__all__ = ["probe_template", "detect_format", "format_by_name", "FORMAT_MODULES"]

logger = logging.getLogger(__name__)

# module -> the ChatFormat subclasses it defines (its FORMATS list), most specific first
FORMAT_MODULES = ["gpt_oss", "qwen3_coder", "functionary", "command_r", "granite", "deepseek",
                  "mistral", "llama3", "hermes", "generic"]

PROBE_TOOL = {"type": "function", "function": {
    "name": "probe_weather", "description": "Get the weather.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PROBE_CALL = {"id": "call_probe0001", "type": "function",
              "function": {"name": "probe_weather", "arguments": {"city": "Paris"}}}


def _formats() -> list[type[ChatFormat]]:
    out = []
    for name in FORMAT_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
            continue
        out.extend(module.FORMATS)
    return out


def _render(template, messages, tools=None, add_generation_prompt=True, **extra) -> str:
    from ..chat_template import ChatTemplateError
    try:
        return template.render(messages, add_generation_prompt=add_generation_prompt, tools=tools, **extra)
    except ChatTemplateError:
        return ""


def probe_template(template) -> Probe:
    user = [{"role": "user", "content": "Hello"}]
    plain = _render(template, user)
    without = _render(template, user, add_generation_prompt=False)
    generation_prompt = plain[len(without):] if plain.startswith(without) else ""
    with_tools = _render(template, user, tools=[PROBE_TOOL])
    history = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": "", "tool_calls": [PROBE_CALL]},
               {"role": "tool", "tool_call_id": PROBE_CALL["id"], "name": "probe_weather",
                "content": "sunny"},
               {"role": "user", "content": "Thanks"}]
    with_call = _render(template, history, tools=[PROBE_TOOL])
    return Probe(template.source, plain, with_tools, with_call, generation_prompt)


def detect_format(template) -> ChatFormat:
    probe = probe_template(template)
    for cls in _formats():
        try:
            if cls.detect(probe):
                fmt = cls()
                fmt.template_thinks = bool(fmt.reasoning_start) and fmt.reasoning_start in probe.source
                return fmt
        except Exception:       # a detector's bug must not stop the server; log and go on
            logger.exception("chat format detector %s failed", cls.__name__)
    return ChatFormat()


def format_by_name(name: str) -> ChatFormat:
    for cls in _formats():
        if cls.name == name:
            return cls()
    raise KeyError(name)
