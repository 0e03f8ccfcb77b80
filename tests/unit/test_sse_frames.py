"""sse.Frames: a chunk's constant bytes made once, each frame encoding only its values, and
every frame byte for byte what sse_data makes of the whole chunk."""
from __future__ import annotations

import uuid

import pytest

from webapp.sse import Frames, sse_data

TEXTS = ["", "hello", ' "quoted" \\ back', "line\nbreak\ttab", "\x00\x1f control", "é 漢字 🎉",
         "</script>", "{\"json\": [1, 2]}"]
CHAT = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m \"x\"",
        "system_fingerprint": "b1", "choices": [{"index": 3, "delta": {"content": ""},
                                                 "logprobs": None, "finish_reason": None}]}


def chat_with(text):
    return {**CHAT, "choices": [{**CHAT["choices"][0], "delta": {"content": text}}]}


@pytest.mark.parametrize("text", TEXTS)
def test_a_text_frame_is_the_whole_chunk_encoded(text):
    frames = Frames(CHAT, ("choices", 0, "delta", "content"))
    assert frames.frame(text) == sse_data(chat_with(text))


def test_two_fields_and_the_template_left_alone():
    native = {"content": "", "tokens": [], "stop": False, "id_slot": 0, "index": 1}
    frames = Frames(native, ("content",), ("tokens",))
    for text, tokens in [("a", [5]), ("", []), ("x\"y", [1, 2, 3])]:
        assert frames.frame(text, tokens) == sse_data({**native, "content": text, "tokens": tokens})
    assert native == {"content": "", "tokens": [], "stop": False, "id_slot": 0, "index": 1}
    assert CHAT["choices"][0]["delta"] == {"content": ""}


def test_a_template_holding_the_marker_falls_back_to_whole_encoding(monkeypatch):
    fixed = uuid.UUID(int=7)
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)
    template = {**CHAT, "model": f"\x00{fixed.hex}0\x00"}      # a client-chosen model name
    frames = Frames(template, ("choices", 0, "delta", "content"))
    want = sse_data({**template, "choices": chat_with("hi")["choices"]})
    assert frames.frame("hi") == want
