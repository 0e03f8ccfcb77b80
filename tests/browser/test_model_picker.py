"""The web page's model picker (issue #17): shown when ``GET /models`` lists several models
(router mode), it sets the ``model`` field of the page's requests; a single-model server
shows none. Real router, real model (two names for it), Debian's chromium."""
from __future__ import annotations

import os

import pytest

from tests.conftest import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GENERATION_TIMEOUT = 60_000   # ms: the router loads the model on the first request


@pytest.fixture(scope="module")
def router(tmp_path_factory, model_path):
    folder = tmp_path_factory.mktemp("picker-models")
    for name in ("smol-a", "smol-b"):
        os.symlink(model_path, folder / f"{name}.gguf")
    srv = ServerProcess(("--models-dir", str(folder), "--models-max", "1", "-c", "512", "-np", "1"),
                        log_name="router-ui").wait_ready()
    yield srv
    srv.stop()


def chat(page, text: str) -> dict:
    """Send one chat message from the page; the request body it posted."""
    with page.expect_request(lambda r: r.method == "POST" and "/v1/chat/completions" in r.url) as req:
        page.fill("#chat-input", text)
        page.keyboard.press("Enter")
    page.wait_for_selector("body:not(.busy)", timeout=GENERATION_TIMEOUT)
    return req.value.post_data_json


def options(page) -> list[tuple[str, str]]:
    found = page.eval_on_selector_all("#model-picker option", "os => os.map(o => [o.value, o.text])")
    return [tuple(o) for o in found]


def test_the_picker_lists_the_models_and_the_chosen_one_answers(new_page, router):
    page = new_page()
    page.goto(router.url + "/")
    page.wait_for_selector("#model-picker", state="visible")
    assert options(page) == [("smol-a", "smol-a (unloaded)"), ("smol-b", "smol-b (unloaded)")]
    assert not page.is_visible(".model-name")

    page.select_option("#model-picker", "smol-b")
    page.fill("#settings-form [name=n_predict]", "6")
    body = chat(page, "Say hi")
    assert body["model"] == "smol-b" and body["max_tokens"] == 6
    reply = page.locator("#messages .message.assistant").last
    assert reply.locator(".content").inner_text().strip()
    assert reply.locator(".meta .error").count() == 0

    statuses = {m["id"]: m["status"]["value"] for m in router.get("/models").json()["data"]}
    assert statuses == {"smol-a": "unloaded", "smol-b": "loaded"}
    # the picker refreshed after the reply: smol-b now reads as loaded
    page.wait_for_function("[...document.querySelectorAll('#model-picker option')]"
                           ".some(o => o.text === 'smol-b')")

    page.reload()                                   # the choice is remembered
    page.wait_for_selector("#model-picker", state="visible")
    page.wait_for_function("document.querySelector('#model-picker').value === 'smol-b'")
    page.select_option("#model-picker", "smol-a")
    assert chat(page, "And again")["model"] == "smol-a"
    statuses = {m["id"]: m["status"]["value"] for m in router.get("/models").json()["data"]}
    assert statuses == {"smol-a": "loaded", "smol-b": "unloaded"}    # --models-max 1
    assert page.errors == []


def test_a_single_model_server_shows_no_picker(new_page, server):
    [model] = server.get("/v1/models").json()["data"]
    page = new_page()
    page.goto(server.url + "/")
    page.wait_for_load_state("networkidle")
    assert not page.is_visible("#model-picker") and page.is_visible(".model-name")
    page.fill("#settings-form [name=n_predict]", "4")
    assert chat(page, "Say hi")["model"] == model["id"]    # the one model, named
    assert page.errors == []
