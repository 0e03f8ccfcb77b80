"""LoRA adapters: ``GET /lora-adapters`` lists them, ``POST /lora-adapters`` sets their scales.

The adapters are the ones loaded at startup (``--lora``, ``--lora-scaled``); new scales are
applied on the engine thread between two decodes (``Engine.set_lora``), and an adapter left
out of a POST gets scale 0, as in llama-server. A generation request may carry its own
scales (``lora``, the same array; see ``webapp.completion.lora_scales``): they hold for that
request only.
"""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..completion import call_engine, lora_scales
from ..errors import BadRequest

__all__ = ["make_blueprint"]


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("lora", __name__)

    @bp.get("/lora-adapters")
    def list_adapters():
        engine = state.ready_engine()
        return jsonify(_listing(engine))

    @bp.post("/lora-adapters")
    def set_adapters():
        engine = state.ready_engine()
        scales = lora_scales(_body(), len(engine.lora_adapters), "the request body")
        call_engine(engine, lambda e: e.set_lora(scales))
        return jsonify({"success": True})

    return bp


def _listing(engine) -> list[dict]:
    return [{"id": i, "path": adapter.path, "scale": scale}
            for i, (adapter, scale) in enumerate(zip(engine.lora_adapters, engine.lora_scales))]


def _body():
    # the body is a JSON array, so completion.json_body (objects only) does not fit here
    try:
        data = request.get_json(force=True, silent=True)
    except RecursionError:   # nested deeper than the parser's stack: not a body this route takes
        data = None
    if data is None:
        raise BadRequest("the request body must be a JSON array of {\"id\": int, \"scale\": number}")
    return data
