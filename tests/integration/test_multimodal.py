"""Images through libmtmd (--mmproj), against the real server, the default model and a tiny
random-weight projector written by the tests (tests/mmproj.py: every 32x32 image is 16
tokens). Images are PNG/BMP bytes made here. Covers: /props and /models, prompt token
counts, greedy output as a function of the image, prefix caching and the embedding cache
(metrics), concurrency with text requests, the OpenAI, native, seed and Anthropic forms,
file:// under --media-path, and every kind of bad input (a 400 naming it, nothing left in
a slot)."""
from __future__ import annotations

import base64
import concurrent.futures
import http.server
import re
import threading

import anthropic
import openai
import pytest

from tests.integration.media_checks import GREEDY, assert_second_turn_reuses_the_cache, counter, token_count
from tests.mmproj import IMAGE_TOKENS, bmp, checker, png, solid, vision_projector

pytestmark = pytest.mark.slow

CHECKER = png(32, 32, checker())
RED = png(32, 32, solid(220, 20, 20))
BLUE_BMP = bmp(32, 32, solid(10, 20, 230))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{b64(data)}"


def image_message(url: str, text: str = "What is in this picture?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


@pytest.fixture(scope="module")
def projector(tmp_path_factory):
    return vision_projector(str(tmp_path_factory.mktemp("mmproj") / "mmproj-tiny.gguf"))


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    (folder / "red.png").write_bytes(RED)
    (folder.parent / "outside.png").write_bytes(RED)
    return folder


@pytest.fixture(scope="module")
def server(server_factory, projector, media_dir, tmp_path_factory):
    saves = tmp_path_factory.mktemp("slots")
    return server_factory("-np", "3", "-c", "3072", "--mmproj", projector, "--metrics",
                          "--slots", "--slot-save-path", str(saves), "--media-path", str(media_dir))


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def marker(server):
    return server.get("/props").json()["media_marker"]


def chat(client, url: str, **kw):
    return client.chat.completions.create(model="x", messages=image_message(url), **{**GREEDY, **kw})


def test_props_and_models_announce_vision(server, marker):
    props = server.get("/props").json()
    assert props["modalities"] == {"vision": True, "video": False, "audio": False}
    assert re.fullmatch(r"<__media_\w+__>", marker)
    models = server.get("/v1/models").json()
    assert models["models"][0]["capabilities"] == ["completion", "multimodal"]


def test_an_image_adds_its_tokens_to_the_prompt(server, marker):
    r = server.post("/completion", json={"prompt": {"prompt_string": f"Look: {marker} describe it",
                                                    "multimodal_data": [b64(CHECKER)]},
                                         "n_predict": 2, "cache_prompt": False})
    assert r.status_code == 200, r.text
    expected = token_count(server, "Look: ", True) + IMAGE_TOKENS + token_count(server, " describe it", False)
    assert r.json()["tokens_evaluated"] == expected
    assert r.json()["prompt"] == f"Look: {marker} describe it"


def test_the_output_follows_the_image(client):
    first = chat(client, data_url(CHECKER)).choices[0].message.content
    again = chat(client, data_url(CHECKER)).choices[0].message.content
    other = chat(client, data_url(RED)).choices[0].message.content
    bmp_answer = chat(client, data_url(BLUE_BMP, "image/bmp")).choices[0].message.content
    assert first == again
    assert len({first, other, bmp_answer}) == 3


def test_a_second_turn_reuses_the_cache_and_encodes_nothing(server, client):
    picture = png(32, 32, lambda x, y: (x * 8, y * 8, 128))
    assert_second_turn_reuses_the_cache(server, client, image_message(data_url(picture)),
                                        "And what colour is it?")


def test_the_same_image_in_another_slot_comes_from_the_embedding_cache(server, marker):
    picture = png(32, 32, lambda x, y: (255 - x * 8, 40, y * 8))
    body = {"prompt": {"prompt_string": f"Picture: {marker} Caption:", "multimodal_data": [b64(picture)]},
            "n_predict": 4, "temperature": 0}
    first = server.post("/completion", json={**body, "id_slot": 1}).json()
    encoded, hits = counter(server, "media_encoded_total"), counter(server, "media_cache_hits_total")
    second = server.post("/completion", json={**body, "id_slot": 2}).json()
    assert second["tokens_cached"] == 0 and second["id_slot"] == 2
    assert second["content"] == first["content"]
    assert counter(server, "media_encoded_total") == encoded
    assert counter(server, "media_cache_hits_total") == hits + 1


def test_the_seed_image_data_form_matches_multimodal_data(server, marker):
    seed = server.post("/completion", json={
        "prompt": "Look: [img-12] describe it", "image_data": [{"data": b64(RED), "id": 12}],
        "n_predict": 6, "temperature": 0, "cache_prompt": False}).json()
    native = server.post("/completion", json={
        "prompt": {"prompt_string": f"Look: {marker} describe it", "multimodal_data": [b64(RED)]},
        "n_predict": 6, "temperature": 0, "cache_prompt": False}).json()
    assert seed["content"] == native["content"]
    assert seed["tokens_evaluated"] == native["tokens_evaluated"]


def test_v1_completions_takes_a_multimodal_prompt(client, marker):
    prompt = {"prompt_string": f"Look: {marker} describe it", "multimodal_data": [b64(CHECKER)]}
    r = client.completions.create(model="x", prompt=prompt, max_tokens=4, temperature=0)
    assert r.usage.prompt_tokens > IMAGE_TOKENS
    assert r.choices[0].text


def test_anthropic_image_blocks(server):
    client = anthropic.Anthropic(base_url=server.url, api_key="none", max_retries=0, timeout=60)
    msg = client.messages.create(model="x", max_tokens=6, extra_body={"temperature": 0}, messages=[{
        "role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(RED)}},
            {"type": "text", "text": "Describe the image."}]}])
    assert msg.usage.input_tokens + msg.usage.cache_read_input_tokens > IMAGE_TOKENS
    assert msg.content[0].text


