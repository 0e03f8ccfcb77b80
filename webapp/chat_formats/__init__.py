"""Tool calls and reasoning in chat replies: one module per template family.

``base.py`` is the contract, ``registry.py`` detects a template's format, ``stream.py``
turns successive partial parses into OpenAI deltas, ``tools.py`` validates a request's
``tools`` / ``tool_choice``, and the format modules parse model output and build grammars.
"""
from .base import (ChatFormat, ChatMessage, FormatError, GrammarPlan, ParseOptions, Probe,
                   ToolCall, ToolChoice, ToolSpec)
from .registry import detect_format, format_by_name, probe_template
from .stream import MessageStream

__all__ = ["ChatFormat", "ChatMessage", "FormatError", "GrammarPlan", "ParseOptions", "Probe",
           "ToolCall", "ToolChoice", "ToolSpec", "detect_format", "format_by_name",
           "probe_template", "MessageStream"]
