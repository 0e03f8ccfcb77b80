"""Tool calls through /v1/chat/completions with the official openai SDK, the real model and
real templates: Qwen 2.5's (Hermes `<tool_call>` format, from the llama-cpp-python sdist) and
the default SmolLM2 ChatML template (no tool support: the generic format)."""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.sdist import template_path

from .sse import stream

pytestmark = pytest.mark.slow

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 24}},
                   "required": ["zone"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def qwen(server_factory):
    return server_factory("-np", "2", "-c", "4096", "-t", "1",
                          "--chat-template-file", str(template_path("Qwen-Qwen2.5-7B-Instruct")))


@pytest.fixture(scope="module")
def generic(server_factory):
    return server_factory("-np", "2", "-c", "4096", "-t", "1")


def client_of(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=120)


def create(srv, **kw):
    kw.setdefault("model", "m")
    kw.setdefault("messages", ASK)
    kw.setdefault("max_tokens", 80)
    kw.setdefault("temperature", 0)
    return client_of(srv).chat.completions.create(**kw)


def check_call(call, tool):
    assert call.type == "function" and call.id
    assert call.function.name == tool["function"]["name"]
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, tool["function"]["parameters"])
    return args


@pytest.mark.parametrize("which", ["qwen", "generic"])
def test_required_gives_a_valid_call(request, which):
    srv = request.getfixturevalue(which)
    r = create(srv, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == ""
    assert len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    check_call(call, WEATHER if call.function.name == "get_weather" else TIME)


@pytest.mark.parametrize("which", ["qwen", "generic"])
def test_a_named_function_is_honoured(request, which):
    srv = request.getfixturevalue(which)
    for tool in (WEATHER, TIME):
        r = create(srv, tools=[WEATHER, TIME],
                   tool_choice={"type": "function", "function": {"name": tool["function"]["name"]}})
        calls = r.choices[0].message.tool_calls
        assert calls and all(c.function.name == tool["function"]["name"] for c in calls)
        check_call(calls[0], tool)
        assert r.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("which", ["qwen", "generic"])
def test_streamed_call_deltas_add_up_to_the_whole_message(request, which):
    srv = request.getfixturevalue(which)
    body = {"messages": ASK, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 80,
            "temperature": 0, "parallel_tool_calls": False,
            # both evaluate the whole prompt: a cached prefix changes the batch layout, which
            # may flip a near-tie of the greedy choice
            "cache_prompt": False}
    whole = srv.post("/v1/chat/completions", json=body).json()["choices"][0]
    events, _ = stream(srv.url + "/v1/chat/completions", {**body, "stream": True})
    assert events[-1] == "[DONE]"
    chunks = [e["choices"][0] for e in events[:-1] if e["choices"]]
    calls: dict[int, dict] = {}
    for c in chunks:
        for d in c["delta"].get("tool_calls") or []:
            if d["index"] not in calls:
                # the first delta of a call names it and carries its id and type
                assert d["id"] and d["type"] == "function" and d["function"]["name"]
                calls[d["index"]] = {"id": d["id"], "name": d["function"]["name"], "arguments": ""}
            else:
                assert "name" not in d["function"] and d.get("id") in (None, calls[d["index"]]["id"])
            calls[d["index"]]["arguments"] += d["function"].get("arguments") or ""
    assert chunks[-1]["finish_reason"] == "tool_calls"
    expected = whole["message"]["tool_calls"]
    assert [(c["name"], c["arguments"]) for c in calls.values()] == \
        [(c["function"]["name"], c["function"]["arguments"]) for c in expected]
    assert "".join(c["delta"].get("content") or "" for c in chunks) == whole["message"]["content"]
    # and through the SDK's own stream accumulation
    acc: dict[int, str] = {}
    sdk_args = {k: v for k, v in body.items() if k != "cache_prompt"}
    for chunk in client_of(srv).chat.completions.create(model="m", stream=True, **sdk_args,
                                                        extra_body={"cache_prompt": False}):
        for d in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            acc[d.index] = acc.get(d.index, "") + (d.function.arguments or "")
    assert list(acc.values()) == [c["function"]["arguments"] for c in expected]


def test_a_full_call_result_answer_turn(qwen):
    first = create(qwen, tools=[WEATHER], tool_choice="required")
    call = first.choices[0].message.tool_calls[0]
    messages = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees"},
    ]
    # the template renders the call (arguments as an object) and the result
    prompt = qwen.post("/apply-template", json={"messages": messages, "tools": [WEATHER]}).json()["prompt"]
    assert "<tool_call>" in prompt and '"name": "get_weather"' in prompt
    assert "<tool_response>\nSunny, 21 degrees\n</tool_response>" in prompt
    second = create(qwen, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=12)
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls
    assert second.choices[0].finish_reason in ("stop", "length")


