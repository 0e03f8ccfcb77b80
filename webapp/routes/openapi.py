"""``GET /openapi.json``: the OpenAPI 3.1 document of this server (webapp/openapi.py).

Built once, from the settings the app was created with; public like ``/health`` (no API key).
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..openapi import build_openapi

__all__ = ["make_blueprint"]


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("openapi", __name__)
    document = build_openapi(state.settings)

    @bp.get("/openapi.json")
    def openapi_json():
        return jsonify(document)

    return bp
