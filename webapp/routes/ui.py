"""The web front end: ``GET /`` (Jinja page), ``/completion.js``, ``/static/...`` and ``--path``.

``--path DIR`` works like llama-server's mount point: a file under DIR wins over the built-in
page and assets with the same URL (so DIR/index.html replaces the front end at ``/``), and
any other file under DIR is served at its relative URL. Nothing outside DIR is ever served:
the name is joined with ``werkzeug.security.safe_join``, a folder's ``index.html`` appended,
and the resolved path (every symlink followed, the last one too) must still lie inside the
real DIR. ``--no-webui`` turns all of it off (404).

The page learns its endpoint URLs and defaults from a JSON block rendered into the template,
so the JavaScript hard-codes no URL.
"""
from __future__ import annotations

import os

from flask import Blueprint, current_app, render_template, request, send_file
from werkzeug.exceptions import HTTPException
from werkzeug.security import safe_join

from ..errors import ApiError

__all__ = ["make_blueprint", "STATIC_DIR"]

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")

# Browsers refuse ES modules served with a non-JavaScript type; do not trust the platform's
# mime table for the few types the front end depends on.
_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
          ".html": "text/html", ".json": "application/json", ".svg": "image/svg+xml"}


def _not_found():
    return ApiError("File Not Found", "not_found_error", 404)


def _send_inside(root: str, name: str):
    """The file ``name`` under ``root`` (a folder's index.html for a folder), or None."""
    if "\x00" in name:   # no file name holds NUL, and os.path.realpath raises ValueError on it
        return None
    joined = safe_join(root, name) if name else root
    if joined is None:
        return None
    if os.path.isdir(joined):
        joined = os.path.join(joined, "index.html")
    # Resolve the final name (a folder's index.html included), then check: any symlink on the
    # way, the last one too, must land inside the real root.
    real_root = os.path.realpath(root)
    real = os.path.realpath(joined)
    if os.path.commonpath([real_root, real]) != real_root or not os.path.isfile(real):
        return None
    mimetype = _TYPES.get(os.path.splitext(real)[1].lower())
    return send_file(real, mimetype=mimetype, conditional=True, max_age=0)


def _route_exists(path: str, method: str) -> bool:
    adapter = current_app.url_map.bind("localhost")
    try:
        adapter.match(path, method=method)
    except HTTPException:   # NotFound, MethodNotAllowed, RequestRedirect: not a plain match
        return False
    return True


def page_config(state) -> dict:
    """What the front end needs from the server, rendered into the page as JSON."""
    root = request.script_root
    settings = state.settings
    chat = "/v1/chat/completions"
    return {
        "urls": {
            "completion": root + "/completion",
            "chat": root + chat if _route_exists(chat, "POST") else None,
            "props": root + "/props",
            "health": root + "/health",
        },
        "api_key_required": bool(settings.api_key or settings.api_key_file),
        "model": state.model_id,
        "defaults": dict(state.defaults.to_json(), n_predict=settings.n_predict),
    }


def make_blueprint(state) -> Blueprint:
    settings = state.settings
    public = settings.path
    if public and not os.path.isdir(public):
        raise SystemExit(f"--path: static files folder not found: {public}")
    bp = Blueprint("ui", __name__)

    def from_path(name: str):
        return _send_inside(public, name) if public else None

    def ui_enabled() -> None:
        if not settings.webui:
            raise _not_found()

    @bp.get("/")
    @bp.get("/index.html")
    def index():
        ui_enabled()
        return from_path("index.html") or render_template("index.html", config=page_config(state))

    @bp.get("/completion.js")
    def completion_js():
        ui_enabled()
        return from_path("completion.js") or _send_inside(STATIC_DIR, "completion.js")

    @bp.get("/favicon.ico")
    def favicon():
        ui_enabled()
        return from_path("favicon.ico") or _send_inside(STATIC_DIR, "favicon.svg")

    @bp.get("/static/<path:name>")
    def static(name: str):
        ui_enabled()
        found = from_path("static/" + name) or _send_inside(STATIC_DIR, name)
        if found is None:
            raise _not_found()
        return found

    if public:
        @bp.get("/<path:name>")
        def public_file(name: str):
            ui_enabled()
            found = from_path(name)
            if found is None:
                raise _not_found()
            return found

    return bp
