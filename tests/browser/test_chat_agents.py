"""Chat mode shows a reply's reasoning in a collapsible block and its tool calls (issue #12),
in a real browser against the real server and model."""
from __future__ import annotations

import json

import pytest

from .test_front_end import open_ui, screenshot, send_chat

pytestmark = [pytest.mark.browser, pytest.mark.slow]

THINK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module")
def srv(server_factory, tmp_path_factory):
    path = tmp_path_factory.mktemp("think-ui") / "think.jinja"
    path.write_text(THINK_TEMPLATE)
    # the generation prompt opens <think>; the budget ends it after 4 tokens
    return server_factory("-np", "1", "-c", "1024", "-t", "1", "--chat-template-file", str(path),
                          "--reasoning-budget", "4")


def test_reasoning_shows_in_a_collapsible_block(new_page, srv):
    page = new_page()
    open_ui(page, srv)
    reply = send_chat(page, "What is two plus two?")
    box = reply.locator("details.reasoning")
    assert box.is_visible()
    assert box.locator("summary").inner_text() == "Reasoning"
    assert box.get_attribute("open") is None            # closed once the answer came
    box.locator("summary").click()
    thought = box.locator(".reasoning-text").inner_text()
    assert thought.strip() and "<think>" not in thought and "</think>" not in thought
    # the block's end marker is not shown (the model may write the marker again later, as
    # text of its answer: the first one ends the reasoning)
    answer = reply.locator(".content").inner_text()
    assert not answer.lstrip().startswith("</think>")
    screenshot(page, "chat-reasoning")


def test_tool_calls_show_with_name_and_arguments(new_page, srv):
    """The page itself sends no tools; the request is extended on its way to the real server
    (as an agent front end would send them) and the page renders what comes back."""
    page = new_page()
    open_ui(page, srv)

    def with_tools(route):
        body = json.loads(route.request.post_data)
        body.update(tools=[WEATHER], tool_choice="required", parallel_tool_calls=False,
                    reasoning_budget_tokens=0)
        route.continue_(post_data=json.dumps(body))
    page.route("**/v1/chat/completions", with_tools)
    reply = send_chat(page, "Weather in Paris?")
    call = reply.locator(".tool-calls .tool-call")
    assert call.count() == 1
    assert call.locator(".tool-name").inner_text() == "get_weather"
    args = json.loads(call.locator(".tool-args").inner_text())
    assert isinstance(args.get("city"), str)
    assert not reply.locator(".meta .error").count()
    screenshot(page, "chat-tool-call")
