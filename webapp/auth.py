"""API keys: ``--api-key`` (repeatable) and ``--api-key-file``.

With at least one key configured, every request must carry one, as
``Authorization: Bearer <key>`` (a bare ``Authorization: <key>`` works too, as in
llama-server) or ``X-Api-Key: <key>``. Exempt, as in llama-server: ``/health`` and
``/v1/health``, CORS preflight (``OPTIONS``: browsers send no credentials there), and GET
requests for the web front end (``/``, the ``ui`` blueprint's pages and ``/static/...``
files), which hold no model output; also ``/openapi.json``, which only describes the API.
Anything else without a valid key gets 401 in the route's error shape (OpenAI's; Anthropic's
on the Anthropic Messages routes).

A key file holds one key per line; blank lines and lines starting with ``#`` are ignored.
A file that cannot be read, or holds no key, stops startup: an empty file must not quietly
turn authentication off.

``/health`` stays public, but what it can embed (``?include_slots``: every slot's last prompt)
is model output: ``has_valid_key()`` tells a public route whether the request carries a key
that would have let it through the check (always true when no key is configured).
"""
from __future__ import annotations

import hmac
import logging

from flask import Flask, current_app, request

from .errors import ApiError

__all__ = ["install_auth", "load_keys", "key_matches", "has_valid_key"]

logger = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/health", "/v1/health", "/openapi.json"})
FRONT_END_PATHS = frozenset({"/", "/index.html", "/favicon.ico", "/completion.js",
                             "/json-schema-to-grammar.mjs"})
FRONT_END_BLUEPRINTS = frozenset({"ui"})


def load_keys(settings) -> list[bytes]:
    """The configured keys, as UTF-8 bytes (for constant-time comparison)."""
    keys = [k.strip() for k in (settings.api_key or []) if k and k.strip()]
    path = settings.api_key_file
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                from_file = [line.strip() for line in f]
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemExit(f"error: --api-key-file: cannot read {path!r}: {exc}") from None
        from_file = [k for k in from_file if k and not k.startswith("#")]
        if not from_file:
            raise SystemExit(f"error: --api-key-file: {path!r} holds no key")
        keys.extend(from_file)
    return [k.encode("utf-8") for k in dict.fromkeys(keys)]


def key_matches(given: str, keys: list[bytes]) -> bool:
    """Compare against every key in constant time; no early exit on the first match."""
    try:   # WSGI hands headers over as latin-1 text: this gives back the bytes sent
        candidate = given.encode("latin-1")
    except UnicodeEncodeError:
        candidate = given.encode("utf-8", "replace")
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(candidate, key)
    return ok


def _presented_key() -> str:
    value = request.headers.get("Authorization", "")
    if not value:
        return request.headers.get("X-Api-Key", "")
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return value.strip()


def _is_exempt() -> bool:
    if request.method == "OPTIONS" or request.path in PUBLIC_PATHS:
        return True
    if request.method not in ("GET", "HEAD"):
        return False
    return (request.path in FRONT_END_PATHS or request.path.startswith("/static/")
            or request.blueprint in FRONT_END_BLUEPRINTS)


def has_valid_key() -> bool:
    """Whether the current request carries a configured key, or no key is configured."""
    keys = current_app.extensions["api_keys"]   # set by install_auth: a missing entry fails closed
    return not keys or key_matches(_presented_key(), keys)


def install_auth(app: Flask, state) -> None:
    keys = load_keys(state.settings)
    app.extensions["api_keys"] = keys
    if not keys:
        return
    logger.info("API keys required (%d key%s)", len(keys), "" if len(keys) == 1 else "s")

    @app.before_request
    def _check_api_key():
        if _is_exempt() or key_matches(_presented_key(), keys):
            return None
        logger.warning("unauthorized request to %s: invalid API key", request.path)
        # raised, not answered here: the route's blueprint picks the error shape (Anthropic's
        # on /v1/messages)
        raise ApiError("Invalid API Key", "authentication_error", 401)
