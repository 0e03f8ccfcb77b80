"""One error shape for every route: OpenAI's {"error": {"code", "message", "type"}}.

The Anthropic Messages routes answer the same errors in Anthropic's shape
(:func:`anthropic_error_body`), through their blueprint's handlers."""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

__all__ = ["ApiError", "BadRequest", "error_body", "register_error_handlers", "STATUS_OF_TYPE",
           "error_for", "http_error", "anthropic_error_body"]

logger = logging.getLogger(__name__)

STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "exceed_context_size_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "server_error": 500,
    "not_supported_error": 501,
    "unavailable_error": 503,
}
_TYPE_OF_STATUS = {400: "invalid_request_error", 401: "authentication_error",
                   403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
                   413: "invalid_request_error", 415: "invalid_request_error",
                   501: "not_supported_error", 503: "unavailable_error"}


class ApiError(Exception):
    def __init__(self, message: str, type_: str = "invalid_request_error", status: int | None = None,
                 headers: dict | None = None, **extra):
        super().__init__(message)
        self.message = message
        self.type = type_
        self.status = status or STATUS_OF_TYPE.get(type_, 500)
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict:
        return error_body(self.message, self.type, self.status, **self.extra)


class BadRequest(ApiError):
    def __init__(self, message: str, **extra):
        super().__init__(message, "invalid_request_error", 400, **extra)


def error_for(type_: str, message: str, **extra) -> ApiError:
    """The one mapping from a failure's kind to its HTTP answer: exceed_context_size_error
    400, unavailable_error 503 with Retry-After (queue full, shutting down, engine
    stopped), server_error 500; an unknown kind is a server error."""
    if type_ not in STATUS_OF_TYPE:
        type_ = "server_error"
    headers = {"Retry-After": "1"} if type_ == "unavailable_error" else None
    return ApiError(message, type_, STATUS_OF_TYPE[type_], headers=headers, **extra)


def error_body(message: str, type_: str, status: int, **extra) -> dict:
    err = {"code": status, "message": message, "type": type_}
    err.update(extra)
    return {"error": err}


def http_error(exc: HTTPException) -> ApiError:
    """A routing or protocol error (404, 405, 413...) as the ApiError it answers."""
    status = exc.code or 500
    type_ = _TYPE_OF_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    message = "File Not Found" if status == 404 else (exc.description or exc.name)
    return ApiError(message, type_, status)


# Anthropic's names for our error kinds; the HTTP status stays ours.
_ANTHROPIC_TYPE = {"exceed_context_size_error": "invalid_request_error",
                   "not_supported_error": "invalid_request_error",
                   "server_error": "api_error", "unavailable_error": "overloaded_error"}
_ANTHROPIC_TYPE_OF_STATUS = {413: "request_too_large", 429: "rate_limit_error"}


def anthropic_error_body(exc: ApiError, request_id: str = "") -> dict:
    """Anthropic's error shape, ``{"type": "error", "error": {"type", "message"}}``; the error
    also keeps ``code`` (the HTTP status), as on every other route."""
    type_ = _ANTHROPIC_TYPE_OF_STATUS.get(exc.status) or _ANTHROPIC_TYPE.get(exc.type, exc.type)
    body = {"type": "error", "error": {"type": type_, "message": exc.message, "code": exc.status}}
    if request_id:
        body["request_id"] = request_id
    return body


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        response = jsonify(exc.body())
        response.status_code = exc.status
        for key, value in exc.headers.items():
            response.headers[key] = value
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return _api_error(http_error(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error")
        response = jsonify(error_body(f"internal server error: {type(exc).__name__}", "server_error", 500))
        response.status_code = 500
        return response
