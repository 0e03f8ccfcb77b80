"""The server-wide system prompt, as llama-server once had it: ``-spf FILE`` and the
``system_prompt`` field of ``POST /completion``.

Both take the seed's JSON object ``{"prompt": ..., "anti_prompt": ..., "assistant_name": ...}``
(a file may also wrap it as ``{"system_prompt": {...}}``, as the seed's README example did;
the request field may also be a plain string, which replaces only the prompt). ``/props``
shows ``system_prompt``, ``user_name`` (the anti-prompt) and ``assistant_name``.

How it is used:
- Every generation request (not embeddings) is evaluated as ``system tokens + its own
  tokens``. The system prompt is tokenized with BOS when the model adds one; the request's
  own leading BOS is then dropped (the seed's rule). ``n_keep`` counts from the end of the
  system prompt, so context shifts and prompt truncation never cut into it.
- The prompt is evaluated once and copied into every idle slot (``Engine.share_prefix``),
  and the scheduler keeps it in a slot's cache even for ``cache_prompt: false``. Nothing
  depends on that copy for correctness: a slot that lost the prefix (an embedding request,
  a slot restore, a busy slot during a change) evaluates it again as an ordinary prefix.
- Changing it through a request clears the idle slots and evaluates the new one; requests
  already queued keep the prompt they were submitted with.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading

from .errors import BadRequest

__all__ = ["SystemPromptSpec", "SystemPrompt", "SystemPromptError", "parse_spec", "load_file",
           "update_from_request"]

logger = logging.getLogger(__name__)

_KEYS = ("prompt", "anti_prompt", "assistant_name")


class SystemPromptError(ValueError):
    """A system prompt that cannot be used (bad JSON shape, too long for the context)."""


@dataclasses.dataclass(frozen=True)
class SystemPromptSpec:
    prompt: str = ""
    anti_prompt: str = ""
    assistant_name: str = ""


def parse_spec(value, current: SystemPromptSpec | None = None) -> SystemPromptSpec:
    if isinstance(value, str):
        return dataclasses.replace(current or SystemPromptSpec(), prompt=value)
    if not isinstance(value, dict):
        raise SystemPromptError("the system prompt must be a string or an object "
                                '{"prompt", "anti_prompt", "assistant_name"}')
    if set(value) == {"system_prompt"} and isinstance(value["system_prompt"], dict):
        value = value["system_prompt"]
    unknown = sorted(set(value) - set(_KEYS))
    if unknown:
        raise SystemPromptError(f"unknown system prompt field(s): {', '.join(unknown)}")
    for key in _KEYS:
        if not isinstance(value.get(key, ""), str):
            raise SystemPromptError(f"system prompt field '{key}' must be a string")
    return SystemPromptSpec(**{k: value.get(k, "") for k in _KEYS})


def load_file(path: str) -> SystemPromptSpec:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise SystemPromptError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SystemPromptError(f"{path} is not valid JSON: {exc}") from None
    return parse_spec(data)


class SystemPrompt:
    """The current system prompt and its tokens; shared by all routes through ServerState."""

    def __init__(self, spec: SystemPromptSpec | None = None):
        self.spec = spec or SystemPromptSpec()
        self.tokens: list[int] = []
        self._lock = threading.Lock()

    def activate(self, engine) -> None:
        """Tokenize and evaluate the current spec (once the engine exists). Raises
        SystemPromptError when it does not fit a slot's context."""
        if self.spec.prompt:
            self._install(engine, self.spec)

    def change(self, engine, spec: SystemPromptSpec) -> None:
        if spec != self.spec:
            self._install(engine, spec)

    def _install(self, engine, spec: SystemPromptSpec) -> None:
        tokens = engine.vocab.tokenize(spec.prompt, add_special=True, parse_special=True) \
            if spec.prompt else []
        # a request needs room for at least a few tokens of its own after the system prompt
        if len(tokens) > engine.n_ctx_slot // 2:
            raise SystemPromptError(f"the system prompt ({len(tokens)} tokens) must fit in half "
                                    f"of a slot's context ({engine.n_ctx_slot} tokens)")
        with self._lock:
            self.spec, self.tokens = spec, tokens
        # Queued before any request submitted after this point (the inbox is FIFO); nobody
        # waits for it, so it logs its own failure.
        engine.call(lambda e: _share(e, tokens))

    def apply(self, vocab, tokens: list[int], options):
        """The request's tokens behind the system prompt, and its options with n_keep
        counted from the system prompt's end."""
        with self._lock:
            prefix = self.tokens
        if not prefix:
            return tokens, options
        if vocab.add_bos and tokens and tokens[0] == vocab.bos:
            tokens = tokens[1:]
        if options.n_keep >= 0:
            options = dataclasses.replace(options, n_keep=options.n_keep + len(prefix))
        return prefix + tokens, options

    # what /props shows
    @property
    def prompt(self) -> str:
        return self.spec.prompt

    @property
    def user_name(self) -> str:
        return self.spec.anti_prompt

    @property
    def assistant_name(self) -> str:
        return self.spec.assistant_name


def _share(engine, tokens: list[int]) -> int:
    """Engine thread. A failure leaves the slots empty, which is still correct (the prefix
    is then evaluated with each slot's first request)."""
    try:
        n = engine.share_prefix(tokens)
    except Exception as exc:
        logger.error("evaluating the system prompt failed: %s", exc)
        return 0
    if tokens:
        logger.info("system prompt: %d tokens evaluated once, shared by %d idle slot(s)", len(tokens), n)
    return n


def update_from_request(state, engine, body: dict) -> None:
    """The seed's ``system_prompt`` request field: it replaces the server-wide prompt."""
    value = body.get("system_prompt")
    if value is None:
        return
    try:
        spec = parse_spec(value, state.system.spec)
        state.system.change(engine, spec)
    except SystemPromptError as exc:
        raise BadRequest(f"'system_prompt': {exc}") from None