def test_file_urls_inside_the_media_path(client, media_dir):
    by_name = chat(client, "file://red.png")
    by_path = chat(client, f"file://{media_dir / 'red.png'}")
    inline = chat(client, data_url(RED))
    assert by_name.usage.prompt_tokens > IMAGE_TOKENS
    assert by_name.choices[0].message.content == by_path.choices[0].message.content \
        == inline.choices[0].message.content


class _Pictures(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/red.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(RED)))
            self.end_headers()
            self.wfile.write(RED)
        else:
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.send_header("Content-Length", "0")
            self.end_headers()


@pytest.fixture(scope="module")
def pictures():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pictures)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_http_urls_are_fetched_and_redirects_refused(server, client, pictures):
    fetched = chat(client, pictures + "/red.png").choices[0].message.content
    assert fetched == chat(client, data_url(RED)).choices[0].message.content
    r = server.post("/v1/chat/completions", json={"messages": image_message(pictures + "/moved.png"), **GREEDY})
    assert r.status_code == 400 and "redirects" in r.json()["error"]["message"]


def test_images_and_text_on_several_slots_at_once(server, client):
    pictures = [png(32, 32, solid(30 * i, 100, 200 - 30 * i)) for i in range(3)]

    def image_request(p):
        return chat(client, data_url(p), max_tokens=12).choices[0].finish_reason

    def text_request():
        r = server.post("/completion", json={"prompt": "Once upon a time", "n_predict": 24,
                                             "ignore_eos": True})
        return r.status_code, r.json().get("tokens_predicted")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(image_request, p) for p in pictures] + [pool.submit(text_request)]
        results = [f.result(timeout=120) for f in futures]
    assert results[:3] == ["length"] * 3
    assert results[3] == (200, 24)


