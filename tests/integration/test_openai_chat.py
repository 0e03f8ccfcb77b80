"""OpenAI chat completions through the official SDK, against the real server and model."""
from __future__ import annotations

import json

import openai
import pytest
import requests

from .sse import stream

pytestmark = pytest.mark.slow

HELLO = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def server(server_factory):
    """-np 4 -c 4096 as the default server, with one thread: on a busy machine libllama's
    threads spin-waiting for each other cost far more than a second thread gains."""
    return server_factory("-np", "4", "-c", "4096", "-t", "1")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def chat(client, **kw):
    kw.setdefault("messages", HELLO)
    kw.setdefault("model", "anything")
    kw.setdefault("max_tokens", 8)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(**kw)


def test_chat_completion_has_the_openai_shape(client, server):
    r = chat(client)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.model == "anything"            # the requested name comes back, as in llama-server
    choice = r.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.message.content and choice.finish_reason == "length"
    assert r.usage.completion_tokens == 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8
    assert r.usage.prompt_tokens_details.cached_tokens >= 0


def test_prompt_is_the_model_template_rendering(client, server):
    """The prompt counted in usage is the SmolLM2 template's rendering of the messages."""
    from webapp.chat_template import ChatTemplate
    source = server.get("/props").json()["chat_template"]
    assert "<|im_start|>" in source
    text = ChatTemplate(source).render(HELLO)
    tokens = server.post("/tokenize", json={"content": text}).json()["tokens"]
    assert chat(client).usage.prompt_tokens == len(tokens)


def test_second_identical_request_reuses_the_cached_prompt(client):
    messages = [{"role": "system", "content": "You count cached tokens."}, *HELLO]
    first = chat(client, messages=messages)
    second = chat(client, messages=messages)
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1


def test_content_parts_and_every_role_are_accepted(client):
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Add 2 and 2."}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2,\"b\":2}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "4"},
        {"role": "user", "content": "And the answer?"},
    ]
    assert chat(client, messages=messages).choices[0].message.content