def test_generic_format_describes_the_tools_and_renders_the_history(generic):
    call = create(generic, tools=[WEATHER], tool_choice="required").choices[0].message.tool_calls[0]
    prompt = generic.post("/apply-template", json={"messages": ASK, "tools": [WEATHER]}).json()["prompt"]
    assert "get_weather" in prompt and '"city"' in prompt      # the tool and its schema are described
    messages = ASK + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                      {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees"}]
    prompt = generic.post("/apply-template", json={"messages": messages, "tools": [WEATHER]}).json()["prompt"]
    assert "Sunny, 21 degrees" in prompt and "get_weather" in prompt
    answer = create(generic, messages=messages, tools=[WEATHER], max_tokens=10)
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_auto_lets_the_model_answer_in_text(generic, qwen):
    for srv in (generic, qwen):
        r = create(srv, messages=[{"role": "user", "content": "Say hello."}], tools=[WEATHER],
                   tool_choice="auto", max_tokens=8)
        msg = r.choices[0].message
        # whatever the tiny model chose, the reply parses: text, or valid calls
        if msg.tool_calls:
            check_call(msg.tool_calls[0], WEATHER)
            assert r.choices[0].finish_reason == "tool_calls"
        else:
            assert msg.content and r.choices[0].finish_reason in ("stop", "length")


def test_none_shows_no_tools_and_parses_nothing(qwen):
    with_tools = qwen.post("/apply-template", json={"messages": ASK, "tools": [WEATHER]}).json()["prompt"]
    without = qwen.post("/apply-template", json={"messages": ASK, "tools": [WEATHER],
                                                  "tool_choice": "none"}).json()["prompt"]
    assert "get_weather" in with_tools and "get_weather" not in without
    r = create(qwen, tools=[WEATHER], tool_choice="none", max_tokens=8)
    assert r.choices[0].message.tool_calls is None


def test_parallel_calls_may_come_in_one_reply(qwen):
    r = create(qwen, messages=[{"role": "user", "content": "Weather in Paris and in Rome, please."}],
               tools=[WEATHER], tool_choice="required", parallel_tool_calls=True, max_tokens=160)
    calls = r.choices[0].message.tool_calls
    assert calls and len({c.id for c in calls}) == len(calls)
    for c in calls:
        check_call(c, WEATHER)


@pytest.mark.parametrize("extra, needle", [
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope"),
    ({"tool_choice": {"type": "function"}}, "tool_choice"),
    ({"grammar": 'root ::= "x"'}, "grammar"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                 "properties": {"a": {"type": "strin"}}}}}]}, "tools[0]"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
     "tools[0]"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"tools": {"name": "f"}}, "tools"),
    ({"tools": [WEATHER, WEATHER]}, "twice"),
    ({"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
])
def test_bad_tool_requests_are_400_naming_the_problem(generic, extra, needle):
    body = {"messages": ASK, "tools": [WEATHER], "max_tokens": 4, **extra}
    r = generic.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client_of(generic).chat.completions.create(model="m", messages=ASK, max_tokens=4, extra_body={
            k: v for k, v in body.items() if k not in ("messages", "max_tokens")})


def test_required_without_tools_is_400(generic):
    r = generic.post("/v1/chat/completions", json={"messages": ASK, "tool_choice": "required"})
    assert r.status_code == 400 and "tools" in r.json()["error"]["message"]


@pytest.fixture(scope="module")
def marker_model(tmp_path_factory, model_path):
    """The default model with two unused special tokens (<gh_stars>, <issue_start>) renamed
    <tool_call> and </tool_call>: the markers are single tokens of a real vocabulary."""
    from tests.gguf_builders import renamed_tokens_model
    dst = tmp_path_factory.mktemp("markers") / "markers.gguf"
    return renamed_tokens_model(str(model_path), str(dst), {7: "<tool_call>", 8: "</tool_call>"})


def test_single_token_markers_stay_single_tokens(server_factory, marker_model):
    srv = server_factory("-m", marker_model, "-np", "1", "-c", "4096", "-t", "1",
                         "--chat-template-file", str(template_path("Qwen-Qwen2.5-7B-Instruct")))
    body = {"messages": ASK, "tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False,
            "max_tokens": 80, "temperature": 0, "logprobs": True}
    r = srv.post("/v1/chat/completions", json=body).json()
    choice = r["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    check_call(openai.types.chat.ChatCompletionMessageToolCall(**choice["message"]["tool_calls"][0]), WEATHER)
    tokens = [t["token"] for t in choice["logprobs"]["content"]]
    # the grammar wrote each marker as its token, not as "<", "tool", "_", "call", ">"
    assert tokens[0] == "<tool_call>" and "</tool_call>" in tokens
    assert "tool" not in tokens and "_call" not in tokens
