"""LoRA adapters: ``GET /lora-adapters`` lists them, ``POST /lora-adapters`` sets their scales.

The adapters are the ones loaded at startup (``--lora``, ``--lora-scaled``); new scales are
applied on the engine thread between two decodes (``Engine.set_lora``), and an adapter left
out of a POST gets scale 0, as in llama-server.
"""
from __future__ import annotations

import math

from flask import Blueprint, jsonify, request

from ..completion import call_engine
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
        scales = _parse_scales(_body(), len(engine.lora_adapters))
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


def _parse_scales(body, n_adapters: int) -> list[float]:
    shape = "the request body must be a JSON array of {\"id\": int, \"scale\": number}"
    if not isinstance(body, list):
        raise BadRequest(shape)
    scales = [0.0] * n_adapters
    for item in body:
        if not isinstance(item, dict):
            raise BadRequest(shape)
        adapter_id, scale = item.get("id"), item.get("scale")
        if isinstance(adapter_id, bool) or not isinstance(adapter_id, int) or not 0 <= adapter_id < n_adapters:
            raise BadRequest(f"invalid adapter id {adapter_id!r}: this server has {n_adapters} adapter(s)")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise BadRequest(f"the scale of adapter {adapter_id} must be a finite number")
        scales[adapter_id] = float(scale)
    return scales
