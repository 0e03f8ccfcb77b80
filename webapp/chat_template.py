"""Turn OpenAI chat messages into one prompt string with a Jinja chat template.

The template is the model's ``tokenizer.chat_template`` unless the operator
picks another (see :func:`resolve_template`). Templates run the way Hugging
Face ``transformers`` runs them, so templates written for it work here:

- Jinja's ``ImmutableSandboxedEnvironment`` with ``trim_blocks`` and
  ``lstrip_blocks``, plus the ``loopcontrols`` extension (``{% break %}``).
- Variables: ``messages``, ``tools``, ``add_generation_prompt``,
  ``bos_token``, ``eos_token`` and any extra keyword given to ``render``.
- Functions: ``raise_exception(msg)`` and ``strftime_now(fmt)`` (local time).
- ``tojson`` is Hugging Face's: no HTML escaping, non-ASCII kept, and the
  ``indent``/``separators``/``sort_keys`` options of ``json.dumps``.
- ``{% generation %}...{% endgeneration %}`` (a training-mask marker in some
  templates) renders its body unchanged.

One deliberate difference: reading an unsafe attribute (``__class__``,
``__globals__``, ``list.append`` in the immutable sandbox...) raises at once.
The stock sandbox hands back an Undefined that prints as an empty string,
which would let a probing template fail silently instead of loudly.

Every failure, from a syntax error to a ``TypeError`` inside the template,
surfaces as :class:`ChatTemplateError`, whose message is meant for the client
(the server answers it with HTTP 400).

:func:`normalize_messages` validates a request's ``messages`` first; its
output is what :meth:`ChatTemplate.render` expects. After it, ``content`` is
always a string, so templates can concatenate it without checks.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from webapp._builtin_templates import BUILTIN_TEMPLATES

__all__ = [
    "BUILTIN_TEMPLATES",
    "ChatTemplate",
    "ChatTemplateError",
    "normalize_messages",
    "resolve_template",
]


class ChatTemplateError(ValueError):
    """A chat template could not be loaded or rendered, or the messages are invalid.

    The message is safe to show to the client.
    """


# --- choosing the template -------------------------------------------------------

# A --chat-template value that looks like a bare name is never a useful Jinja
# template (it would render as that constant text), so a typo such as
# "llama-3" fails loudly instead of becoming the whole prompt.
_NAME_LIKE = re.compile(r"[A-Za-z0-9._-]+")


def resolve_template(flag: str | None, file_path: str | None, model_template: str | None) -> str:
    """Return the template source to use.

    Precedence: the contents of ``--chat-template-file``; else ``--chat-template``
    (a built-in name, else the Jinja source itself); else the model's
    ``tokenizer.chat_template``; else the ``chatml`` built-in.
    """
    if file_path:
        try:
            with open(file_path, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ChatTemplateError(f"cannot read chat template file {file_path!r}: {exc}") from exc
    if flag:
        if flag in BUILTIN_TEMPLATES:
            return BUILTIN_TEMPLATES[flag]
        if _NAME_LIKE.fullmatch(flag):
            known = ", ".join(BUILTIN_TEMPLATES)
            raise ChatTemplateError(f"unknown built-in chat template {flag!r}; known names: {known}")
        return flag
    if model_template:
        return model_template
    return BUILTIN_TEMPLATES["chatml"]


# --- the Jinja environment -------------------------------------------------------


class _StrictSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, but an unsafe attribute raises instead of going quiet."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


class _GenerationTag(Extension):
    """``{% generation %}`` marks assistant text for training masks; here it is a no-op."""

    tags = {"generation"}

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: str) -> NoReturn:
    raise ChatTemplateError(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys,
        default=_json_default,
    )


def _json_default(value: Any) -> Any:
    """Jinja's lazy sequences (``map(...)``, ``select(...)``, generators) serialize as lists."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return list(value)


def _make_environment() -> jinja2.Environment:
    env = _StrictSandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.loopcontrols", _GenerationTag],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


# Environments are safe to share between threads once configured.
_ENV = _make_environment()


# --- compiling and rendering -----------------------------------------------------


