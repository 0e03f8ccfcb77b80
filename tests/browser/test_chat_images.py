"""Images in chat mode (issue #14) in a real browser, against a server started with the tiny
random projector of tests/mmproj.py (every 32x32 image is IMAGE_TOKENS tokens): the file
picker, paste and drop, the thumbnails, the image_url parts the page sends, the image tokens
the server counted, what a reload keeps, and no attach control on a server without --mmproj."""
from __future__ import annotations

import base64
import json

import pytest

from tests.mmproj import IMAGE_TOKENS, bmp, checker, png, solid, vision_projector

from .conftest import PHONE
from .test_front_end import OVERFLOW, open_ui, posted, screenshot, send_chat, set_settings, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHECKER = png(32, 32, checker())
RED = png(32, 32, solid(220, 20, 20))
BLUE_BMP = bmp(32, 32, solid(10, 20, 230))
STATE_KEY = "llama-server-py:state:v1"


@pytest.fixture(scope="module")
def vision_srv(server_factory, tmp_path_factory):
    projector = vision_projector(str(tmp_path_factory.mktemp("mmproj") / "mmproj-tiny.gguf"))
    return server_factory("--mmproj", projector, "-t", "1", "-np", "1", "-c", "1024")


def open_with_vision(page, srv):
    config = open_ui(page, srv)
    page.wait_for_function("document.body.dataset.vision === 'true'")
    assert page.is_visible("#chat-attach")
    return config


def images_sent(body) -> list[tuple[str, bytes]]:
    """(MIME type, decoded bytes) of each image_url part of the last message the page sent."""
    out = []
    for part in body["messages"][-1]["content"]:
        if part["type"] == "image_url":
            url = part["image_url"]["url"]
            head, data = url.split(",", 1)
            assert head.startswith("data:") and head.endswith(";base64"), head
            out.append((head[5:-7], base64.b64decode(data)))
    return out


def stored_messages(page) -> list[dict]:
    return json.loads(page.evaluate(f"localStorage.getItem('{STATE_KEY}')"))["messages"]


def dispatch_files(page, selector, kind, files):
    """A synthetic paste (kind 'paste') or drop ('drop') of File objects made from `files`
    ([(name, mime, bytes)]) on the element `selector`."""
    page.evaluate("""([selector, kind, files]) => {
        const dt = new DataTransfer();
        for (const [name, type, b64] of files) {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], name, { type }));
        }
        const target = document.querySelector(selector);
        if (kind === 'paste') {
            target.focus();
            target.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
        } else {
            for (const type of ['dragenter', 'dragover', 'drop']) {
                target.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
            }
        }
    }""", [selector, kind, [[n, m, base64.b64encode(b).decode()] for n, m, b in files]])


def test_an_image_from_the_file_picker_is_sent_and_counted(new_page, vision_srv, tmp_path):
    page = new_page()
    config = open_with_vision(page, vision_srv)
    set_settings(page, n_predict=4, temperature=0)
    picture = tmp_path / "checker.png"
    picture.write_bytes(CHECKER)
    with page.expect_file_chooser() as chooser:
        page.click("#chat-attach")
    chooser.value.set_files(str(picture))
    pending = page.locator("#chat-attachments img.thumb")
    pending.wait_for()
    assert pending.get_attribute("alt") == "checker.png"
    text = "What is in this picture?"
    with page.expect_request(posted(page, config["urls"]["chat"])) as req:
        reply = send_chat(page, text)
    body = req.value.post_data_json
    assert body["messages"][-1]["content"][0] == {"type": "text", "text": text}
    assert images_sent(body) == [("image/png", CHECKER)]
    assert page.is_hidden("#chat-attachments")                   # handed over with the message

    user = page.locator("#messages .message.user").last
    thumb = user.locator("img.thumb")
    assert thumb.get_attribute("alt") == "checker.png"
    assert thumb.evaluate("img => img.complete && img.naturalWidth") == 32   # it shows
    assert user.locator(".content").inner_text() == text
    assert reply.locator(".content").inner_text().strip()
    assert reply.locator(".meta .error").count() == 0 and "tokens/s" in reply.locator(".meta").inner_text()
    screenshot(page, "chat-image")

    # The server counted the image's tokens: the prompt the page's reply reports (the first
    # on this server, nothing cached) is longer than the same conversation as text alone.
    prompt_n = stored_messages(page)[-1]["timings"]["prompt_n"]
    text_only = dict(body, stream=False, cache_prompt=False, max_tokens=1,
                     messages=[{"role": "user", "content": text}])
    alone = vision_srv.post("/v1/chat/completions", json=text_only).json()["usage"]["prompt_tokens"]
    assert prompt_n >= alone + IMAGE_TOKENS, (prompt_n, alone)
    replayed = vision_srv.post("/v1/chat/completions", json=dict(text_only, messages=body["messages"])).json()
    assert replayed["usage"]["prompt_tokens"] == prompt_n
    assert page.errors == []


