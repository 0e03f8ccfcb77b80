"""Embeddings: ``POST /embedding`` (llama-server's own shape) and ``POST /v1/embeddings`` (OpenAI).

Both need ``--embeddings`` (else 501 ``not_supported_error``). Every input is one engine
request with ``embedding=True``; the scheduler evaluates all waiting inputs that fit the
batch together, in a batch of their own, and the engine returns the pooled vector (or one
vector per token with ``--pooling none``).

Like llama-server, pooled vectors are normalised (Euclidean, i.e. unit length, unless the
request's ``embd_normalize`` says otherwise: -1 none, 0 max-abs scaled to int16 range,
1 taxicab, 2 Euclidean, p > 2 p-norm); per-token vectors (``--pooling none``) are returned
as computed. OpenAI's route refuses pooling ``none``: its answer holds one vector per input.

An input must fit one physical batch (``-ub``, libllama's rule for pooled embeddings) and
the slot's context; a longer one is a 400 that says so.
"""
from __future__ import annotations

import base64
import math

import numpy as np
from flask import Blueprint, jsonify

from llama_lib.engine import GenerationOptions, Request

from ..completion import collect_all, json_body, tokenize_prompt
from ..errors import ApiError, BadRequest
from ..media import object_prompt
from .openai import check_known_fields, response_model

__all__ = ["make_blueprint", "normalize", "embedding_inputs", "evaluate"]

POOLING_NONE = 0      # LLAMA_POOLING_TYPE_NONE
KNOWN_FIELDS = frozenset({"input", "content", "model", "encoding_format", "dimensions", "user",
                          "embd_normalize"})


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("embeddings", __name__)

    def enabled_engine():
        if not state.settings.embeddings:
            raise ApiError("This server does not support embeddings. Start it with `--embeddings`",
                           "not_supported_error", 501)
        return state.ready_engine()

    @bp.post("/embedding")
    @bp.post("/embeddings")
    def embedding():
        engine = enabled_engine()
        body = json_body()
        key = "content" if "content" in body else "input"
        inputs, single = embedding_inputs(body, key)
        results = _embed(engine, state.settings, inputs, key, _norm_of(body))
        vectors = [vec for vec, _n in results]
        if single:
            return jsonify({"embedding": vectors[0]})
        return jsonify([{"index": i, "embedding": vec} for i, vec in enumerate(vectors)])

    @bp.post("/v1/embeddings")
    def openai_embeddings():
        engine = enabled_engine()
        if engine.ctx.pooling == POOLING_NONE:
            raise BadRequest("pooling 'none' gives one vector per token, which the OpenAI format "
                             "cannot hold; start the server with --pooling mean, cls or last "
                             "(or use POST /embedding)")
        body = json_body()
        check_known_fields(body, KNOWN_FIELDS, "v1/embeddings")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise BadRequest("'encoding_format' must be 'float' or 'base64'")
        if body.get("dimensions") is not None:
            raise BadRequest("'dimensions' is not supported: the model's vectors have "
                             f"{engine.model.n_embd} dimensions")
        inputs, _single = embedding_inputs(body, "input")
        results = _embed(engine, state.settings, inputs, "input", _norm_of(body))
        data = []
        for i, (vec, _n) in enumerate(results):
            if fmt == "base64":
                vec = base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode("ascii")
            data.append({"object": "embedding", "index": i, "embedding": vec})
        n_tokens = sum(n for _vec, n in results)
        return jsonify({"object": "list", "data": data, "model": response_model(body, state),
                        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})

    return bp


def embedding_inputs(body: dict, key: str) -> tuple[list, bool]:
    """(inputs, single): a string, a list of token ids, or a list of either."""
    if key not in body:
        raise BadRequest("'input' or 'content' is required")
    value = body[key]
    if isinstance(value, str) or (isinstance(value, list) and value and
                                  all(isinstance(t, int) and not isinstance(t, bool) for t in value)):
        return [value], True
    if isinstance(value, dict):
        return [value], True
    if isinstance(value, list) and value and all(isinstance(v, (str, list, dict)) for v in value):
        return list(value), False
    raise BadRequest(f"'{key}' must be a string, a list of token ids, a prompt object "
                     "({\"prompt_string\", \"multimodal_data\"} or {\"content\": [parts]}), "
                     "or a non-empty list of those")


