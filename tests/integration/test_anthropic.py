"""Anthropic's Messages API (/v1/messages) through the official anthropic SDK, against the real
server and model: text, system blocks, stop sequences, streaming events, tools with a
tool-capable template, tool results, thinking with a template that opens <think>, token
counting, the x-api-key check and Anthropic's error shape."""
from __future__ import annotations

import json
from types import SimpleNamespace

import anthropic
import jsonschema
import pytest

from tests.sdist import template_path

pytestmark = pytest.mark.slow

KEY = "sk-test-agents"
ARGS = ("-np", "2", "-c", "2048", "-t", "1", "--api-key", KEY)
HELLO = [{"role": "user", "content": "Name three colors."}]
# This SDK version has no sampling arguments; the API (and the server) still take them.
GREEDY = {"temperature": 0}
WEATHER = {"name": "get_weather", "description": "Get the current weather in a city.",
           "input_schema": {"type": "object", "properties": {
               "city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
               "required": ["city", "unit"]}}
ANY_ONE = {"type": "any", "disable_parallel_tool_use": True}     # one call, then the reply ends
CLOCK = {"name": "get_time", "description": "Get the time in a time zone.",
         "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}},
                          "required": ["zone"]}}


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory(*ARGS)


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tools_client(server_factory):
    """Qwen2.5's template: tools in the prompt, <tool_call> replies (the hermes format)."""
    srv = server_factory(*ARGS, "--chat-template-file", str(template_path("Qwen-Qwen2.5-7B-Instruct")))
    return anthropic.Anthropic(base_url=srv.url, api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def thinking_client(server_factory):
    """QwQ's template: the generation prompt opens <think> when enable_thinking is true and
    closes it at once otherwise."""
    srv = server_factory(*ARGS, "--chat-template-file", str(template_path("Qwen-QwQ-32B")))
    return anthropic.Anthropic(base_url=srv.url, api_key=KEY, max_retries=0, timeout=60)


def create(client, **kw):
    kw.setdefault("model", "claude-test")
    kw.setdefault("messages", HELLO)
    kw.setdefault("max_tokens", 8)
    kw.setdefault("extra_body", GREEDY)
    return client.messages.create(**kw)


def text_of(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


# --- text ---------------------------------------------------------------------------------------

def test_create_answers_an_anthropic_message(client):
    m = create(client)
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert m.model == "claude-test"
    assert [b.type for b in m.content] == ["text"] and m.content[0].text
    assert m.stop_reason == "max_tokens" and m.stop_sequence is None
    assert m.usage.output_tokens == 8
    counted = client.messages.count_tokens(model="claude-test", messages=HELLO).input_tokens
    assert m.usage.input_tokens + m.usage.cache_read_input_tokens == counted


def test_a_second_identical_request_reads_the_prompt_from_the_cache(client):
    messages = [{"role": "user", "content": "Which colors make green?"}]
    create(client, messages=messages)
    again = create(client, messages=messages)
    assert again.usage.cache_read_input_tokens > 0
    assert again.usage.input_tokens < again.usage.cache_read_input_tokens


def test_system_blocks_are_one_system_message(client):
    blocks = [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in English."}]
    count = client.messages.count_tokens
    with_blocks = count(model="m", system=blocks, messages=HELLO).input_tokens
    as_text = count(model="m", system="You are terse.\nAnswer in English.", messages=HELLO).input_tokens
    first_only = count(model="m", system="You are terse.", messages=HELLO).input_tokens
    assert with_blocks == as_text > first_only
    assert text_of(create(client, system=blocks))


def test_claude_codes_changing_billing_stamp_does_not_change_the_prompt(server):
    def prompt_tokens(stamp):
        system = [{"type": "text", "text": f"x-anthropic-billing-header: cc_version=2.1; cch={stamp};"},
                  {"type": "text", "text": "You are Claude Code."}]
        r = server.post("/v1/messages/count_tokens", headers={"x-api-key": KEY},
                        json={"model": "m", "system": system, "messages": HELLO})
        assert r.status_code == 200, r.text
        return r.json()["input_tokens"]
    assert prompt_tokens("a5145") == prompt_tokens("0b9e2")


def test_stop_sequences_end_the_reply_and_say_which_matched(client):
    free = text_of(create(client, max_tokens=16))
    word = free.split()[2]
    cut = create(client, max_tokens=16, stop_sequences=["@@never@@", word])
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == word
    assert text_of(cut) == free[:free.index(word)]


def test_a_reply_that_ends_by_itself_is_end_turn(client):
    m = create(client, max_tokens=200, messages=[{"role": "user", "content": "Say just: OK"}])
    assert m.stop_reason == "end_turn" and m.usage.output_tokens < 200


def test_an_assistant_turn_last_is_continued(client):
    messages = HELLO + [{"role": "assistant", "content": "Red, green and"}]
    m = create(client, messages=messages)
    assert text_of(m) and not text_of(m).startswith("Red, green")


COLOR = {"type": "object", "properties": {"color": {"type": "string", "enum": ["red", "blue"]}},
         "required": ["color"], "additionalProperties": False}


def test_output_config_format_constrains_the_text_to_the_schema(client):
    m = create(client, max_tokens=40, output_config={"format": {"type": "json_schema", "schema": COLOR}})
    jsonschema.validate(json.loads(text_of(m)), COLOR)
    assert m.stop_reason == "end_turn"


# --- streaming ----------------------------------------------------------------------------------

def test_stream_sends_every_event_in_order_and_the_same_text(client):
    whole = create(client, max_tokens=12)
    with client.messages.create(model="m", messages=HELLO, max_tokens=12, extra_body=GREEDY,
                                stream=True) as events:
        events = list(events)
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[1] == "content_block_start"
    assert set(types[2:-3]) == {"content_block_delta"}
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = events[0].message
    assert start.content == [] and start.stop_reason is None and start.usage.input_tokens > 0
    assert all(e.index == 0 and e.delta.type == "text_delta" for e in events[2:-3])
    assert "".join(e.delta.text for e in events[2:-3]) == text_of(whole)
    assert events[-2].delta.stop_reason == whole.stop_reason
    assert events[-2].usage.output_tokens == whole.usage.output_tokens


def test_sdk_stream_helper_assembles_the_same_message(client):
    whole = create(client, max_tokens=12)
    with client.messages.stream(model="m", messages=HELLO, max_tokens=12, extra_body=GREEDY) as stream:
        streamed_text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed_text == text_of(final) == text_of(whole)
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == whole.usage.output_tokens


def test_streamed_stop_sequence_is_reported_in_message_delta(client):
    free = text_of(create(client, max_tokens=16))
    word = free.split()[1]
    with client.messages.stream(model="m", messages=HELLO, max_tokens=16, extra_body=GREEDY,
                                stop_sequences=[word]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == word
    assert text_of(final) == free[:free.index(word)]


# --- API key and errors --------------------------------------------------------------------------

def test_a_wrong_x_api_key_is_401_in_anthropic_shape(server):
    bad = anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0, timeout=30)
    with pytest.raises(anthropic.AuthenticationError) as info:
        create(bad)
    assert info.value.status_code == 401
    body = info.value.body
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["error"]["message"] == "Invalid API Key"
    r = server.post("/v1/messages/count_tokens", json={"messages": HELLO})   # no key at all
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


BAD_REQUESTS = {
    "no messages": {"max_tokens": 8},
    "messages not an array": {"messages": "hi", "max_tokens": 8},
    "empty messages": {"messages": [], "max_tokens": 8},
    "a system role in messages": {"messages": [{"role": "system", "content": "x"}]},
    "content neither string nor blocks": {"messages": [{"role": "user", "content": 5}]},
    "a block that is not an object": {"messages": [{"role": "user", "content": ["hi"]}]},
    "a text block without text": {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
    "an unknown block type": {"messages": [{"role": "user", "content": [{"type": "hologram"}]}]},
    "tool_use in a user turn": {"messages": [{"role": "user", "content": [
        {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]}]},
    "tool_use input not an object": {"messages": [HELLO[0], {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "name": "f", "input": "x"}]}]},
    "a tool_result for an unknown id": {"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_nowhere", "content": "42"}]}]},
    "an image without a source": {"messages": [{"role": "user", "content": [{"type": "image"}]}]},
    "system of numbers": {"system": [1, 2], "messages": HELLO},
    "stop_sequences not strings": {"messages": HELLO, "stop_sequences": [1]},
    "a tool without input_schema": {"messages": HELLO, "tools": [{"name": "f"}]},
    "an unknown tool_choice": {"messages": HELLO, "tools": [WEATHER], "tool_choice": {"type": "some"}},
    "tool_choice naming a missing tool": {"messages": HELLO, "tools": [WEATHER],
                                          "tool_choice": {"type": "tool", "name": "nope"}},
    "thinking without budget": {"messages": HELLO, "thinking": {"type": "enabled"}},
}
# fields only generation reads
BAD_GENERATION = {
    "max_tokens negative": {"messages": HELLO, "max_tokens": -5},
    "stream not a boolean": {"messages": HELLO, "stream": "yes"},
    "temperature a string": {"messages": HELLO, "temperature": "hot"},
}
CASES = [("/v1/messages", body, name) for name, body in {**BAD_REQUESTS, **BAD_GENERATION}.items()] \
    + [("/v1/messages/count_tokens", body, name) for name, body in BAD_REQUESTS.items()]


