"""Cross-cutting request handling: CORS like llama-server, request ids, one log line each.

Every request gets an id: the client's ``X-Request-Id`` when it is a sane token, else a new
one; it is echoed in the ``X-Request-Id`` response header and appears on the request's log
line (and, through webapp/logs.py, on every other line logged while serving it). The access
line of a streamed response is written when the stream ends, so its duration is the whole
exchange. With ``-v`` the full request and response bodies are logged too (DEBUG), as the
seed did.
"""
from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, g, request

__all__ = ["install_middleware"]

logger = logging.getLogger("webapp.access")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_QUIET = ("/health", "/v1/health")   # polled constantly: logged at DEBUG only


def install_middleware(app: Flask, state) -> None:
    @app.before_request
    def _start():
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if _CLIENT_ID.fullmatch(incoming) else "req-" + uuid.uuid4().hex[:16]
        g.t0 = time.perf_counter()
        if logger.isEnabledFor(logging.DEBUG) and request.content_length:
            logger.debug("request: %s", request.get_data(cache=True).decode("utf-8", "replace"))
        if request.method == "OPTIONS":
            return app.make_default_options_response()
        return None

    @app.after_request
    def _finish(response):
        response.headers["Access-Control-Allow-Origin"] = request.headers.get("Origin", "*")
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "*"
        response.headers["X-Request-Id"] = g.get("request_id", "")
        level = logging.DEBUG if request.path in _QUIET else logging.INFO
        if not logger.isEnabledFor(level):
            return response
        fields = {"request_id": g.get("request_id"), "method": request.method, "path": request.path,
                  "status": response.status_code}
        t0 = g.get("t0", time.perf_counter())
        if response.is_streamed:
            response.response = _logged_stream(response.response, level, fields, t0)
            return response
        if logger.isEnabledFor(logging.DEBUG) and not response.direct_passthrough:
            logger.debug("response: %s", response.get_data().decode("utf-8", "replace"))
        _access_line(level, fields, t0, len(response.get_data()) if not response.direct_passthrough else None)
        return response


def _access_line(level: int, fields: dict, t0: float, n_bytes: int | None, **more) -> None:
    fields = dict(fields, ms=round((time.perf_counter() - t0) * 1000, 2), bytes=n_bytes, **more)
    logger.log(level, "%s %s %d %.1fms %s", fields["method"], fields["path"], fields["status"],
               fields["ms"], fields["request_id"], extra={"fields": fields})


def _logged_stream(chunks, level: int, fields: dict, t0: float):
    """Pass a streamed body through; log its access line (and with -v its body) at the end,
    also when the client goes away early."""
    n_bytes = 0
    body: list[bytes] | None = [] if logger.isEnabledFor(logging.DEBUG) else None
    completed = False
    try:
        for chunk in chunks:
            n_bytes += len(chunk)
            if body is not None:
                body.append(chunk if isinstance(chunk, bytes) else chunk.encode("utf-8"))
            yield chunk
        completed = True
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        if body is not None:
            logger.debug("response: %s", b"".join(body).decode("utf-8", "replace"))
        _access_line(level, fields, t0, n_bytes, streamed=True, completed=completed)
