"""OpenAI text completions and the models list through the official SDK."""
from __future__ import annotations

import openai
import pytest

from .sse import stream

pytestmark = pytest.mark.slow

PROMPT = "The three primary colors are"


@pytest.fixture(scope="module")
def server(server_factory):
    """-np 4 -c 4096 as the default server, with one thread: on a busy machine libllama's
    threads spin-waiting for each other cost far more than a second thread gains."""
    return server_factory("-np", "4", "-c", "4096", "-t", "1")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def complete(client, **kw):
    kw.setdefault("model", "m")
    kw.setdefault("prompt", PROMPT)
    kw.setdefault("max_tokens", 6)
    kw.setdefault("temperature", 0)
    return client.completions.create(**kw)


def test_completion_matches_the_native_endpoint(client, server):
    r = complete(client)
    native = server.post("/completion", json={"prompt": PROMPT, "n_predict": 6, "temperature": 0}).json()
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].text == native["content"]
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == native["tokens_evaluated"] and r.usage.completion_tokens == 6


def test_token_prompt_gives_the_same_text(client, server):
    tokens = server.post("/tokenize", json={"content": PROMPT}).json()["tokens"]
    assert complete(client, prompt=tokens).choices[0].text == complete(client).choices[0].text


def test_several_prompts_give_one_choice_each(client, server):
    other = "Water boils at"
    tokens = server.post("/tokenize", json={"content": other}).json()["tokens"]
    r = complete(client, prompt=[PROMPT, other])
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text == complete(client).choices[0].text
    assert r.choices[1].text == complete(client, prompt=other).choices[0].text
    r2 = complete(client, prompt=[tokens, tokens])
    assert [c.text for c in r2.choices] == [r.choices[1].text] * 2


def test_n_choices_per_prompt(client):
    r = complete(client, prompt=["A", "B"], n=2, max_tokens=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text == r.choices[1].text and r.choices[2].text == r.choices[3].text


def test_echo_puts_the_prompt_first(client):
    plain = complete(client).choices[0].text
    assert complete(client, echo=True).choices[0].text == PROMPT + plain


def test_legacy_logprobs_shape(client):
    r = complete(client, logprobs=2, max_tokens=4)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text
    assert len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 4
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(4)]
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert value <= 0 and token in top and len(top) <= 3
        assert top[token] == pytest.approx(value)


def test_streamed_completion_equals_the_whole_text(client, server):
    whole = complete(client, max_tokens=8).choices[0].text
    chunks = list(complete(client, max_tokens=8, stream=True, stream_options={"include_usage": True}))
    text_chunks = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].text for c in text_chunks) == whole
    assert text_chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 8
    _, raw = stream(server.url + "/v1/completions", {"prompt": PROMPT, "max_tokens": 2, "stream": True})
    assert raw.startswith(b'data: {"id":"cmpl-') and raw.endswith(b"}\n\ndata: [DONE]\n\n")


def test_stop_and_seed(client):
    a = complete(client, temperature=1.0, seed=7, max_tokens=10).choices[0].text
    assert complete(client, temperature=1.0, seed=7, max_tokens=10).choices[0].text == a
    r = complete(client, stop=["\n", " and"], max_tokens=30)
    assert "\n" not in r.choices[0].text and " and" not in r.choices[0].text


def test_native_completions_route_stays_native(server):
    r = server.post("/completions", json={"prompt": PROMPT, "n_predict": 2})
    assert "content" in r.json() and "choices" not in r.json()


@pytest.mark.parametrize("kw, match", [
    pytest.param({"suffix": "end"}, "suffix", id="suffix"),
    pytest.param({"prompt": []}, "prompt", id="empty-prompt-list"),
    pytest.param({"prompt": [1, "a"]}, "prompt", id="mixed-prompt-list"),
    pytest.param({"prompt": [10 ** 9]}, "out of range", id="token-out-of-range"),
    pytest.param({"logprobs": 99}, "logprobs", id="too-many-logprobs"),
    pytest.param({"n": 9}, "slot", id="n-beyond-slots"),
    pytest.param({"best_of": 3}, "best_of", id="best-of"),
])
def test_bad_completion_requests(client, kw, match):
    with pytest.raises(openai.BadRequestError, match=match):
        complete(client, **kw)


def test_models_list_and_retrieve(client, server):
    models = client.models.list().data
    assert len(models) == 1
    m = models[0]
    assert m.id == "SmolLM2-135M-Instruct.Q4_1.gguf" and m.object == "model"
    assert m.owned_by and m.created > 0
    meta = m.model_extra["meta"]
    assert meta["n_vocab"] == 49152 and meta["n_embd"] == 576 and meta["n_params"] > 0
    assert meta["n_ctx_train"] > 0 and meta["size"] > 0
    assert client.models.retrieve(m.id).id == m.id
    assert server.get("/models").json()["data"][0]["id"] == m.id
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_alias_names_the_model(server_factory):
    srv = server_factory("-np", "1", "-c", "512", "-t", "1", "--alias", "my-model")
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["my-model"]
    r = client.completions.create(model="", prompt="Hi", max_tokens=1)
    assert r.model == "my-model"