def test_streamed_chat_equals_the_whole_answer(client):
    whole = chat(client, max_tokens=12).choices[0]
    chunks = list(chat(client, max_tokens=12, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == whole.finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.message.content


def test_stream_include_usage_ends_with_a_usage_chunk(client):
    chunks = list(chat(client, max_tokens=5, stream=True, stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == 5
    assert last.usage.prompt_tokens > 0
    assert chunks[-2].choices[0].finish_reason == "length"


def test_sse_framing_byte_by_byte(server):
    body = {"messages": HELLO, "max_tokens": 3, "temperature": 0, "stream": True}
    events, raw = stream(server.url + "/v1/chat/completions", body)
    assert raw.startswith(b'data: {"id":"chatcmpl-')
    assert raw.endswith(b"}\n\ndata: [DONE]\n\n")
    blocks = raw.split(b"\n\n")
    assert blocks[-1] == b"" and blocks[-2] == b"data: [DONE]"
    for block in blocks[:-2]:
        assert block.startswith(b"data: {") and block.endswith(b"}") and b"\n" not in block
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_n_choices_use_several_slots(client):
    r = chat(client, n=2, max_tokens=6, temperature=0)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content == r.choices[1].message.content   # greedy: identical
    assert r.usage.completion_tokens == 12


def test_n_choices_stream_with_their_indexes(client):
    chunks = list(chat(client, n=2, max_tokens=4, stream=True))
    finished = sorted(c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason)
    assert finished == [0, 1]


def test_n_beyond_the_slots_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError, match="slot"):
        chat(client, n=5)


def test_seed_makes_sampling_reproducible(client):
    kw = dict(temperature=1.0, top_p=1.0, seed=1234, max_tokens=16)
    a = chat(client, **kw).choices[0].message.content
    b = chat(client, **kw).choices[0].message.content
    assert a == b


def test_stop_strings_end_the_answer(client):
    whole = chat(client, max_tokens=16).choices[0].message.content
    stop = whole.split()[1] if len(whole.split()) > 1 else whole[-1]
    r = chat(client, max_tokens=16, stop=[stop, "zzzz"])
    assert r.choices[0].finish_reason == "stop"
    assert stop not in r.choices[0].message.content
    assert whole.startswith(r.choices[0].message.content)


def test_logprobs_with_top_logprobs(client):
    r = chat(client, logprobs=True, top_logprobs=3, max_tokens=5)
    content = r.choices[0].logprobs.content
    assert len(content) == 5
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3
        assert t.logprob <= 0 and bytes(t.bytes).decode() == t.token
        # greedy: the chosen token is the most likely one
        assert t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        values = [x.logprob for x in t.top_logprobs]
        assert values == sorted(values, reverse=True)


def test_logprobs_in_the_stream(client):
    chunks = list(chat(client, logprobs=True, top_logprobs=1, max_tokens=4, stream=True))
    entries = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert len(entries) == 4 and all(len(t.top_logprobs) == 1 for t in entries)


def test_logit_bias_bans_a_token(client, server):
    r = chat(client, logprobs=True, max_tokens=1)
    first = r.choices[0].logprobs.content[0].token
    token_id = server.post("/tokenize", json={"content": first}).json()["tokens"][0]
    r = chat(client, logprobs=True, max_tokens=1, logit_bias={str(token_id): -100})
    assert r.choices[0].logprobs.content[0].token != first


def test_penalties_and_native_sampling_fields_are_accepted(client):
    r = chat(client, presence_penalty=0.5, frequency_penalty=0.5, top_p=0.9, user="u1",
             extra_body={"top_k": 5, "min_p": 0.1, "repeat_penalty": 1.1, "mirostat": 0,
                         "some_unknown_field": 1})
    assert r.choices[0].message.content


def test_max_completion_tokens_limits_the_answer(client):
    r = client.chat.completions.create(model="x", messages=HELLO, max_completion_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


def test_response_format_json_object(client):
    try:
        r = chat(client, max_tokens=40, response_format={"type": "json_schema", "json_schema": {
            "name": "colors", "strict": True,
            "schema": {"type": "object", "properties": {"color": {"type": "string", "maxLength": 8}},
                       "required": ["color"], "additionalProperties": False}}})
    except openai.APIStatusError as exc:   # structured output not built into this checkout
        assert exc.status_code == 501 and exc.body["type"] == "not_supported_error"
        return
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content)["color"], str)
    else:
        assert r.choices[0].message.content.startswith("{")


@pytest.mark.parametrize("body, match", [
    pytest.param({"messages": []}, "messages", id="no-messages"),
    pytest.param({"messages": [{"role": "robot", "content": "x"}]}, "role", id="bad-role"),
    pytest.param({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "image_url",
                 id="image-part"),
    pytest.param({"messages": HELLO, "max_tokens": -3}, "max_tokens", id="negative-max-tokens"),
    pytest.param({"messages": HELLO, "temperature": "hot"}, "temperature", id="bad-temperature"),
    pytest.param({"messages": HELLO, "stop": 5}, "stop", id="bad-stop"),
    pytest.param({"messages": HELLO, "logit_bias": {"abc": "x"}}, "logit_bias", id="bad-logit-bias"),
    pytest.param({"messages": HELLO, "top_logprobs": 2}, "logprobs", id="top-logprobs-alone"),
    pytest.param({"messages": HELLO, "logprobs": True, "top_logprobs": 50}, "top_logprobs",
                 id="too-many-top-logprobs"),
    pytest.param({"messages": HELLO, "response_format": {"type": "xml"}}, "response_format",
                 id="bad-response-format"),
    pytest.param({"messages": HELLO, "stream": "yes"}, "stream", id="bad-stream"),
    pytest.param({"messages": HELLO, "n": 0}, "'n'", id="zero-n"),
])
def test_bad_requests_raise_bad_request_error(client, body, match):
    body = dict(body)
    with pytest.raises(openai.BadRequestError, match=match) as exc:
        client.chat.completions.create(model="m", **body)
    assert exc.value.body["type"] == "invalid_request_error"
    assert exc.value.status_code == 400


def test_prompt_beyond_the_context_is_refused_before_streaming(server):
    body = {"messages": [{"role": "user", "content": "word " * 1500}], "stream": True}
    r = requests.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("application/json")
    err = r.json()["error"]
    assert err["type"] == "exceed_context_size_error"
    assert err["n_ctx"] == 1024 and err["n_prompt_tokens"] > 1024


def test_unknown_route_is_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.post("/nope", cast_to=object, body={})


def test_bad_json_is_a_bad_request(server):
    r = requests.post(server.url + "/v1/chat/completions", data=b"{nope", timeout=10,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
