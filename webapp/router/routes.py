"""What the router answers itself: its health, the model list with each model's state,
``POST /models/load`` and ``/models/unload``, and ``GET /props`` without ``?model=``.

The shapes follow llama-server's router: ``GET /models`` (and ``/v1/models``) answers
``{"object": "list", "data": [card, ...]}``, a card being ``{id, object: "model", owned_by,
created, path, source, status: {value: "unloaded"|"loading"|"loaded", args, failed?,
exit_code?}}`` plus, while the model is loaded, what its child reports about it (``meta``).
"""
from __future__ import annotations

import json
import time
from importlib import metadata

from flask import Blueprint, jsonify, request

from ..errors import ApiError, BadRequest
from .proxy import forward

__all__ = ["make_blueprint", "card"]


def make_blueprint(supervisor) -> Blueprint:
    bp = Blueprint("router", __name__)
    created = int(time.time())

    @bp.get("/health")
    @bp.get("/v1/health")
    def health():
        return jsonify({"status": "ok"})

    @bp.get("/models")
    @bp.get("/v1/models")
    def list_models():
        return jsonify({"object": "list",
                        "data": [card(i, created) for i in supervisor.models.values()]})

    @bp.get("/models/<path:model>")
    @bp.get("/v1/models/<path:model>")
    def get_model(model: str):
        inst = supervisor.get(model)
        if inst is None:
            raise ApiError(f"The model '{model}' does not exist", "not_found_error", 404)
        return jsonify(card(inst, created))

    @bp.post("/models/load")
    def load():
        supervisor.load(_model_field())
        return jsonify({"success": True})

    @bp.post("/models/unload")
    def unload():
        supervisor.unload(_model_field())
        return jsonify({"success": True})

    @bp.get("/props")
    def props():
        if request.args.get("model"):
            return forward(supervisor, request.args["model"])
        return jsonify({
            "role": "router",
            "max_instances": supervisor.models_max,
            "models_autoload": supervisor.autoload,
            # what the web page reads from a single-model server's /props
            "model_alias": "llama-server",
            "model_path": "none",
            "default_generation_settings": {"params": {}, "n_ctx": 0},
            "build_info": f"llama-server-py {_version()} (router)",
        })

    return bp


def card(inst, created: int) -> dict:
    out = {"id": inst.name, "object": "model", "owned_by": "llamacpp", "created": created,
           "path": inst.spec.path, "source": inst.spec.source, "status": inst.status_json()}
    for key, value in inst.info.items():      # the child's own card: meta (n_ctx_train, ...)
        out.setdefault(key, value)
    return out


def _model_field() -> str:
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except ValueError:
        raise BadRequest("the body is not valid JSON") from None
    name = body.get("model") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise BadRequest("'model' (a model name) is required")
    return name


def _version() -> str:
    try:
        return metadata.version("llama-server-py")
    except metadata.PackageNotFoundError:
        return "0"