def test_slot_save_refuses_a_cache_with_images(server, marker):
    r = server.post("/completion", json={
        "prompt": {"prompt_string": f"Look: {marker} describe it", "multimodal_data": [b64(RED)]},
        "n_predict": 1, "id_slot": 0})
    assert r.status_code == 200
    saved = server.post("/slots/0?action=save", json={"filename": "with-image.bin"})
    assert saved.status_code == 400
    assert "images or audio" in saved.json()["error"]["message"]


BAD_CHAT = [
    pytest.param("data:image/png;base64,@@not-base64@@", "not valid base64", id="invalid-base64"),
    pytest.param("data:text/plain;base64," + b64(b"hello"), "not an image or audio type", id="not-an-image-mime"),
    pytest.param(data_url(b"definitely not a picture, just bytes"), "not an image or audio file", id="undecodable"),
    pytest.param(data_url(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), "content[1] (image_url): not an image or audio file", id="broken-png"),
    pytest.param("file:///etc/passwd", "outside --media-path", id="file-outside-media-path"),
    pytest.param("http://127.0.0.1:9/picture.png", "fetching http://127.0.0.1:9/picture.png failed", id="http-fails"),
    pytest.param("ftp://example.com/a.png", "scheme 'ftp' is not supported", id="other-scheme"),
]


@pytest.mark.parametrize("url, message", BAD_CHAT)
def test_bad_images_are_a_400_naming_the_problem(server, url, message):
    r = server.post("/v1/chat/completions", json={"messages": image_message(url), **GREEDY})
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]


def test_a_relative_escape_from_the_media_path_is_refused(server, media_dir):
    r = server.post("/v1/chat/completions", json={
        "messages": image_message("file://../outside.png"), **GREEDY})
    assert r.status_code == 400 and "outside --media-path" in r.json()["error"]["message"]


@pytest.mark.parametrize("prompt_string, files, message", [
    pytest.param("A {m} and {m} B", 1, "2 media markers but 1 file", id="more-markers-than-files"),
    pytest.param("no marker here", 1, "0 media markers but 1 file", id="more-files-than-markers"),
    pytest.param("ends with an image {m}", 1, "must not end with an image", id="ends-with-image"),
])
def test_markers_and_files_must_pair_up(server, marker, prompt_string, files, message):
    body = {"prompt": {"prompt_string": prompt_string.format(m=marker),
                       "multimodal_data": [b64(RED)] * files}, "n_predict": 2}
    r = server.post("/completion", json=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]


def test_seed_image_data_errors(server):
    r = server.post("/completion", json={"prompt": "see [img-3]", "image_data": [{"data": b64(RED), "id": 4}],
                                         "n_predict": 2})
    assert r.status_code == 400 and "[img-3]" in r.json()["error"]["message"]


def test_audio_to_a_vision_projector_is_refused(server):
    r = server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [
        {"type": "text", "text": "listen"},
        {"type": "input_audio", "input_audio": {"data": b64(b"RIFF0000WAVEfmt "), "format": "wav"}}]}],
        **GREEDY})
    assert r.status_code == 400 and "audio input is not supported" in r.json()["error"]["message"]


def test_nothing_of_a_bad_request_stays_in_a_slot(server):
    for url, _ in [(p.values[0], p.values[1]) for p in BAD_CHAT[:3]]:
        server.post("/v1/chat/completions", json={"messages": image_message(url), **GREEDY})
    slots = server.get("/slots").json()
    assert not any(s["is_processing"] for s in slots)
    assert server.get("/health").json()["status"] == "ok"


def test_without_a_projector_images_are_refused(server_factory):
    plain = server_factory("-np", "1", "-c", "1024")
    r = plain.post("/v1/chat/completions", json={"messages": image_message(data_url(RED)), **GREEDY})
    assert r.status_code == 400
    assert "image input is not supported - start the server with --mmproj" in r.json()["error"]["message"]
    r = plain.post("/completion", json={"prompt": {"prompt_string": "x <__media__> y",
                                                   "multimodal_data": [b64(RED)]}})
    assert r.status_code == 400 and "--mmproj" in r.json()["error"]["message"]
    assert plain.get("/props").json()["modalities"]["vision"] is False


