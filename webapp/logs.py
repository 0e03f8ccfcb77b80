"""Logging set-up: text or JSON lines, --log-disable, -v, --log-file."""
from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["setup_logging", "JsonFormatter", "RequestIdFilter"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (UTC, ms), level, logger, message, the request id
    when the line was logged while serving a request, and any structured ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out = {"timestamp": f"{stamp}.{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        request_id = getattr(record, "request_id", None)
        if request_id:
            out["request_id"] = request_id
        extra = getattr(record, "fields", None)
        if extra:
            out.update(extra)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class RequestIdFilter(logging.Filter):
    """Tags records logged inside a Flask request with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            from flask import g, has_request_context
            record.request_id = g.get("request_id") if has_request_context() else None
        return True


def setup_logging(settings) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if settings.log_disable:
        root.addHandler(logging.NullHandler())
        root.setLevel(logging.CRITICAL + 1)
        return
    formatter = JsonFormatter() if settings.log_format == "json" else \
        logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s")
    handlers = [logging.StreamHandler(sys.stderr)]
    if settings.log_file:
        handlers.append(logging.FileHandler(settings.log_file))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if settings.verbose else logging.INFO)
    if not settings.verbose:
        logging.getLogger("llama_lib.native").setLevel(logging.WARNING)