def _norm_of(body: dict) -> int:
    value = body.get("embd_normalize", 2)
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise BadRequest("'embd_normalize' must be an integer >= -1")
    return value


def normalize(vec: np.ndarray, mode: int) -> np.ndarray:
    """llama.cpp's embd_normalize modes: -1 none, 0 max-abs to int16 range, 1 taxicab,
    2 Euclidean, p > 2 p-norm. A zero vector stays zero."""
    if mode < 0:
        return vec
    v = vec.astype(np.float64)
    if mode == 0:
        norm = np.abs(v).max() / 32760.0
    elif mode == 2:
        norm = math.sqrt(float(np.dot(v, v)))
    else:
        norm = float(np.sum(np.abs(v) ** mode)) ** (1.0 / mode)
    return (v / norm if norm > 0 else v).astype(np.float32)


def _embed(engine, settings, inputs: list, key: str, norm: int) -> list[tuple[list, int]]:
    """(vector or per-token vectors, input tokens) for each input, evaluated together."""
    vocab = engine.vocab
    token_lists = []
    media = {}
    for i, value in enumerate(inputs):
        where = key if len(inputs) == 1 else f"{key}[{i}]"
        if isinstance(value, dict):
            tokens, chunks = object_prompt(engine, settings, value, where, content_array=True)
            token_lists.append((where, tokens))
            media[where] = chunks
        else:
            token_lists.append((where, tokenize_prompt(vocab, value, where)))
    pooled = engine.ctx.pooling != POOLING_NONE
    out = []
    for vec, (_where, tokens) in zip(evaluate(engine, token_lists, media), token_lists):
        if pooled:
            vec = normalize(np.asarray(vec, dtype=np.float32), norm).tolist()
        out.append((vec, len(tokens)))
    return out


def evaluate(engine, token_lists: list[tuple[str, list[int]]], media: dict | None = None) -> list[list]:
    """The engine's output for each ``(where, tokens)`` input, evaluated together: the pooled
    vector (with rank pooling, the classifier's scores), or one vector per token with pooling
    none. An empty input, or one that does not fit one physical batch, is a 400 naming it.

    ``media``: where -> the input's media chunks (webapp/media.py), for inputs with images or
    audio. Such an input's text and media chunks up to its last chunk are evaluated into the
    slot's sequence as a generation prompt is, then the text after the last chunk, which
    must fit one physical batch, in an embedding batch: its vector pools that last text run
    (which attends to everything before it), as llama-server's last decode does."""
    media = media or {}
    limit = min(engine.ctx.n_ubatch, engine.scheduler.n_batch, engine.n_ctx_slot)
    for where, tokens in token_lists:
        if not tokens:
            raise BadRequest(f"'{where}' is empty")
        if media.get(where):
            if len(tokens) > engine.n_ctx_slot:
                raise BadRequest(f"'{where}' has {len(tokens)} tokens (its images or audio included); "
                                 f"the context of a slot holds {engine.n_ctx_slot}",
                                 n_prompt_tokens=len(tokens), n_ctx=engine.n_ctx_slot)
            tail = len(tokens) - max(i for i, t in enumerate(tokens) if t < 0) - 1
            if tail > limit:
                raise BadRequest(f"'{where}' has {tail} tokens after its last image or audio; "
                                 f"that text may have {limit} at most (one physical batch: start "
                                 "the server with a larger -ub)", n_prompt_tokens=tail, n_ubatch=limit)
            continue
        if len(tokens) > limit:
            raise BadRequest(f"'{where}' has {len(tokens)} tokens; an input may have {limit} at most "
                             f"(one physical batch: start the server with a larger -ub)",
                             n_prompt_tokens=len(tokens), n_ubatch=limit)
    options = GenerationOptions(n_predict=0, cache_prompt=False, truncate_prompt=False, embedding=True)
    requests = [Request(prompt_tokens=tokens, options=options, media=media.get(where))
                for where, tokens in token_lists]
    # submitted together, so the scheduler batches them; any failure aborts the rest
    finals = [got.final for got in collect_all(engine, requests)]
    if any(final.embeddings is None for final in finals):
        raise ApiError("the engine returned no embedding", "server_error", 500)
    return [final.embeddings for final in finals]
