"""Reasoning output: `<think>` blocks split into reasoning_content, the budget, the flags.

The default model does not think by itself, so the template's generation prompt opens the
block (as DeepSeek R1's and Qwen 3's do) and the end is forced by the reasoning budget or by
a grammar: what the model writes before the end marker is reasoning, the rest is content.
"""
from __future__ import annotations

import openai
import pytest
import requests

from .sse import stream

pytestmark = pytest.mark.slow

# ChatML whose generation prompt opens a thinking block unless enable_thinking is false.
THINK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}")
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(server_factory, tmp_path_factory):
    path = tmp_path_factory.mktemp("think") / "think.jinja"
    path.write_text(THINK_TEMPLATE)
    return server_factory("-np", "2", "-c", "2048", "-t", "1", "--chat-template-file", str(path))


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)


def ask(server, **kw):
    body = {"messages": ASK, "max_tokens": 24, "temperature": 0, **kw}
    r = server.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def n_tokens(server, text: str) -> int:
    return len(server.post("/tokenize", json={"content": text}).json()["tokens"])


def test_budget_forces_the_end_marker_and_splits_reasoning_from_content(server):
    choice = ask(server, reasoning_budget_tokens=6)
    msg = choice["message"]
    assert msg["reasoning_content"] and "</think>" not in msg["reasoning_content"]
    # six tokens of thought (tokenizing the stripped text again may merge or split a little)
    assert 3 <= n_tokens(server, msg["reasoning_content"]) <= 8
    assert "<think>" not in msg["content"] and "</think>" not in msg["content"]
    # the raw text, kept with reasoning_format none, has the forced marker after the thought
    raw = ask(server, reasoning_budget_tokens=6, reasoning_format="none")["message"]
    assert "reasoning_content" not in raw
    head, sep, tail = raw["content"].partition("</think>")
    assert sep and head.strip() == msg["reasoning_content"] and tail.strip() == msg["content"].strip()


def test_thinking_budget_tokens_is_an_alias_and_zero_ends_at_once(server):
    assert ask(server, thinking_budget_tokens=6)["message"] == ask(server, reasoning_budget_tokens=6)["message"]
    zero = ask(server, reasoning_budget_tokens=0)["message"]
    assert "reasoning_content" not in zero and zero["content"]


def test_without_a_budget_an_unclosed_block_is_all_reasoning(server):
    msg = ask(server, max_tokens=10)["message"]
    assert msg["content"] == "" and msg["reasoning_content"]


def test_a_grammar_can_end_the_reasoning(server):
    grammar = 'root ::= "Paris is big" "</think>" " Paris."'
    msg = ask(server, grammar=grammar)["message"]
    assert msg == {"role": "assistant", "reasoning_content": "Paris is big", "content": "Paris."}
    legacy = ask(server, grammar=grammar, reasoning_format="deepseek-legacy")["message"]
    assert legacy["reasoning_content"] == "Paris is big"
    assert legacy["content"] == "Paris is big</think>Paris."


def test_streamed_deltas_add_up_to_the_whole_message(server, client):
    whole = ask(server, reasoning_budget_tokens=5, max_tokens=16)
    events, _ = stream(server.url + "/v1/chat/completions",
                       {"messages": ASK, "max_tokens": 16, "temperature": 0,
                        "reasoning_budget_tokens": 5, "stream": True})
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    content = "".join(d.get("content") or "" for d in deltas)
    assert reasoning == whole["message"]["reasoning_content"]
    assert content == whole["message"]["content"]
    assert any(d.get("reasoning_content") for d in deltas) and events[-1] == "[DONE]"
    # through the SDK, the extra field is kept on the delta
    got = ""
    for chunk in client.chat.completions.create(model="m", messages=ASK, max_tokens=16, temperature=0,
                                                stream=True, extra_body={"reasoning_budget_tokens": 5}):
        if chunk.choices:
            got += getattr(chunk.choices[0].delta, "reasoning_content", None) or ""
    assert got == reasoning


def test_enable_thinking_and_reasoning_effort_reach_the_template(server):
    def prompt(**kw):
        r = server.post("/apply-template", json={"messages": ASK, **kw})
        assert r.status_code == 200, r.text
        return r.json()["prompt"]
    assert prompt().endswith("<think>\n")
    closed = "<think>\n\n</think>\n\n"
    assert prompt(chat_template_kwargs={"enable_thinking": False}).endswith(closed)
    assert prompt(reasoning_effort="none").endswith(closed)
    assert prompt(reasoning_effort="high").endswith("<think>\n")
    # thinking off: nothing is reasoning, the answer is content
    off = ask(server, chat_template_kwargs={"enable_thinking": False}, max_tokens=8)["message"]
    assert "reasoning_content" not in off and off["content"]


@pytest.mark.parametrize("body, needle", [
    ({"chat_template_kwargs": {"enable_thinking": "false"}}, "enable_thinking"),
    ({"enable_thinking": 0}, "enable_thinking"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"reasoning_format": "xml"}, "reasoning_format"),
    ({"reasoning_budget_tokens": -2}, "reasoning_budget_tokens"),
    ({"thinking_budget_tokens": "5"}, "thinking_budget_tokens"),
    ({"chat_template_kwargs": {"messages": []}}, "chat_template_kwargs"),
])
def test_bad_reasoning_fields_are_400_naming_the_field(server, body, needle):
    r = server.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 2, **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"] == "invalid_request_error"


def test_server_flags_set_the_defaults(server_factory, tmp_path):
    path = tmp_path / "think.jinja"
    path.write_text(THINK_TEMPLATE)
    srv = server_factory("-np", "1", "-c", "1024", "-t", "1", "--chat-template-file", str(path),
                         "--reasoning-budget", "4", "--reasoning", "off", shared=False)
    try:
        p = srv.post("/apply-template", json={"messages": ASK}).json()["prompt"]
        assert p.endswith("<think>\n\n</think>\n\n")        # --reasoning off
        on = srv.post("/apply-template", json={"messages": ASK,
                                                "chat_template_kwargs": {"enable_thinking": True}})
        assert on.json()["prompt"].endswith("<think>\n")    # a request may turn it back on
        r = srv.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 16, "temperature": 0,
                                                   "chat_template_kwargs": {"enable_thinking": True}})
        msg = r.json()["choices"][0]["message"]
        assert msg["reasoning_content"] and 2 <= n_tokens(srv, msg["reasoning_content"]) <= 6
    finally:
        srv.stop()


@pytest.mark.parametrize("flags, needle", [
    (("--chat-template-kwargs", "{not json"), "--chat-template-kwargs"),
    (("--chat-template-kwargs", '{"enable_thinking": "yes"}'), "enable_thinking"),
    (("--reasoning-budget", "-5"), "--reasoning-budget"),
])
def test_bad_reasoning_flags_stop_startup(flags, needle):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "webapp.cli", *flags], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and needle in r.stderr


def test_apply_template_needs_messages(server):
    r = server.post("/apply-template", json={})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    assert requests.get(server.url + "/apply-template").status_code == 405
