"""Reranking (--reranking): POST /rerank and its aliases, on the default model and on a tiny
random-weight BERT cross-encoder built here (so libllama's classifier-head path runs).

A score is the first value of the rank-pooled sequence output. For the default model (a
causal LM without a classifier head) that is element 0 of the last token's hidden state,
which a second server (--embeddings --pooling last) gives through /embedding. For the BERT
it is the head (``cls.output @ tanh(cls @ h + cls.b) + cls.output.b``) applied to the
[CLS] hidden state, which an --embeddings --pooling cls server gives.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from tests.gguf_builders import bert_model, bert_weights
from tests.sdist import vocab_gguf

pytestmark = pytest.mark.slow

PATHS = ["/rerank", "/reranking", "/v1/rerank", "/v1/reranking"]
QUERY = "Machine learning is"
DOCUMENTS = [
    "A machine is a physical system that uses power to apply forces and control movement.",
    "Learning is the process of acquiring new understanding, knowledge and skills.",
    "Machine learning is a field of study in artificial intelligence.",
    "Paris, capitale de la France, est une grande ville européenne.",
]
BERT_LABELS = ["relevant", "irrelevant"]            # two classifier outputs; the score is the first
BERT_TEMPLATE = "[CLS]{document}[SEP]{query}[SEP]"   # parsed: [CLS] and [SEP] are special tokens
CLS, SEP = 101, 102                                  # in the bert-bge vocabulary


@pytest.fixture(scope="module")
def rank_server(server_factory):
    # two slots, so several documents could share a batch: the scores must not depend on it
    return server_factory("--reranking", "-np", "2", "-c", "1024", "-ub", "128", "-t", "1")


@pytest.fixture(scope="module")
def last_server(server_factory):
    return server_factory("--embeddings", "--pooling", "last", "-np", "1", "-c", "512", "-t", "1")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """(weights, plain model path, model path with a rerank template)."""
    folder = tmp_path_factory.mktemp("bert")
    vocab = str(vocab_gguf("bert-bge"))
    weights = bert_weights(30522, n_cls_out=len(BERT_LABELS), seed=7)
    plain = bert_model(str(folder / "bert-reranker.gguf"), vocab, weights, pooling=4, labels=BERT_LABELS)
    templated = bert_model(str(folder / "bert-reranker-template.gguf"), vocab, weights, pooling=4,
                           labels=BERT_LABELS, rerank_template=BERT_TEMPLATE)
    return weights, plain, templated


@pytest.fixture(scope="module")
def bert_rank(server_factory, bert):
    return server_factory("-m", bert[1], "--reranking", "-np", "2", "-c", "512", "-t", "1")


@pytest.fixture(scope="module")
def bert_cls(server_factory, bert):
    return server_factory("-m", bert[1], "--embeddings", "--pooling", "cls", "-np", "1", "-c", "512", "-t", "1")


@pytest.fixture(scope="module")
def bert_template(server_factory, bert):
    return server_factory("-m", bert[2], "--reranking", "-np", "1", "-c", "512", "-t", "1")


def tokens(srv, text: str) -> list[int]:
    r = srv.post("/tokenize", json={"content": text})
    assert r.status_code == 200
    return r.json()["tokens"]


def raw_embedding(srv, token_ids: list[int]) -> np.ndarray:
    r = srv.post("/embedding", json={"content": token_ids, "embd_normalize": -1})
    assert r.status_code == 200, r.text
    return np.array(r.json()["embedding"])


def rerank(srv, body: dict, path: str = "/rerank"):
    r = srv.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def expected_scores(last_server):
    """Element 0 of the last token's hidden state for query + document (SmolLM2's vocabulary
    asks for no BOS, EOS or SEP, so the prompt is the two texts' tokens back to back)."""
    query = tokens(last_server, QUERY)
    return [float(raw_embedding(last_server, query + tokens(last_server, doc))[0]) for doc in DOCUMENTS]