@pytest.mark.parametrize("path, body", [c[:2] for c in CASES], ids=[f"{c[0]} {c[2]}" for c in CASES])
def test_bad_input_is_a_400_in_anthropic_shape(server, path, body):
    r = server.post(path, json=body, headers={"x-api-key": KEY}, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert isinstance(err["error"]["message"], str) and err["error"]["message"]


def test_a_body_that_is_not_json_is_a_400_in_anthropic_shape(server):
    r = server.post("/v1/messages", data=b"{not json", headers={"x-api-key": KEY,
                                                                "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_a_bad_streamed_request_is_an_http_400_not_a_stream(client):
    with pytest.raises(anthropic.BadRequestError) as info:
        with client.messages.stream(model="m", max_tokens=8, messages=[
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}]) as s:
            s.get_final_message()
    assert "tool_use_id" in info.value.body["error"]["message"]


def test_a_prompt_longer_than_the_context_is_a_400(client):
    with pytest.raises(anthropic.BadRequestError) as info:
        create(client, messages=[{"role": "user", "content": "word " * 3000}])
    assert info.value.body["error"]["type"] == "invalid_request_error"


def test_a_failure_after_the_first_event_ends_the_stream_with_an_error_event():
    """No engine failure can be ordered mid-stream from outside, so ChatCall's chunks are
    played here: a failure after the first chunk must close the stream with Anthropic's
    error event, which the SDK raises."""
    from webapp.errors import ApiError
    from webapp.routes import anthropic as route

    def chunks():
        for delta in ({"role": "assistant", "content": ""}, {"content": "Hel"}):
            yield {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        raise ApiError("the engine stopped", "server_error", 500)
    call = SimpleNamespace(meta={"model": "m"}, setup=SimpleNamespace(tokens=[1, 2, 3]))
    raw = b"".join(route._sse(route._stream_events(call, chunks(), "msg_1"), "req-1")).decode()
    frames = [block.split("\n") for block in raw.strip().split("\n\n")]
    assert [f[0] for f in frames] == ["event: message_start", "event: content_block_start",
                                      "event: content_block_delta", "event: error"]
    assert json.loads(frames[-1][1].removeprefix("data: ")) == {
        "type": "error", "error": {"type": "api_error", "message": "the engine stopped", "code": 500},
        "request_id": "req-1"}


# --- tools --------------------------------------------------------------------------------------

def tool_uses(message):
    return [b for b in message.content if b.type == "tool_use"]


def test_tool_choice_any_makes_a_valid_tool_use(tools_client):
    m = create(tools_client, max_tokens=64, tools=[WEATHER],
               messages=[{"role": "user", "content": "What is the weather in Paris?"}],
               tool_choice=ANY_ONE)
    assert m.stop_reason == "tool_use"
    (use,) = tool_uses(m)
    assert use.name == "get_weather" and use.id
    jsonschema.validate(use.input, WEATHER["input_schema"])


def test_tool_choice_tool_calls_that_tool(tools_client):
    m = create(tools_client, max_tokens=64, tools=[WEATHER, CLOCK],
               messages=[{"role": "user", "content": "What is the weather in Paris?"}],
               tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True})
    assert m.stop_reason == "tool_use"
    (use,) = tool_uses(m)
    assert use.name == "get_time"
    jsonschema.validate(use.input, CLOCK["input_schema"])


def test_tool_use_streams_as_input_json_deltas(tools_client):
    kw = dict(model="m", max_tokens=64, extra_body=GREEDY, tools=[WEATHER], tool_choice=ANY_ONE,
              messages=[{"role": "user", "content": "Weather in Oslo?"}])
    whole = tools_client.messages.create(**kw)
    with tools_client.messages.create(stream=True, **kw) as events:
        events = list(events)
    starts = [e for e in events if e.type == "content_block_start"]
    assert starts[-1].content_block.type == "tool_use" and starts[-1].content_block.name == "get_weather"
    index = starts[-1].index
    partial = "".join(e.delta.partial_json for e in events
                      if e.type == "content_block_delta" and e.index == index)
    assert json.loads(partial) == tool_uses(whole)[0].input
    assert [e for e in events if e.type == "message_delta"][0].delta.stop_reason == "tool_use"
    stops = [e.index for e in events if e.type == "content_block_stop"]
    assert stops == [s.index for s in starts] == list(range(len(starts)))


def test_a_tool_result_turn_gets_an_answer(tools_client):
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = create(tools_client, max_tokens=64, tools=[WEATHER], messages=[question],
                   tool_choice=ANY_ONE)
    (use,) = tool_uses(first)
    messages = [question, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": use.id,
                     "content": [{"type": "text", "text": "Sunny, 24 C"}]},
                    {"type": "text", "text": "Answer in one sentence."}]}]
    reply = create(tools_client, max_tokens=24, tools=[WEATHER], messages=messages)
    assert reply.stop_reason in ("end_turn", "max_tokens") and text_of(reply)
    counted = tools_client.messages.count_tokens(model="m", tools=[WEATHER], messages=messages)
    assert reply.usage.input_tokens + reply.usage.cache_read_input_tokens == counted.input_tokens