def test_file_urls_need_a_media_path(server_factory, projector):
    bare = server_factory("-np", "1", "-c", "1024", "--mmproj", projector)
    r = bare.post("/v1/chat/completions", json={"messages": image_message("file:///tmp/x.png"), **GREEDY})
    assert r.status_code == 400 and "--media-path" in r.json()["error"]["message"]


# --- embeddings with media (--embeddings --mmproj) -----------------------------------------
def wav_bytes() -> bytes:
    """A tiny valid 16-bit mono PCM WAV file."""
    import io
    import wave
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x01" * 1600)
    return out.getvalue()


@pytest.fixture(scope="module")
def embed_server(server_factory, projector):
    return server_factory("--embeddings", "--pooling", "mean", "-np", "2", "-c", "2048", "-ub", "64",
                          "--mmproj", projector, "--metrics")


def mm_item(marker, data: bytes, text: str = "Look: {m} at this picture") -> dict:
    return {"prompt_string": text.format(m=marker), "multimodal_data": [b64(data)]}


def test_an_embedding_follows_the_image(embed_server):
    import numpy as np
    marker = embed_server.get("/props").json()["media_marker"]
    r = embed_server.post("/v1/embeddings", json={"input": [
        mm_item(marker, CHECKER), mm_item(marker, CHECKER), mm_item(marker, RED),
        "Look:  at this picture"]})
    assert r.status_code == 200, r.text
    vecs = [np.array(d["embedding"]) for d in r.json()["data"]]
    assert [d["index"] for d in r.json()["data"]] == [0, 1, 2, 3]
    assert np.abs(vecs[0] - vecs[1]).max() < 1e-4            # the same image, the same vector
    assert np.abs(vecs[0] - vecs[2]).max() > 1e-3            # another image, another vector
    assert np.abs(vecs[0] - vecs[3]).max() > 1e-3            # the text alone differs
    assert abs(np.linalg.norm(vecs[0]) - 1) < 1e-4
    # the prompt tokens count each image's tokens
    text_only = embed_server.post("/v1/embeddings", json={"input": "Look:  at this picture"}).json()
    one = token_count(embed_server, "Look: ", True) + IMAGE_TOKENS \
        + token_count(embed_server, " at this picture", False)
    assert r.json()["usage"]["prompt_tokens"] == 3 * one + text_only["usage"]["prompt_tokens"]


def test_native_embedding_takes_multimodal_and_content_arrays(embed_server):
    import numpy as np
    marker = embed_server.get("/props").json()["media_marker"]
    single = embed_server.post("/embedding", json={"content": mm_item(marker, BLUE_BMP, "see {m} now")})
    assert single.status_code == 200, single.text
    parts = {"content": [{"type": "text", "text": "see "},
                         {"type": "image_url", "image_url": {"url": data_url(BLUE_BMP, "image/bmp")}},
                         {"type": "text", "text": " now"}]}
    many = embed_server.post("/embeddings", json={"content": [parts, "see  now"]})
    assert many.status_code == 200, many.text
    a = np.array(single.json()["embedding"])
    b = np.array(many.json()[0]["embedding"])
    assert np.abs(a - b).max() < 1e-4                        # both forms are the same prompt
    assert np.abs(a - np.array(many.json()[1]["embedding"])).max() > 1e-3
    assert embed_server.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("item, message", [
    pytest.param({"prompt_string": "no marker", "multimodal_data": [b64(RED)]}, "0 media markers but 1 file",
                 id="no-marker"),
    pytest.param({"prompt_string": "end {m}", "multimodal_data": [b64(RED)]}, "must not end with an image",
                 id="ends-with-image"),
    pytest.param({"prompt_string": "x {m} y", "multimodal_data": ["@@"]}, "not valid base64", id="bad-base64"),
    pytest.param({"prompt_string": "x {m} y", "multimodal_data": [b64(wav_bytes())]},
                 "multimodal_data[0]: audio input is not supported by this server's projector", id="audio"),
    pytest.param({"content": [{"type": "input_audio", "input_audio": {"data": b64(wav_bytes()), "format": "wav"}},
                              {"type": "text", "text": "hi"}]}, "audio input is not supported", id="input-audio"),
    pytest.param({"prompt_string": "x {m} " + "word " * 100, "multimodal_data": [b64(RED)]},
                 "after its last image or audio", id="tail-over-ubatch"),
])
def test_bad_multimodal_embedding_inputs_are_a_400(embed_server, item, message):
    marker = embed_server.get("/props").json()["media_marker"]
    if "prompt_string" in item:
        item = {**item, "prompt_string": item["prompt_string"].format(m=marker)}
    r = embed_server.post("/v1/embeddings", json={"input": [item]})
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]
    assert not any(s["is_processing"] for s in embed_server.get("/slots").json())


