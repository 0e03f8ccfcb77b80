"""Audio through libmtmd (--mmproj with an audio encoder), against the real server, the
default model and a tiny random-weight ultravox projector written by the tests
(tests/mmproj_audio.py: every clip under 30 s is one chunk of 25 tokens). Sounds are WAV
bytes made here. Covers: /props and /models, prompt token counts, greedy output as a
function of the sound, prefix caching without a second encode, the OpenAI chat
``input_audio`` part and the native ``multimodal_data`` form, and refusals."""
from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from tests.integration.media_checks import GREEDY, assert_second_turn_reuses_the_cache, token_count
from tests.mmproj import png, solid
from tests.mmproj_audio import AUDIO_TOKENS, audio_projector, tone, wav

pytestmark = pytest.mark.slow

A440 = wav(tone(440, 0.5))
A880 = wav(tone(880, 0.5))
NOISE = wav(np.random.default_rng(1).uniform(-0.5, 0.5, 8000).astype(np.float32))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def audio_message(data: bytes, text: str = "What is this sound?", fmt: str = "wav") -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "input_audio",
                                          "input_audio": {"data": b64(data), "format": fmt}}]}]


@pytest.fixture(scope="module")
def server(server_factory, tmp_path_factory):
    projector = audio_projector(str(tmp_path_factory.mktemp("mmproj") / "mmproj-audio.gguf"))
    return server_factory("-np", "2", "-c", "2048", "--mmproj", projector, "--metrics")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)


def answer(client, data: bytes, **kw) -> str:
    return client.chat.completions.create(model="x", messages=audio_message(data),
                                          **{**GREEDY, **kw}).choices[0].message.content


def test_props_and_models_announce_audio(server):
    assert server.get("/props").json()["modalities"] == {"vision": False, "video": False, "audio": True}
    assert "multimodal" in server.get("/v1/models").json()["models"][0]["capabilities"]


def test_a_clip_adds_its_tokens_to_the_prompt(server):
    marker = server.get("/props").json()["media_marker"]
    r = server.post("/completion", json={"prompt": {"prompt_string": f"Listen: {marker} what is it?",
                                                    "multimodal_data": [b64(A440)]},
                                         "n_predict": 2, "cache_prompt": False})
    assert r.status_code == 200, r.text
    assert r.json()["tokens_evaluated"] == token_count(server, "Listen: ", True) + AUDIO_TOKENS \
        + token_count(server, " what is it?", False)


def test_the_output_follows_the_sound(server, client):
    """The same clip, the same answer; other clips, another distribution of the next token
    (random weights: the greedy words may still agree)."""
    first = answer(client, A440)
    assert answer(client, A440) == first
    marker = server.get("/props").json()["media_marker"]

    def next_token(data):
        r = server.post("/completion", json={
            "prompt": {"prompt_string": f"Hear {marker} now", "multimodal_data": [b64(data)]},
            "n_predict": 1, "n_probs": 5, "temperature": 0, "cache_prompt": False})
        assert r.status_code == 200, r.text
        return [(t["id"], round(t["logprob"], 5)) for t in r.json()["completion_probabilities"][0]["top_logprobs"]]
    same = next_token(A440)
    assert next_token(A440) == same
    assert len({tuple(same), tuple(next_token(A880)), tuple(next_token(NOISE))}) == 3


def test_a_second_turn_reuses_the_cache_and_encodes_nothing(server, client):
    assert_second_turn_reuses_the_cache(server, client, audio_message(wav(tone(300, 0.3))), "Is it loud?")


def test_v1_completions_takes_an_audio_prompt(server):
    marker = server.get("/props").json()["media_marker"]
    body = {"prompt": {"prompt_string": f"Sound: {marker} Label:", "multimodal_data": [b64(A880)]},
            "max_tokens": 3, "temperature": 0}
    r = server.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] > AUDIO_TOKENS


@pytest.mark.parametrize("content, message", [
    ([{"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(png(8, 8, solid(1, 2, 3)))}}],
     "image input is not supported by this server's projector"),
    ([{"type": "input_audio", "input_audio": {"data": b64(b"RIFF not really a wav"), "format": "wav"}}],
     "not an image or audio file"),
    ([{"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}], "base64"),
    ([{"type": "input_audio", "input_audio": {"data": b64(A440), "format": "ogg"}}], "'wav', 'mp3' or 'flac'"),
])
def test_bad_audio_input_is_a_400_naming_the_problem(server, content, message):
    r = server.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, *content]}], **GREEDY})
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]
    assert server.get("/health").json()["status"] == "ok"