def test_images_pasted_and_dropped_can_be_removed_before_sending(new_page, vision_srv):
    page = new_page()
    config = open_with_vision(page, vision_srv)
    set_settings(page, n_predict=4, temperature=0)
    dispatch_files(page, "#chat-input", "paste", [("pasted.bmp", "image/bmp", BLUE_BMP)])
    page.locator("#chat-attachments img[alt='pasted.bmp']").wait_for()
    dispatch_files(page, "#messages", "drop", [("red.png", "image/png", RED),
                                               ("notes.txt", "text/plain", b"not a picture")])
    page.locator("#chat-attachments img[alt='red.png']").wait_for()
    assert page.locator("#chat-attachments .attachment").count() == 2
    assert "notes.txt" in page.inner_text("#chat-attach-notice")   # refused, and said so
    # remove the dropped one from the keyboard
    page.focus("#chat-attachments [aria-label='Remove red.png']")
    page.keyboard.press("Enter")
    assert page.locator("#chat-attachments .attachment").count() == 1
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Remove pasted.bmp"
    # an image alone (no text) may be sent
    page.focus("#chat-input")
    with page.expect_request(posted(page, config["urls"]["chat"])) as req:
        page.keyboard.press("Enter")
    wait_idle(page)
    body = req.value.post_data_json
    assert body["messages"][-1]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/bmp;base64," + base64.b64encode(BLUE_BMP).decode()}}]
    assert images_sent(body) == [("image/bmp", BLUE_BMP)]
    assert page.locator("#messages .message.user").last.locator("img.thumb").get_attribute("alt") == "pasted.bmp"
    reply = page.locator("#messages .message.assistant").last
    assert reply.locator(".meta .error").count() == 0
    assert page.errors == []


def test_a_reload_keeps_small_images_and_drops_large_ones_from_storage(new_page, vision_srv):
    page = new_page()
    config = open_with_vision(page, vision_srv)
    set_settings(page, n_predict=2, temperature=0)
    page.set_input_files("#chat-file", files=[{"name": "red.png", "mimeType": "image/png", "buffer": RED}])
    page.locator("#chat-attachments img.thumb").wait_for()
    send_chat(page, "Describe it.")
    page.reload()
    open_with_vision(page, vision_srv)
    thumb = page.locator("#messages .message.user img.thumb")
    assert thumb.get_attribute("alt") == "red.png"
    assert thumb.evaluate("img => img.naturalWidth") == 32
    # the next turn sends the kept image again, with the history
    with page.expect_request(posted(page, config["urls"]["chat"])) as req:
        send_chat(page, "And now?")
    first = req.value.post_data_json["messages"][0]
    assert first["content"][1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(RED).decode()

    # An image too large for localStorage is saved as its name alone: after a reload it shows
    # as a placeholder and is not sent.
    page.evaluate("""async () => {
        const { saveState, loadState, MAX_STORED_IMAGE } = await import('/static/js/store.js');
        const state = loadState();
        const big = 'data:image/png;base64,' + 'A'.repeat(MAX_STORED_IMAGE);
        state.messages = [{ role: 'user', content: 'big', images: [{ name: 'big.png', type: 'image/png', url: big }] }];
        saveState(state);
    }""")
    assert stored_messages(page)[0]["images"] == [{"name": "big.png", "type": "image/png"}]
    page.reload()
    open_with_vision(page, vision_srv)
    assert page.locator("#messages .message.user .thumb-missing").count() == 1
    with page.expect_request(posted(page, config["urls"]["chat"])) as req:
        send_chat(page, "Hello")
    assert req.value.post_data_json["messages"][0] == {"role": "user", "content": "big"}
    assert page.errors == []


SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">'
       b'<rect width="40" height="20" fill="#0a0"/></svg>')


def test_types_the_server_cannot_read_are_converted_and_large_files_scaled(new_page, vision_srv):
    page = new_page()
    open_with_vision(page, vision_srv)
    large = bmp(2400, 600, solid(10, 200, 30))          # over 4 MiB
    assert len(large) > 4 * 1024 * 1024
    page.set_input_files("#chat-file", files=[{"name": "shape.svg", "mimeType": "image/svg+xml", "buffer": SVG},
                                              {"name": "large.bmp", "mimeType": "image/bmp", "buffer": large}])
    page.wait_for_function("document.querySelectorAll('#chat-attachments img.thumb').length === 2")
    thumbs = page.locator("#chat-attachments img.thumb")
    svg = thumbs.nth(0).evaluate("img => [img.src.slice(0, 22), img.naturalWidth, img.naturalHeight]")
    assert svg == ["data:image/png;base64,", 40, 20]
    scaled = thumbs.nth(1).evaluate("img => [img.src.slice(0, 23), img.naturalWidth, img.naturalHeight]")
    assert scaled == ["data:image/jpeg;base64,", 2048, 512]
    assert page.errors == []


def test_attaching_on_a_phone_fits_the_screen(new_page, vision_srv):
    page = new_page(PHONE, is_mobile=True, has_touch=True)
    open_with_vision(page, vision_srv)
    page.set_input_files("#chat-file", files=[
        {"name": f"img{i}.png", "mimeType": "image/png", "buffer": CHECKER} for i in range(6)])
    page.wait_for_function("document.querySelectorAll('#chat-attachments .attachment').length === 6")
    result = page.evaluate(OVERFLOW)
    assert result["scroll"] <= result["width"] and result["bad"] == [], result
    assert page.is_visible("#chat-send") and page.is_visible("#chat-input")
    screenshot(page, "chat-image-phone")
    assert page.errors == []


def test_without_a_projector_there_is_no_attach_control(new_page, server):
    page = new_page()
    open_ui(page, server)
    page.wait_for_function("document.body.dataset.vision === 'false'")
    assert page.is_hidden("#chat-attach")
    dispatch_files(page, "#chat-input", "paste", [("red.png", "image/png", RED)])
    dispatch_files(page, "#messages", "drop", [("red.png", "image/png", RED)])
    assert page.is_hidden("#chat-attachments")
    assert page.locator("#chat-attachments .attachment").count() == 0
    assert page.errors == []
