"""OpenAI's Responses API (/v1/responses) through the official openai SDK, against the real
server and model: text, instructions, streamed response.* events, a function tool with
tool_choice "required" and its function_call_output follow-up, token counting, and 400s in
the OpenAI error shape."""
from __future__ import annotations

import json
from types import SimpleNamespace

import jsonschema
import openai
import pytest

from tests.sdist import template_path

pytestmark = pytest.mark.slow

KEY = "sk-test-agents"
ARGS = ("-np", "2", "-c", "2048", "-t", "1", "--api-key", KEY)     # as test_anthropic: one process
QUESTION = "Name three colors."
WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather in a city.",
           "parameters": {"type": "object", "properties": {
               "city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
               "required": ["city", "unit"], "additionalProperties": False},
           "strict": True}


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory(*ARGS)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tools_client(server_factory):
    """Qwen2.5's template: tools in the prompt, <tool_call> replies (the hermes format)."""
    srv = server_factory(*ARGS, "--chat-template-file", str(template_path("Qwen-Qwen2.5-7B-Instruct")))
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def create(client, **kw):
    kw.setdefault("model", "gpt-test")
    kw.setdefault("input", QUESTION)
    kw.setdefault("max_output_tokens", 8)
    kw.setdefault("temperature", 0)
    return client.responses.create(**kw)


# --- text ---------------------------------------------------------------------------------------

def test_create_answers_a_response(client):
    r = create(client)
    assert r.object == "response" and r.id.startswith("resp_") and r.model == "gpt-test"
    (item,) = r.output
    assert item.type == "message" and item.role == "assistant" and item.id.startswith("msg_")
    assert [c.type for c in item.content] == ["output_text"] and r.output_text
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 8
    assert r.usage.total_tokens == r.usage.input_tokens + 8
    assert r.store is False


def test_a_reply_that_ends_by_itself_is_completed(client):
    r = create(client, max_output_tokens=200, input="Say just: OK")
    assert r.status == "completed" and r.incomplete_details is None
    assert r.output[0].status == "completed" and r.usage.output_tokens < 200


def test_instructions_and_input_items_build_the_conversation(client):
    brief = create(client, instructions="Be brief.")
    taught = create(client, instructions="You are a painter.")
    assert taught.usage.input_tokens > brief.usage.input_tokens
    items = create(client, input=[{"role": "developer", "content": "You are a painter."},
                                  {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}])
    assert items.usage.input_tokens == taught.usage.input_tokens
    assert items.output_text == taught.output_text


def test_input_tokens_counts_the_prompt(client):
    r = create(client, instructions="Be brief.")
    counted = client.responses.input_tokens.count(model="m", input=QUESTION, instructions="Be brief.")
    assert counted.input_tokens == r.usage.input_tokens


def test_an_earlier_assistant_message_is_part_of_the_conversation(client):
    first = create(client)
    follow = create(client, input=[{"role": "user", "content": QUESTION},
                                   *[o.model_dump() for o in first.output],
                                   {"role": "user", "content": "And one more?"}])
    assert follow.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert follow.output_text


def test_text_format_json_schema_constrains_the_reply(client):
    color = {"type": "object", "properties": {"color": {"type": "string", "enum": ["red", "blue"]}},
             "required": ["color"], "additionalProperties": False}
    r = create(client, max_output_tokens=40,
               text={"format": {"type": "json_schema", "name": "color", "schema": color, "strict": True}})
    jsonschema.validate(json.loads(r.output_text), color)
    assert r.status == "completed"


def test_llama_cpp_fields_pass_through(client):
    r = create(client, max_output_tokens=20, extra_body={"n_predict": 3})
    assert r.usage.output_tokens == 3


# --- streaming ----------------------------------------------------------------------------------

def test_stream_sends_response_events_in_order_and_the_same_text(client):
    whole = create(client, max_output_tokens=12)
    events = list(create(client, max_output_tokens=12, stream=True))
    types = [e.type for e in events]
    final = "response." + whole.status
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", final]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    item_id = events[2].item.id
    assert all(e.item_id == item_id for e in events[3:-2])
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-4].text == events[-1].response.output_text == whole.output_text
    assert events[-1].response.id == events[0].response.id
    assert events[-1].response.usage.output_tokens == whole.usage.output_tokens


def test_sdk_stream_helper_follows_the_events(client):
    whole = create(client, max_output_tokens=12)
    with client.responses.stream(model="m", input=QUESTION, max_output_tokens=12, temperature=0) as stream:
        events = list(stream)
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert deltas and deltas[-1].snapshot == whole.output_text    # the helper's running text
    assert events[-1].response.output_text == whole.output_text