def test_embeddings_without_a_projector_refuse_media(server_factory):
    plain = server_factory("--embeddings", "-np", "1", "-c", "512")
    r = plain.post("/embedding", json={"content": {"prompt_string": "x <__media__> y",
                                                   "multimodal_data": [b64(RED)]}})
    assert r.status_code == 400 and "--mmproj" in r.json()["error"]["message"]
    r = plain.post("/embedding", json={"content": {"prompt_string": "just text"}})   # no media: fine
    assert r.status_code == 200, r.text


# --- infill: text only, as llama-server ------------------------------------------------------
@pytest.mark.parametrize("extra", [
    pytest.param({"multimodal_data": [b64(RED)]}, id="multimodal_data"),
    pytest.param({"image_data": [{"data": b64(RED), "id": 1}]}, id="image_data"),
    pytest.param({"prompt": {"prompt_string": "x <__media__> y", "multimodal_data": [b64(RED)]}}, id="prompt-object"),
    pytest.param({"input_extra": [{"filename": "a.png", "text": "", "multimodal_data": [b64(RED)]}]},
                 id="input_extra"),
])
def test_infill_refuses_media(server, extra):
    r = server.post("/infill", json={"input_prefix": "def f(", "input_suffix": ")", **extra})
    assert r.status_code == 400, r.text
    assert "/infill takes no images or audio" in r.json()["error"]["message"]


# --- audio: the public API's checks (the test projector has no audio encoder) -------------
@pytest.mark.parametrize("audio, message", [
    pytest.param({"data": b64(wav_bytes()), "format": "wav"}, "content[1] (input_audio): audio input is not "
                 "supported by this server's projector", id="valid-wav"),
    pytest.param({"data": "@@not base64@@", "format": "wav"}, "input_audio.data is not valid base64",
                 id="invalid-base64"),
    pytest.param({"data": b64(wav_bytes()), "format": "ogg"}, "input_audio.format must be 'wav', 'mp3' or 'flac'",
                 id="unsupported-format"),
    pytest.param("not-an-object", "input_audio must be an object", id="not-an-object"),
])
def test_input_audio_problems_are_a_400(server, audio, message):
    r = server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [
        {"type": "text", "text": "listen"}, {"type": "input_audio", "input_audio": audio}]}], **GREEDY})
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]


@pytest.mark.parametrize("route", ["/completion", "/v1/completions"])
def test_multimodal_data_audio_to_a_vision_projector_is_refused(server, marker, route):
    r = server.post(route, json={"prompt": {"prompt_string": f"listen {marker} now",
                                            "multimodal_data": [b64(wav_bytes())]}, "max_tokens": 2})
    assert r.status_code == 400, r.text
    assert "audio input is not supported by this server's projector" in r.json()["error"]["message"]