@pytest.mark.parametrize("path", PATHS)
def test_each_path_scores_documents_with_the_rank_pooled_output(rank_server, last_server,
                                                               expected_scores, path):
    body = rerank(rank_server, {"query": QUERY, "documents": DOCUMENTS, "model": "my-reranker"}, path)
    assert body["object"] == "list" and body["model"] == "my-reranker"
    results = body["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCUMENTS)))
    assert all(set(r) == {"index", "relevance_score"} for r in results)
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    by_index = {r["index"]: r["relevance_score"] for r in results}
    assert [by_index[i] for i in range(len(DOCUMENTS))] == pytest.approx(expected_scores, abs=1e-4)
    assert len(set(np.round(expected_scores, 4))) == len(DOCUMENTS)   # the documents are told apart
    n_tokens = sum(len(tokens(last_server, QUERY)) + len(tokens(last_server, d)) for d in DOCUMENTS)
    assert body["usage"] == {"prompt_tokens": n_tokens, "total_tokens": n_tokens}


def test_the_model_defaults_to_the_model_file_name(rank_server, model_path):
    body = rerank(rank_server, {"query": QUERY, "documents": DOCUMENTS[:1]})
    assert body["model"] == os.path.basename(model_path)


def test_a_document_scores_the_same_alone_and_among_others(rank_server, expected_scores):
    for i, doc in enumerate(DOCUMENTS):
        alone = rerank(rank_server, {"query": QUERY, "documents": [doc]})["results"]
        assert alone[0]["index"] == 0
        assert alone[0]["relevance_score"] == pytest.approx(expected_scores[i], abs=1e-4)


@pytest.mark.parametrize("top_n, expected", [
    pytest.param(None, 4, id="absent-all"),
    pytest.param(2, 2, id="two"),
    pytest.param(0, 0, id="zero"),
    pytest.param(99, 4, id="more-than-documents"),
])
def test_top_n_keeps_the_best(rank_server, expected_scores, top_n, expected):
    body = {"query": QUERY, "documents": DOCUMENTS}
    if top_n is not None:
        body["top_n"] = top_n
    results = rerank(rank_server, body)["results"]
    best = sorted(range(len(DOCUMENTS)), key=lambda i: -expected_scores[i])[:expected]
    assert [r["index"] for r in results] == best


def test_tei_texts_give_a_bare_sorted_array(rank_server, expected_scores):
    results = rerank(rank_server, {"query": QUERY, "texts": DOCUMENTS, "top_n": 3}, "/v1/rerank")
    assert isinstance(results, list) and len(results) == 3
    assert all(set(r) == {"index", "score"} for r in results)
    assert [r["score"] for r in results] == pytest.approx(sorted(expected_scores, reverse=True)[:3], abs=1e-4)


def test_tei_return_text_adds_each_document(rank_server):
    results = rerank(rank_server, {"query": QUERY, "texts": DOCUMENTS, "return_text": True})
    assert all(r["text"] == DOCUMENTS[r["index"]] for r in results)
    without = rerank(rank_server, {"query": QUERY, "documents": DOCUMENTS, "return_text": True})
    assert all("text" not in r for r in without["results"])   # Jina's format never carries it


@pytest.mark.parametrize("body, needle", [
    pytest.param({"query": QUERY, "documents": []}, '"documents" must be a non-empty string array', id="no-documents"),
    pytest.param({"query": QUERY, "documents": None}, '"documents" must be', id="documents-null"),
    pytest.param({"query": QUERY, "documents": 123}, '"documents" must be', id="documents-number"),
    pytest.param({"query": QUERY, "documents": [1, 2, 3]}, '"documents" must be', id="documents-token-ids"),
    pytest.param({"query": QUERY, "texts": "one text"}, '"texts" must be', id="texts-a-string"),
    pytest.param({"documents": DOCUMENTS}, '"query" must be provided', id="no-query"),
    pytest.param({"query": ["a"], "documents": DOCUMENTS}, '"query" must be a string', id="query-a-list"),
    pytest.param({"query": QUERY, "documents": DOCUMENTS, "top_n": -1}, '"top_n"', id="top-n-negative"),
    pytest.param({"query": QUERY, "documents": DOCUMENTS, "top_n": "2"}, '"top_n"', id="top-n-a-string"),
    pytest.param({"query": QUERY, "documents": DOCUMENTS, "top_n": True}, '"top_n"', id="top-n-a-bool"),
    pytest.param({"query": QUERY, "texts": DOCUMENTS, "return_text": "yes"}, '"return_text"', id="return-text-a-string"),
    pytest.param({"query": "", "documents": [""]}, "'documents[0]' is empty", id="empty-prompt"),
    pytest.param({"query": QUERY, "documents": ["ok", "word " * 200]}, "'documents[1]' has", id="too-long"),
])
def test_bad_requests_are_400_in_the_error_shape(rank_server, body, needle):
    r = rank_server.post("/rerank", json=body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == 400
    assert needle in err["message"]


def test_a_body_that_is_not_json_is_a_400(rank_server):
    r = rank_server.post("/v1/rerank", data=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


@pytest.mark.parametrize("path", PATHS)
def test_without_reranking_every_path_is_501(last_server, path):
    r = last_server.post(path, json={"query": QUERY, "documents": DOCUMENTS})
    assert r.status_code == 501
    err = r.json()["error"]
    assert err["type"] == "not_supported_error"
    assert err["message"] == "This server does not support reranking. Start it with `--reranking`"


def test_reranking_keeps_embeddings_on(rank_server):
    """--reranking turns embeddings on (as llama-server's does): /embedding answers with the
    rank-pooled output, here one value: the score."""
    body = rerank(rank_server, {"query": "", "documents": [DOCUMENTS[2]]})
    vec = raw_embedding(rank_server, tokens(rank_server, DOCUMENTS[2]))
    assert vec.shape == (1,) and vec[0] == pytest.approx(body["results"][0]["relevance_score"], abs=1e-5)


# --- a BERT cross-encoder with a classifier head -------------------------------------------

def bert_head(weights, hidden: np.ndarray) -> np.ndarray:
    """libllama's rank pooling for BERT: cls, tanh, then cls.output."""
    inner = np.tanh(weights["cls.weight"] @ hidden + weights["cls.bias"])
    return weights["cls.output.weight"] @ inner + weights["cls.output.bias"]


def test_the_bert_classifier_head_gives_the_score(bert, bert_rank, bert_cls):
    weights = bert[0]
    query = "what is a panda?"
    docs = ["hi", "The giant panda is a bear species endemic to China.", "Paris is a city in France."]
    body = rerank(bert_rank, {"query": query, "documents": docs})
    by_index = {r["index"]: r["relevance_score"] for r in body["results"]}
    q = tokens(bert_rank, query)
    prompts = [[CLS] + q + [SEP] + tokens(bert_rank, d) for d in docs]   # WPM: add_bos, add_sep, no EOS
    for i, prompt in enumerate(prompts):
        expected = bert_head(weights, raw_embedding(bert_cls, prompt))
        assert by_index[i] == pytest.approx(float(expected[0]), abs=1e-4)
        # the rank server's own /embedding gives both classifier outputs; the score is the first
        both = raw_embedding(bert_rank, prompt)
        assert both.shape == (2,) and both == pytest.approx(expected, abs=1e-4)
    assert len({round(s, 4) for s in by_index.values()}) == len(docs)
    assert body["usage"]["prompt_tokens"] == sum(len(p) for p in prompts)


def test_a_rerank_template_in_the_metadata_builds_the_prompt(bert_template):
    query, doc = "what is a panda?", "The giant panda is a bear."
    body = rerank(bert_template, {"query": query, "documents": [doc]}, "/v1/reranking")
    prompt = tokens(bert_template, BERT_TEMPLATE.replace("{document}", doc).replace("{query}", query))
    assert prompt[0] == CLS and prompt.count(SEP) == 2
    assert body["usage"]["prompt_tokens"] == len(prompt)
    expected = raw_embedding(bert_template, prompt)[0]
    assert body["results"][0]["relevance_score"] == pytest.approx(float(expected), abs=1e-5)


def test_a_query_naming_a_template_field_is_taken_literally(bert_template):
    query = "find {document} here"
    body = rerank(bert_template, {"query": query, "documents": ["panda"]})
    prompt = tokens(bert_template, f"[CLS]panda[SEP]{query}[SEP]")
    assert body["usage"]["prompt_tokens"] == len(prompt)
