"""GET /: the web front end (a placeholder page until the front-end work lands)."""
from __future__ import annotations

from flask import Blueprint, Response

__all__ = ["make_blueprint"]


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("ui", __name__)

    @bp.get("/")
    def index():
        if not state.settings.webui:
            return Response("the web front end is disabled (--no-webui)", status=404, mimetype="text/plain")
        return Response("<!doctype html><title>llama-server</title><h1>llama-server</h1>"
                        "<p>POST /completion to generate.</p>", mimetype="text/html")

    return bp
