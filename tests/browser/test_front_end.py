"""The web front end in a real browser against the real server and model (issue #7)."""
from __future__ import annotations

import json
import time

import pytest

from tests.conftest import ARTIFACTS

from .conftest import DESKTOP, PHONE

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GENERATION_TIMEOUT = 60_000   # ms; two shared cores, a 135M model


@pytest.fixture(scope="module")
def srv(server):
    return server


def open_ui(page, srv, mode="chat"):
    page.goto(srv.url + "/")
    page.wait_for_function("document.body.dataset.mode !== undefined")
    if mode == "completion":
        page.click("#tab-completion")
    return json.loads(page.inner_text("#server-config"))


def set_settings(page, **values):
    """Type values into the settings panel, opening it first on narrow screens."""
    if not page.is_visible("#settings"):
        page.click("#settings-toggle")
    for name, value in values.items():
        el = page.locator(f"#settings-form [name={name}]")
        if el.evaluate("e => e.tagName") == "SELECT":
            el.select_option(str(value))
        else:
            el.fill(str(value))


def wait_idle(page):
    """The page marks itself busy synchronously when a request starts (in the click or
    Enter handler), so right after the action this waits for that request to end."""
    page.wait_for_selector("body:not(.busy)", timeout=GENERATION_TIMEOUT)


def send_chat(page, text):
    page.fill("#chat-input", text)
    page.keyboard.press("Enter")
    wait_idle(page)
    return page.locator("#messages .message.assistant").last


def screenshot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"ui-{name}.png"))


def posted(page, url_part):
    return lambda request: request.method == "POST" and url_part in request.url


def slots_processing(srv):
    return srv.get("/health").json()["slots_processing"]


def test_page_loads_without_console_errors(new_page, srv):
    page = new_page()
    config = open_ui(page, srv)
    assert config["urls"]["completion"] == "/completion"
    assert config["urls"]["chat"] == "/v1/chat/completions"
    assert page.get_attribute("#tab-chat", "aria-selected") == "true"
    assert page.is_visible("#chat-empty")
    page.click("#tab-completion")
    assert page.is_visible("#completion-prompt") and not page.is_visible("#chat-input")
    page.wait_for_load_state("networkidle")
    assert page.errors == []


def test_without_a_chat_route_only_completion_mode_is_offered(new_page, srv):
    def no_chat(route):
        html = route.fetch().text().replace('"chat": "/v1/chat/completions"', '"chat": null')
        route.fulfill(body=html, content_type="text/html")

    page = new_page()
    page.route(srv.url + "/", no_chat)
    config = open_ui(page, srv)
    assert config["urls"]["chat"] is None
    assert page.is_hidden("#tab-chat") and page.is_visible("#completion-prompt")
    assert page.errors == []


def test_a_chat_message_streams_a_reply_with_timings(new_page, srv):
    page = new_page()
    config = open_ui(page, srv)
    set_settings(page, n_predict=12, temperature=0)
    page.evaluate("""() => {
        window.snapshots = [];
        new MutationObserver(() => {
            const c = document.querySelector('#messages .assistant:last-child .content');
            if (c && c.textContent) window.snapshots.push(c.textContent);
        }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
    }""")
    with page.expect_request(posted(page, config["urls"]["chat"])) as req:
        reply = send_chat(page, "Write a short poem about the sea.")
    assert req.value.post_data_json["stream"] is True
    text = reply.locator(".content").text_content()
    assert text.strip()
    snapshots = page.evaluate("window.snapshots")
    assert len(set(snapshots)) >= 3, snapshots          # it grew as tokens arrived
    assert all(text.startswith(s) for s in snapshots)
    assert "tokens/s" in reply.locator(".meta").inner_text()
    assert page.locator("#messages .message.user .content").inner_text() == "Write a short poem about the sea."
    screenshot(page, "chat-desktop")
    assert page.errors == []


def test_stop_ends_generation_and_frees_the_slot(new_page, srv):
    page = new_page()
    open_ui(page, srv, mode="completion")
    set_settings(page, n_predict=2000)
    # Make sure the model cannot end on its own before Stop is pressed.
    page.route("**/completion", lambda route: route.continue_(
        post_data=json.dumps(dict(route.request.post_data_json, ignore_eos=True))))
    page.fill("#completion-prompt", "Once upon a time")
    page.click("#completion-run")
    page.wait_for_function("document.querySelector('#completion-output').textContent.length > 20",
                           timeout=GENERATION_TIMEOUT)
    assert slots_processing(srv) == 1
    assert page.is_visible("#completion-stop")
    page.click("#completion-stop")
    wait_idle(page)
    assert not page.is_visible("#completion-stop")
    assert "stopped" in page.inner_text("#completion-meta")
    deadline = time.time() + 10
    while slots_processing(srv) and time.time() < deadline:
        time.sleep(0.1)
    assert slots_processing(srv) == 0
    assert page.errors == []