def test_tool_choice_none_keeps_tools_out_of_the_reply(tools_client):
    m = create(tools_client, max_tokens=16, tools=[WEATHER], tool_choice={"type": "none"},
               messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    assert not tool_uses(m) and m.stop_reason != "tool_use"


# --- thinking -----------------------------------------------------------------------------------

THINK = {"type": "enabled", "budget_tokens": 6}
QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]


def test_thinking_comes_first_as_a_thinking_block(thinking_client):
    m = create(thinking_client, messages=QUESTION, max_tokens=24, thinking=THINK)
    kinds = [b.type for b in m.content]
    assert kinds[0] == "thinking" and set(kinds[1:]) <= {"text"}
    assert m.content[0].thinking.strip() and m.content[0].signature == ""
    assert "<think>" not in text_of(m) and "</think>" not in text_of(m)


def test_thinking_disabled_gives_no_thinking_block(thinking_client):
    m = create(thinking_client, messages=QUESTION, max_tokens=12, thinking={"type": "disabled"})
    assert [b.type for b in m.content] == ["text"]


def test_streamed_thinking_arrives_as_thinking_deltas_then_text(thinking_client):
    whole = create(thinking_client, messages=QUESTION, max_tokens=24, thinking=THINK)
    with thinking_client.messages.create(model="m", messages=QUESTION, max_tokens=24, extra_body=GREEDY,
                                         thinking=THINK, stream=True) as events:
        events = list(events)
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    kinds = [d.type for d in deltas]
    first_text = kinds.index("text_delta") if "text_delta" in kinds else len(kinds)
    assert kinds[0] == "thinking_delta" and kinds[first_text - 1] == "signature_delta"
    assert "".join(d.thinking for d in deltas if d.type == "thinking_delta") == whole.content[0].thinking
    assert "".join(d.text for d in deltas if d.type == "text_delta") == text_of(whole)
    blocks = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert blocks[0] == "thinking"


def test_thinking_blocks_in_the_history_are_taken_as_reasoning_not_text(thinking_client):
    def count(*blocks):
        return thinking_client.messages.count_tokens(model="m", messages=[
            QUESTION[0], {"role": "assistant", "content": [*blocks, {"type": "text", "text": "4"}]},
            {"role": "user", "content": "And 3 + 3?"}]).input_tokens
    # QwQ's template leaves past reasoning out of the prompt
    assert count({"type": "thinking", "thinking": "Two and two make four.", "signature": ""},
                 {"type": "redacted_thinking", "data": "opaque"}) == count()
