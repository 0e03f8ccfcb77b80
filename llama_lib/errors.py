"""Typed errors for everything that crosses the libllama boundary.

Hierarchy::

    LlamaError                      base; carries ``code`` (native return code or None)
    |                               and ``log_tail`` (libllama's last log lines)
    +-- LibraryNotFound             no libllama where we looked
    +-- ModelLoadError              llama_model_load_from_file returned NULL
    +-- ContextError                llama_init_from_model returned NULL
    +-- TokenizeError               llama_tokenize / detokenize failed
    +-- DecodeError                 llama_decode returned an error (< 0 or > 1)
    |   +-- NoKvSlotError           llama_decode returned 1: no room in the KV cache (recoverable)
    |   +-- DecodeAborted           llama_decode returned 2: aborted by the abort callback
    +-- StateError                  sequence state save/load failed
    +-- AdapterError                LoRA adapter failed to load or apply
    +-- GrammarError                a grammar libllama's parser rejected
"""
from __future__ import annotations

from ._raw import MissingSymbolError

__all__ = [
    "LlamaError", "LibraryNotFound", "ModelLoadError", "ContextError", "TokenizeError",
    "DecodeError", "NoKvSlotError", "DecodeAborted", "StateError", "AdapterError",
    "GrammarError", "MissingSymbolError",
]


class LlamaError(RuntimeError):
    def __init__(self, message: str, code: int | None = None, log_tail: list[str] | None = None):
        if log_tail is None:
            from ._log import recent_lines
            log_tail = recent_lines()
        self.code = code
        self.log_tail = list(log_tail)
        detail = f" (code {code})" if code is not None else ""
        super().__init__(message + detail)

    def describe(self) -> str:
        """The message plus libllama's last error/warning lines, for logs and 500 bodies."""
        tail = [line for line in self.log_tail if line.startswith(("E ", "W "))][-3:]
        return str(self) + ("" if not tail else ": " + " | ".join(t[2:] for t in tail))


class LibraryNotFound(LlamaError):
    pass


class ModelLoadError(LlamaError):
    pass


class ContextError(LlamaError):
    pass


class TokenizeError(LlamaError):
    pass


class DecodeError(LlamaError):
    pass


class NoKvSlotError(DecodeError):
    pass


class DecodeAborted(DecodeError):
    pass


class StateError(LlamaError):
    pass


class AdapterError(LlamaError):
    pass


class GrammarError(LlamaError):
    pass


def decode_error(code: int) -> DecodeError:
    """The exception for a non-zero llama_decode return code."""
    if code == 1:
        return NoKvSlotError("no KV cache slot for the batch", code)
    if code == 2:
        return DecodeAborted("decode aborted", code)
    return DecodeError("llama_decode failed", code)
