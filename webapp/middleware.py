"""Cross-cutting request handling: CORS like llama-server, request ids, one log line each."""
from __future__ import annotations

import itertools
import logging
import time

from flask import Flask, g, request

__all__ = ["install_middleware"]

logger = logging.getLogger("webapp.access")
_ids = itertools.count(1)


def install_middleware(app: Flask, state) -> None:
    @app.before_request
    def _start():
        g.request_id = request.headers.get("X-Request-Id") or f"req-{next(_ids)}"
        g.t0 = time.perf_counter()
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
        if logger.isEnabledFor(logging.INFO) and request.path not in ("/health", "/v1/health"):
            logger.info("%s %s %d", request.method, request.path, response.status_code,
                        extra={"fields": {"request_id": g.get("request_id"), "method": request.method,
                                          "path": request.path, "status": response.status_code,
                                          "ms": round((time.perf_counter() - g.get("t0", time.perf_counter())) * 1000, 2)}})
        return response