class ChatTemplate:
    """One compiled chat template plus the special tokens it may refer to."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = _ENV.from_string(
                source, globals={"bos_token": bos_token, "eos_token": eos_token}
            )
        except jinja2.TemplateSyntaxError as exc:
            message = f"chat template syntax error on line {exc.lineno}: {exc.message}"
            raise ChatTemplateError(message) from exc

    def render(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        tools: list[dict] | None = None,
        **extra: Any,
    ) -> str:
        """Render ``messages`` (as returned by :func:`normalize_messages`) to a prompt.

        ``extra`` keywords become template variables too (for example
        ``enable_thinking`` or ``date_string``, which some templates read).
        """
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                tools=tools,
                **extra,
            )
        except ChatTemplateError:
            raise
        # The template is foreign code: whatever it trips over (sandbox refusals,
        # undefined values, bad arithmetic, runaway recursion) is a bad request for
        # this template, not a server crash.
        except Exception as exc:
            raise ChatTemplateError(f"error rendering chat template: {type(exc).__name__}: {exc}") from exc


# --- validating messages ---------------------------------------------------------

_ROLES = ("system", "user", "assistant", "tool")
# OpenAI's newer name for the system role; templates only know "system".
_ROLE_ALIASES = {"developer": "system"}
# Optional fields kept for templates that render tool calls, with their JSON type.
_OPTIONAL_FIELDS = (
    ("name", str, "a string"),
    ("tool_call_id", str, "a string"),
    ("tool_calls", list, "an array"),
    ("reasoning_content", str, "a string"),   # past thoughts, for templates that render them
)


def normalize_messages(messages: Any) -> list[dict]:
    """Validate an OpenAI ``messages`` array and return it in the shape templates expect.

    Each message becomes ``{"role", "content"}`` plus ``name``, ``tool_call_id``
    and ``tool_calls`` where given; other fields are dropped.

    - ``role`` is system, user, assistant or tool; ``developer`` becomes system.
    - ``content`` is a string, or an array of ``{"type": "text", "text": ...}``
      parts joined with newlines (as llama.cpp does), or null on an assistant
      message (it becomes ``""``, typically one that only carries tool calls).

    Raises :class:`ChatTemplateError` naming the offending field, such as
    ``messages[2].role``.
    """
    if not isinstance(messages, list) or not messages:
        raise ChatTemplateError("messages must be a non-empty array")
    return [_normalize_message(message, f"messages[{i}]") for i, message in enumerate(messages)]


def _normalize_message(message: Any, where: str) -> dict:
    if not isinstance(message, dict):
        raise ChatTemplateError(f"{where} must be an object, got {_json_type(message)}")
    role = message.get("role")
    if isinstance(role, str):
        role = _ROLE_ALIASES.get(role, role)
    if role not in _ROLES:
        got = repr(role) if isinstance(role, str) else _json_type(role)
        raise ChatTemplateError(
            f"{where}.role must be one of 'system', 'user', 'assistant', 'tool' or 'developer', got {got}"
        )
    normalized = {"role": role, "content": _normalize_content(message.get("content"), role, where)}
    for field, kind, described in _OPTIONAL_FIELDS:
        value = message.get(field)
        if value is None:
            continue
        if not isinstance(value, kind):
            raise ChatTemplateError(f"{where}.{field} must be {described}, got {_json_type(value)}")
        normalized[field] = value
    for j, call in enumerate(normalized.get("tool_calls", ())):
        if not isinstance(call, dict):
            raise ChatTemplateError(f"{where}.tool_calls[{j}] must be an object, got {_json_type(call)}")
    return normalized


def _normalize_content(content: Any, role: str, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None and role == "assistant":
        return ""
    if isinstance(content, list):
        return "\n".join(_text_of_part(part, f"{where}.content[{j}]") for j, part in enumerate(content))
    expected = "a string or an array of content parts"
    if role == "assistant":
        expected += " or null"
    raise ChatTemplateError(f"{where}.content must be {expected}, got {_json_type(content)}")


def _text_of_part(part: Any, where: str) -> str:
    if not isinstance(part, dict):
        raise ChatTemplateError(f"{where} must be an object, got {_json_type(part)}")
    kind = part.get("type")
    if kind != "text":
        shown = repr(kind) if isinstance(kind, str) else _json_type(kind)
        raise ChatTemplateError(
            f"{where}.type {shown} is not supported; only 'text' content parts are accepted"
        )
    text = part.get("text")
    if not isinstance(text, str):
        raise ChatTemplateError(f"{where}.text must be a string, got {_json_type(text)}")
    return text


def _json_type(value: Any) -> str:
    """Name a decoded JSON value's type the way the client wrote it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