def test_a_failure_after_the_first_event_sends_error_then_response_failed():
    """No engine failure can be ordered mid-stream from outside, so ChatCall's chunks are
    played here."""
    from webapp.errors import ApiError
    from webapp.routes import responses as route

    def chunks():
        for delta in ({"role": "assistant", "content": ""}, {"content": "Hel"}):
            yield {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        raise ApiError("the engine stopped", "server_error", 500)
    reply = route._Reply(SimpleNamespace(meta={"model": "m"}), {"input": "hi"})
    raw = b"".join(route._sse(reply, chunks())).decode()
    events = [json.loads(block.split("\n")[1].removeprefix("data: ")) for block in raw.strip().split("\n\n")]
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta", "error", "response.failed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-2]["message"] == "the engine stopped" and events[-2]["code"] == "server_error"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["id"] == events[0]["response"]["id"]
    assert failed["error"] == {"code": "server_error", "message": "the engine stopped"}


# --- tools --------------------------------------------------------------------------------------

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL_ONE = dict(tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)   # then it ends


def calls_of(response):
    return [o for o in response.output if o.type == "function_call"]


def test_tool_choice_required_makes_a_valid_function_call(tools_client):
    r = create(tools_client, input=ASK, **CALL_ONE, max_output_tokens=64)
    assert r.status == "completed"
    (call,) = calls_of(r)
    assert call.name == "get_weather" and call.call_id and call.id.startswith("fc_")
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])


def test_function_call_output_continues_the_turn(tools_client):
    first = create(tools_client, input=ASK, **CALL_ONE, max_output_tokens=64)
    (call,) = calls_of(first)
    follow = create(tools_client, tools=[WEATHER], max_output_tokens=24, input=[
        *ASK, *[o.model_dump() for o in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 C"}])
    assert follow.output_text and not calls_of(follow)
    assert follow.usage.input_tokens > first.usage.input_tokens


def test_streamed_function_call_arrives_as_argument_deltas(tools_client):
    kw = dict(input=ASK, **CALL_ONE, max_output_tokens=64)
    whole = create(tools_client, **kw)
    with tools_client.responses.stream(model="m", temperature=0, **kw) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types and types[-1] == "response.completed"
    (call,) = calls_of(final)
    (expected,) = calls_of(whole)
    assert call.name == expected.name and json.loads(call.arguments) == json.loads(expected.arguments)
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == call.arguments


# --- errors -------------------------------------------------------------------------------------

BAD_REQUESTS = {
    "no input": {"model": "m"},
    "input a number": {"input": 5},
    "empty input": {"input": []},
    "an item that is not an object": {"input": ["hi"]},
    "an unknown item type": {"input": [{"type": "hologram"}]},
    "a message with a bad role": {"input": [{"role": "robot", "content": "hi"}]},
    "a content part of an unknown type": {"input": [{"role": "user", "content": [{"type": "input_video"}]}]},
    "input_text without text": {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
    "a function_call without call_id": {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
    "a function_call_output for an unknown call": {"input": [
        {"role": "user", "content": "hi"},
        {"type": "function_call_output", "call_id": "call_nowhere", "output": "42"}]},
    "previous_response_id": {"input": "hi", "previous_response_id": "resp_123"},
    "instructions not a string": {"input": "hi", "instructions": ["x"]},
    "tool_choice of an unknown kind": {"input": "hi", "tools": [WEATHER],
                                       "tool_choice": {"type": "web_search"}},
    "tool_choice required without tools": {"input": "hi", "tool_choice": "required"},
    "text.format of an unknown type": {"input": "hi", "text": {"format": {"type": "yaml"}}},
}
BAD_GENERATION = {
    "max_output_tokens negative": {"input": "hi", "max_output_tokens": -1},
    "stream not a boolean": {"input": "hi", "stream": "yes"},
}
CASES = [("/v1/responses", body, name) for name, body in {**BAD_REQUESTS, **BAD_GENERATION}.items()] \
    + [("/v1/responses/input_tokens", body, name) for name, body in BAD_REQUESTS.items()]


@pytest.mark.parametrize("path, body", [c[:2] for c in CASES], ids=[f"{c[0]} {c[2]}" for c in CASES])
def test_bad_input_is_a_400_in_the_openai_shape(server, path, body):
    r = server.post(path, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == 400 and err["type"] == "invalid_request_error" and err["message"]


def test_the_sdk_raises_bad_request_on_a_streamed_request_too(client):
    with pytest.raises(openai.BadRequestError) as info:
        list(create(client, input=[{"type": "function_call_output", "call_id": "x", "output": "1"}],
                    stream=True))
    assert "call_id" in info.value.message


def test_a_wrong_key_is_401(server):
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        create(bad)
