"""libllama's log, routed through Python logging, with a ring of recent lines for errors.

libllama calls back with fragments; GGML_LOG_LEVEL_CONT continues the previous line. A line
is emitted when it ends with a newline. The callback object is kept alive here for as long
as libllama may call it.
"""
from __future__ import annotations

import collections
import logging
import threading

from . import _raw

logger = logging.getLogger("llama_lib.native")

_LEVELS = {
    _raw.GGML_LOG_LEVEL_DEBUG: logging.DEBUG,
    _raw.GGML_LOG_LEVEL_INFO: logging.DEBUG,  # libllama's info is chatty: our debug
    _raw.GGML_LOG_LEVEL_WARN: logging.WARNING,
    _raw.GGML_LOG_LEVEL_ERROR: logging.ERROR,
}
_TAGS = {logging.DEBUG: "D", logging.WARNING: "W", logging.ERROR: "E"}

_recent: collections.deque[str] = collections.deque(maxlen=32)
_lock = threading.Lock()
_pending = {"level": logging.DEBUG, "text": ""}


def recent_lines() -> list[str]:
    """The last lines libllama logged, each prefixed with a level tag ("E ", "W ", "D ")."""
    with _lock:
        return list(_recent)


def _on_log(level: int, text: bytes, _user_data) -> None:
    piece = text.decode("utf-8", "replace") if text else ""
    with _lock:
        if level != _raw.GGML_LOG_LEVEL_CONT:
            _pending["level"] = _LEVELS.get(level, logging.DEBUG)
        _pending["text"] += piece
        if not _pending["text"].endswith("\n"):
            return
        line = _pending["text"].rstrip("\n")
        lvl = _pending["level"]
        _pending["text"] = ""
        _recent.append(f"{_TAGS[lvl]} {line}")
    if logger.isEnabledFor(lvl):
        logger.log(lvl, "%s", line)


_callback = _raw.ggml_log_callback(_on_log)


def install(lib) -> None:
    lib.llama_log_set(_callback, None)


def install_mtmd(mtmd) -> None:
    """libmtmd (and its helpers) log through their own setter; same route, same ring."""
    mtmd.mtmd_helper_log_set(_callback, None)