def test_completion_mode_streams_what_the_server_generates(new_page, srv):
    page = new_page()
    open_ui(page, srv, mode="completion")
    set_settings(page, n_predict=6, temperature=0)
    prompt = "The three primary colors are"
    page.fill("#completion-prompt", prompt)
    page.click("#completion-run")
    wait_idle(page)
    expected = srv.post("/completion", json={"prompt": prompt, "n_predict": 6, "temperature": 0}).json()
    assert page.inner_text("#completion-output") == expected["content"]
    assert "tokens/s" in page.inner_text("#completion-meta")
    screenshot(page, "completion-desktop")
    page.click("#completion-append")
    assert page.input_value("#completion-prompt") == prompt + expected["content"]
    assert page.errors == []


SETTINGS = {"temperature": 0.3, "top_k": 7, "top_p": 0.5, "min_p": 0.1, "typical_p": 0.9,
            "repeat_penalty": 1.2, "repeat_last_n": 32, "presence_penalty": 0.5,
            "frequency_penalty": 0.25, "mirostat": 2, "mirostat_tau": 4, "mirostat_eta": 0.2,
            "seed": 42, "n_predict": 6}


def test_settings_change_the_completion_request(new_page, srv):
    page = new_page()
    open_ui(page, srv, mode="completion")
    set_settings(page, **SETTINGS, n_probs=2, stop="END\\n\nSTOP",
                 grammar='root ::= "yes" | "no"')
    page.fill("#completion-prompt", "Is the sky blue?")
    with page.expect_request(posted(page, "/completion")) as req:
        page.click("#completion-run")
    wait_idle(page)
    body = req.value.post_data_json
    for key, value in SETTINGS.items():
        assert body[key] == value, key
    assert body["n_probs"] == 2
    assert body["stop"] == ["END\n", "STOP"]
    assert body["grammar"] == 'root ::= "yes" | "no"'
    assert body["prompt"] == "Is the sky blue?" and body["stream"] is True
    assert page.inner_text("#completion-output") in ("yes", "no")   # the server used the grammar


def test_settings_change_the_chat_request(new_page, srv):
    page = new_page()
    config = open_ui(page, srv)
    set_settings(page, system="Answer with true or false.", n_predict=8, temperature=0, n_probs=3,
                 json_schema='{"type": "boolean"}')
    with page.expect_request(posted(page, config["urls"]["chat"])) as req:
        reply = send_chat(page, "Is water wet?")
    body = req.value.post_data_json
    assert body["json_schema"] == {"type": "boolean"} and body["temperature"] == 0
    assert body["messages"] == [{"role": "system", "content": "Answer with true or false."},
                                {"role": "user", "content": "Is water wet?"}]
    assert body["max_tokens"] == 8 and body["logprobs"] is True and body["top_logprobs"] == 3
    assert reply.locator(".content").inner_text().strip() in ("true", "false")


def test_bad_json_schema_is_reported_and_nothing_is_sent(new_page, srv):
    page = new_page()
    open_ui(page, srv, mode="completion")
    set_settings(page, json_schema="{not json")
    sent = []
    page.on("request", lambda r: r.method == "POST" and sent.append(r.url))
    page.click("#completion-run")
    assert page.is_visible("#settings-error")
    assert "JSON schema" in page.inner_text("#settings-error")
    assert sent == []


@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_token_probabilities_show_on_hover(new_page, srv, mode):
    page = new_page()
    open_ui(page, srv, mode=mode)
    set_settings(page, n_probs=3, n_predict=4, temperature=0)
    if mode == "chat":
        send_chat(page, "Name a fruit.")
        tokens = page.locator("#messages .assistant .tok")
    else:
        page.fill("#completion-prompt", "My favourite fruit is")
        page.click("#completion-run")
        wait_idle(page)
        tokens = page.locator("#completion-output .tok")
    assert tokens.count() >= 1
    assert page.is_hidden("#probs-pop")
    tokens.first.hover()
    pop = page.locator("#probs-pop")
    pop.wait_for(state="visible")
    rows = pop.locator("tr")
    assert rows.count() == 3
    assert "%" in rows.first.inner_text()
    assert pop.locator("tr.chosen").count() == 1   # greedy: the sampled token is among them
    page.mouse.move(1, 1)
    pop.wait_for(state="hidden")


