"""``GET /v1/models`` and ``/models``: the one model this server serves."""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..errors import ApiError

__all__ = ["make_blueprint", "model_card"]


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("models", __name__)

    @bp.get("/v1/models")
    @bp.get("/models")
    def list_models():
        engine = state.ready_engine()
        return jsonify({"object": "list", "data": [model_card(state, engine)]})

    @bp.get("/v1/models/<path:model>")
    @bp.get("/models/<path:model>")
    def get_model(model: str):
        engine = state.ready_engine()
        if model != state.model_id:
            raise ApiError(f"The model '{model}' does not exist", "not_found_error", 404)
        return jsonify(model_card(state, engine))

    return bp


def model_card(state, engine) -> dict:
    model = engine.model
    return {
        "id": state.model_id,
        "object": "model",
        "created": state.created,
        "owned_by": "llamacpp",
        "meta": {
            "n_ctx_train": model.n_ctx_train,
            "n_params": model.n_params,
            "size": model.size,
            "n_vocab": engine.vocab.n_tokens,
            "n_embd": model.n_embd,
        },
    }
