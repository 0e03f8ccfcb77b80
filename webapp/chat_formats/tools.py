"""A chat request's ``tools``, ``tool_choice`` and ``parallel_tool_calls``, validated.

Errors are :class:`FormatError` with a message naming the field (the route answers 400).
"""
from __future__ import annotations

import re

from .base import FormatError, ToolChoice, ToolSpec
from .grammar import check_tool_schema

__all__ = ["parse_tools", "parse_tool_choice", "parse_parallel"]

_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def parse_tools(value) -> list[ToolSpec]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise FormatError("'tools' must be an array")
    out: list[ToolSpec] = []
    seen: set[str] = set()
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise FormatError(f"{where} must be an object")
        if tool.get("type", "function") != "function":
            raise FormatError(f"{where}.type must be 'function', got {tool.get('type')!r}")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise FormatError(f"{where}.function must be an object with a 'name'")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise FormatError(f"{where}.function.name must be 1-128 letters, digits, '_', '-', '.' or ':'")
        if name in seen:
            raise FormatError(f"{where}.function.name {name!r} is given twice")
        seen.add(name)
        description = fn.get("description", "")
        if description is None:
            description = ""
        if not isinstance(description, str):
            raise FormatError(f"{where}.function.description must be a string")
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise FormatError(f"{where}.function.parameters must be a JSON Schema object")
        if params.get("type", "object") != "object":
            raise FormatError(f"{where}.function.parameters must describe an object (type 'object')")
        check_tool_schema(params, f"{where}.function.parameters")
        out.append(ToolSpec(name, description, params))
    return out


def parse_tool_choice(value, tools: list[ToolSpec]) -> ToolChoice:
    """"auto" (default with tools), "none" (default without), "required", or
    ``{"type": "function", "function": {"name": ...}}`` (honoured: that function is called)."""
    if value is None:
        return ToolChoice("auto" if tools else "none")
    if isinstance(value, str):
        if value not in ("auto", "none", "required"):
            raise FormatError(f"'tool_choice' must be 'auto', 'none', 'required' or "
                              f"{{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {value!r}")
        if value == "required" and not tools:
            raise FormatError("'tool_choice' is 'required' but no 'tools' were given")
        return ToolChoice(value if tools or value == "none" else "none")
    if isinstance(value, dict):
        fn = value.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if value.get("type") != "function" or not isinstance(name, str):
            raise FormatError("'tool_choice' as an object must be {\"type\": \"function\", "
                              "\"function\": {\"name\": ...}}")
        if name not in {t.name for t in tools}:
            known = ", ".join(t.name for t in tools) or "none"
            raise FormatError(f"'tool_choice' names function {name!r}, which is not in 'tools' "
                              f"(given: {known})")
        return ToolChoice("named", name)
    raise FormatError("'tool_choice' must be a string or an object")


def parse_parallel(value) -> bool:
    if value is None:
        return True
    if not isinstance(value, bool):
        raise FormatError("'parallel_tool_calls' must be a boolean")
    return value