def test_conversation_and_settings_survive_a_reload(new_page, srv):
    page = new_page()
    open_ui(page, srv)
    set_settings(page, n_predict=4, system="Be brief.")
    send_chat(page, "Hello!")
    before = page.locator("#messages .message").all_inner_texts()
    page.click("#tab-completion")
    page.fill("#completion-prompt", "kept prompt")
    page.reload()
    page.wait_for_function("document.body.dataset.mode !== undefined")
    assert page.get_attribute("#tab-completion", "aria-selected") == "true"
    assert page.input_value("#completion-prompt") == "kept prompt"
    page.click("#tab-chat")
    assert page.locator("#messages .message").all_inner_texts() == before
    assert page.input_value("#settings-form [name=n_predict]") == "4"
    assert page.input_value("#settings-form [name=system]") == "Be brief."
    page.click("#new-conversation")
    page.reload()
    page.wait_for_function("document.body.dataset.mode !== undefined")
    assert page.locator("#messages .message").count() == 0


OVERFLOW = """() => {
    const w = document.documentElement.clientWidth;
    const bad = [];
    for (const el of document.querySelectorAll('.app *')) {
        const r = el.getBoundingClientRect();
        if (r.width && (r.right > w + 1 || r.left < -1)) bad.push(el.tagName + '#' + el.id + '.' + el.className);
    }
    return {scroll: document.documentElement.scrollWidth, width: w, bad};
}"""


def test_phone_sized_window_has_no_horizontal_overflow(new_page, srv):
    page = new_page(PHONE, is_mobile=True, has_touch=True)
    open_ui(page, srv)
    set_settings(page, n_predict=4, temperature=0)
    page.click("#settings-close")
    assert page.is_hidden("#settings")
    send_chat(page, "https://example.com/" + "a-very-long-path-without-spaces" * 8)
    for state in ("chat", "settings"):
        result = page.evaluate(OVERFLOW)
        assert result["scroll"] <= result["width"] and result["bad"] == [], (state, result)
        if state == "chat":
            screenshot(page, "chat-phone")
            page.click("#settings-toggle")
    page.click("#settings-close")
    page.click("#tab-completion")
    page.fill("#completion-prompt", "Roses are red,")
    page.click("#completion-run")
    wait_idle(page)
    result = page.evaluate(OVERFLOW)
    assert result["scroll"] <= result["width"] and result["bad"] == [], result
    screenshot(page, "completion-phone")
    assert page.errors == []


def test_a_character_split_across_tokens_keeps_the_spans_around_it(new_page, srv):
    page = new_page()
    open_ui(page, srv)
    html = page.evaluate("""async () => {
        const { renderText } = await import('/static/js/render.js');
        const el = document.createElement('div');
        renderText(el, 'a\\u{1F600}b!', [{content: 'a'}, {content: '\\uFFFD'}, {content: '\\uFFFD'},
                                        {content: 'b'}, {content: '?'}]);
        return el.innerHTML;
    }""")
    assert html == ('<span class="tok" data-tok="0">a</span>\U0001F600'
                    '<span class="tok" data-tok="3">b</span>!')


@pytest.fixture(scope="module")
def keyed(server_factory):
    return server_factory("--api-key", "sekrit", "-np", "1", "-c", "1024", "-t", "1")


def test_with_api_key_the_page_asks_for_it_and_sends_it(new_page, keyed):
    page = new_page()
    config = open_ui(page, keyed)
    assert config["api_key_required"] is True
    dialog = page.locator("#api-key-dialog")
    dialog.wait_for(state="visible")
    page.fill("#api-key-input", "wrong")
    page.click("#api-key-save")
    assert dialog.is_hidden()
    set_settings(page, n_predict=4)
    with page.expect_request(posted(page, config["urls"]["chat"])) as first:
        reply = send_chat(page, "Hi")
    assert first.value.headers["authorization"] == "Bearer wrong"
    assert "Invalid API Key" in reply.locator(".meta").inner_text()
    dialog.wait_for(state="visible")                      # a 401 asks again
    page.fill("#api-key-input", "sekrit")
    page.click("#api-key-save")
    with page.expect_request(posted(page, config["urls"]["chat"])) as second:
        reply = send_chat(page, "Hi")
    assert second.value.headers["authorization"] == "Bearer sekrit"
    assert reply.locator(".content").inner_text().strip()
    page.reload()
    page.wait_for_function("document.body.dataset.mode !== undefined")
    assert dialog.is_hidden()                             # the key was kept
    assert page.evaluate("localStorage.getItem('llama-server-py:api-key')") == "sekrit"
