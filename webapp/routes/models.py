"""``GET /v1/models`` and ``/models``: the one model this server serves.

llama-server's combined answer: OpenAI's list (``object``, ``data``) and Ollama's
(``models``). Neither wakes a sleeping model (``--sleep-idle-seconds``): the model's facts
are kept while it sleeps.
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..errors import ApiError

__all__ = ["make_blueprint", "model_card", "ollama_entry"]


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("models", __name__)

    @bp.get("/v1/models")
    @bp.get("/models")
    def list_models():
        state.check_ready()
        return jsonify({"models": [ollama_entry(state)], "object": "list", "data": [model_card(state)]})

    @bp.get("/v1/models/<path:model>")
    @bp.get("/models/<path:model>")
    def get_model(model: str):
        state.check_ready()
        if model != state.model_id:
            raise ApiError(f"The model '{model}' does not exist", "not_found_error", 404)
        return jsonify(model_card(state))

    return bp


def model_card(state) -> dict:
    """The OpenAI model object, with llama-server's ``aliases``, ``tags`` and ``meta``."""
    facts = state.model_facts()
    return {
        "id": state.model_id,
        "aliases": [state.settings.alias] if state.settings.alias else [],
        "tags": [],
        "object": "model",
        "created": state.created,
        "owned_by": "llamacpp",
        "meta": {
            "vocab_type": facts.vocab_type,
            "n_vocab": facts.n_vocab,
            "n_ctx": facts.n_ctx_slot,
            "n_ctx_train": facts.n_ctx_train,
            "n_embd": facts.n_embd,
            "n_params": facts.n_params,
            "size": facts.size,
            "ftype": facts.ftype,
        },
    }


def ollama_entry(state) -> dict:
    """Ollama's /api/tags entry, with llama-server's placeholder values (it manages no model
    files: no digest, no modification time)."""
    facts = state.model_facts()
    return {
        "name": state.model_id,
        "model": state.model_id,
        "modified_at": "",
        "size": "",
        "digest": "",
        "type": "model",
        "description": "",
        "tags": [""],
        "capabilities": ["completion", "multimodal"] if facts.vision or facts.audio else ["completion"],
        "parameters": "",
        "details": {"parent_model": "", "format": "gguf", "family": "", "families": [""],
                    "parameter_size": "", "quantization_level": ""},
    }
