"""Reranking: ``POST /rerank`` (also ``/reranking``, ``/v1/rerank``, ``/v1/reranking``).

Needs ``--reranking`` (or ``--embeddings --pooling rank``), else 501 ``not_supported_error``
with llama-server's message. A request names a ``query`` and the ``documents`` to score
(Jina / Cohere style), or ``texts`` (Hugging Face TEI style). Every document becomes one
prompt, evaluated as an embedding input with rank pooling; its score is the first value of
the sequence's pooled output (the classifier head's first output, or for a model without
one the first value of the pooled hidden state).

The prompt, as llama-server builds it: the model's ``tokenizer.chat_template.rerank``
metadata with ``{query}`` and ``{document}`` filled in (special tokens parsed), else
``[BOS] query [EOS] [SEP] document [EOS]``, each special token present only if the
vocabulary asks for it (``add_bos``, ``add_eos``, ``add_sep``; SEP stands in for a missing EOS).

The answer, sorted by score (highest first) and cut to ``top_n``:
``{"model", "object": "list", "usage", "results": [{"index", "relevance_score"}]}``, or with
``texts`` TEI's bare array ``[{"index", "score"}]`` (plus ``"text"`` with ``return_text``).
"""
from __future__ import annotations

import logging
import re

from flask import Blueprint, jsonify

from ..completion import json_body
from ..errors import ApiError, BadRequest
from .embeddings import evaluate
from .openai import response_model

__all__ = ["make_blueprint", "rerank_tokens", "check_reranker", "reranking_enabled"]

logger = logging.getLogger(__name__)

PATHS = ("/rerank", "/reranking", "/v1/rerank", "/v1/reranking")
_FIELDS = re.compile(r"\{(query|document)\}")


def reranking_enabled(settings) -> bool:
    """llama-server's rule: embeddings on with rank pooling (what ``--reranking`` sets)."""
    return bool(settings.embeddings) and settings.pooling == "rank"


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("rerank", __name__)

    def rerank():
        if not reranking_enabled(state.settings):
            raise ApiError("This server does not support reranking. Start it with `--reranking`",
                           "not_supported_error", 501)
        engine = state.ready_engine()
        body = json_body()
        query, documents, key, tei, top_n = _parse(body)
        template = engine.model.chat_template("rerank")
        prompts = [(f"{key}[{i}]", rerank_tokens(engine.vocab, template, query, doc))
                   for i, doc in enumerate(documents)]
        outputs = evaluate(engine, prompts)
        label = "score" if tei else "relevance_score"
        results = [{"index": i, label: float(out[0])} for i, out in enumerate(outputs)]
        results.sort(key=lambda r: r[label], reverse=True)   # stable: ties keep document order
        results = results[:top_n]
        if tei:
            if body.get("return_text"):
                for r in results:
                    r["text"] = documents[r["index"]]
            return jsonify(results)
        n_tokens = sum(len(tokens) for _where, tokens in prompts)
        return jsonify({"model": response_model(body, state), "object": "list",
                        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
                        "results": results})

    for path in PATHS:
        bp.add_url_rule(path, "rerank", rerank, methods=["POST"])
    return bp


def _parse(body: dict) -> tuple[str, list[str], str, bool, int]:
    """(query, documents, the documents' field name, TEI format?, top_n)."""
    if "query" not in body:
        raise BadRequest('"query" must be provided')
    query = body["query"]
    if not isinstance(query, str):
        raise BadRequest('"query" must be a string')
    tei = "texts" in body          # llama-server: the TEI format whenever "texts" is present
    key = "documents" if body.get("documents") is not None or not tei else "texts"
    documents = body.get(key)
    if not (isinstance(documents, list) and documents and all(isinstance(d, str) for d in documents)):
        raise BadRequest(f'"{key}" must be a non-empty string array')
    top_n = body.get("top_n")
    if top_n is None:
        top_n = len(documents)
    elif isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0:
        raise BadRequest('"top_n" must be an integer >= 0')
    if not isinstance(body.get("return_text", False), bool):
        raise BadRequest('"return_text" must be true or false')
    return query, documents, key, tei, top_n


def rerank_tokens(vocab, template: str | None, query: str, document: str) -> list[int]:
    """The prompt that scores ``document`` against ``query`` (see the module docstring)."""
    if template is not None:
        # one pass, so a query that contains "{document}" is not filled in a second time
        text = _FIELDS.sub(lambda m: query if m.group(1) == "query" else document, template)
        return vocab.tokenize(text, add_special=False, parse_special=True)
    eos = vocab.eos if vocab.eos >= 0 else vocab.sep
    bos = [vocab.bos] if vocab.add_bos and vocab.bos >= 0 else []
    end = [eos] if vocab.add_eos and eos >= 0 else []
    sep = [vocab.sep] if vocab.add_sep and vocab.sep >= 0 else []
    return (bos + vocab.tokenize(query, add_special=False, parse_special=False) + end + sep
            + vocab.tokenize(document, add_special=False, parse_special=False) + end)


def check_reranker(model) -> None:
    """Log, as llama-server does at startup, a vocabulary that cannot build the prompt."""
    vocab = model.vocab
    if vocab.bos < 0:
        logger.warning("reranking: the vocabulary has no BOS token; reranking will not work")
    if model.chat_template("rerank") is None and vocab.eos < 0:
        if vocab.sep < 0:
            logger.warning("reranking: the vocabulary has no EOS or SEP token and the model no "
                           "rerank prompt; reranking will not work")
        else:
            logger.warning("reranking: the vocabulary has no EOS token; SEP stands in for it")
