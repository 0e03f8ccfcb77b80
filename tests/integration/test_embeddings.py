"""Embeddings (--embeddings) through the official SDK and llama-server's own /embedding."""
from __future__ import annotations

import base64

import numpy as np
import openai
import pytest
import requests

pytestmark = pytest.mark.slow

TEXTS = ["hello world", "The quick brown fox jumps over the lazy dog, again and again.", "a"]


@pytest.fixture(scope="module")
def mean_server(server_factory):
    return server_factory("--embeddings", "--pooling", "mean", "-np", "4", "-c", "2048", "-ub", "64",
                          "--metrics", "-t", "1")


def decode_calls(srv) -> float:
    text = srv.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("llamacpp:n_decode_total "))
    return float(line.split()[1])


@pytest.fixture(scope="module")
def client(mean_server):
    return openai.OpenAI(base_url=mean_server.url + "/v1", api_key="x", max_retries=0, timeout=60)


def embed(client, value, **kw):
    return client.embeddings.create(model="m", input=value, **kw)


def test_single_input_gives_a_unit_vector(client):
    r = embed(client, TEXTS[0])
    assert r.object == "list" and len(r.data) == 1
    vec = np.array(r.data[0].embedding)
    assert vec.shape == (576,) and np.count_nonzero(vec) > 500
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    assert r.usage.prompt_tokens == r.usage.total_tokens > 0
    assert r.model == "m"


def test_vectors_are_deterministic_and_tell_texts_apart(client):
    a = np.array(embed(client, TEXTS[1]).data[0].embedding)
    b = np.array(embed(client, TEXTS[1]).data[0].embedding)
    c = np.array(embed(client, TEXTS[2]).data[0].embedding)
    assert np.abs(a - b).max() < 1e-6
    assert np.abs(a - c).max() > 1e-2


def test_a_batch_is_one_decode_and_equals_one_by_one(client, mean_server):
    before = decode_calls(mean_server)
    together = embed(client, TEXTS)
    assert decode_calls(mean_server) - before == 1
    assert [d.index for d in together.data] == [0, 1, 2]
    for text, d in zip(TEXTS, together.data):
        alone = embed(client, text).data[0].embedding
        assert np.abs(np.array(d.embedding) - np.array(alone)).max() < 1e-4
    assert together.usage.prompt_tokens == sum(embed(client, t).usage.prompt_tokens for t in TEXTS)


def test_token_inputs_equal_text_inputs(client, mean_server):
    tokens = mean_server.post("/tokenize", json={"content": TEXTS[0]}).json()["tokens"]
    by_text = np.array(embed(client, TEXTS[0]).data[0].embedding)
    by_tokens = embed(client, [tokens, tokens])
    for d in by_tokens.data:
        assert np.abs(np.array(d.embedding) - by_text).max() < 1e-4


def test_base64_decodes_to_the_float_vector(client):
    floats = embed(client, TEXTS[0], encoding_format="float").data[0].embedding
    encoded = embed(client, TEXTS[0], encoding_format="base64").data[0].embedding
    assert isinstance(encoded, str)
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    assert np.array_equal(decoded, np.array(floats, dtype=np.float32))


def test_native_embedding_route(mean_server, client):
    r = mean_server.post("/embedding", json={"content": TEXTS[0]})
    assert r.status_code == 200
    vec = r.json()["embedding"]
    assert np.abs(np.array(vec) - np.array(embed(client, TEXTS[0]).data[0].embedding)).max() < 1e-5
    many = mean_server.post("/embedding", json={"content": TEXTS[:2]}).json()
    assert [item["index"] for item in many] == [0, 1]
    raw = mean_server.post("/embedding", json={"content": TEXTS[0], "embd_normalize": -1}).json()
    assert np.linalg.norm(raw["embedding"]) > 1.5    # not normalised on request


def test_generation_still_works_on_an_embedding_server(mean_server):
    r = mean_server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                       "max_tokens": 3})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("body, match", [
    pytest.param({"input": "x" * 2000}, "at most", id="longer-than-the-physical-batch"),
    pytest.param({"input": []}, "input", id="empty-list"),
    pytest.param({"input": ""}, "empty", id="empty-string"),
    pytest.param({"input": 5}, "input", id="number"),
    pytest.param({"input": "x", "encoding_format": "hex"}, "encoding_format", id="bad-encoding"),
    pytest.param({"input": [10 ** 9]}, "out of range", id="token-out-of-range"),
    pytest.param({}, "input", id="no-input"),
])
def test_bad_embedding_requests(mean_server, body, match):
    r = mean_server.post("/v1/embeddings", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and match in err["message"]


def test_sdk_raises_bad_request_for_a_too_long_input(client):
    with pytest.raises(openai.BadRequestError, match="-ub"):
        embed(client, "word " * 200)


def test_without_the_flag_embeddings_are_not_supported(server_factory):
    server = server_factory("-np", "4", "-c", "4096", "-t", "1")
    for path, body in (("/v1/embeddings", {"input": "x"}), ("/embedding", {"content": "x"})):
        r = server.post(path, json=body)
        assert r.status_code == 501
        assert r.json()["error"]["type"] == "not_supported_error"


def test_model_default_pooling_is_none_for_a_causal_lm(server_factory):
    """As llama-server: without --pooling, SmolLM2's (no pooling metadata) is none."""
    srv = server_factory("--embeddings", "-np", "2", "-c", "512", "-t", "1")
    r = srv.post("/embedding", json={"content": "hello world"})
    assert r.status_code == 200
    per_token = r.json()["embedding"]
    n_tokens = len(srv.post("/tokenize", json={"content": "hello world", "add_special": True}).json()["tokens"])
    assert len(per_token) == n_tokens and all(len(v) == 576 for v in per_token)
    r = requests.post(srv.url + "/v1/embeddings", json={"input": "hello"}, timeout=30)
    assert r.status_code == 400 and "pooling" in r.json()["error"]["message"]
