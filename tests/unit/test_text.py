"""UTF-8-safe detokenization and stop strings, one behaviour per test."""
from __future__ import annotations

import pytest

from llama_lib.engine.text import IncrementalText, StopStrings, limit_reached


def test_a_character_split_across_pieces_is_emitted_whole():
    text = IncrementalText()
    snake = "🐍".encode()
    assert text.push(snake[:2]) == ""
    assert text.push(snake[2:3]) == ""
    assert text.push(snake[3:] + b" ok") == "🐍 ok"


def test_invalid_bytes_become_replacement_characters_instead_of_stalling():
    text = IncrementalText()
    assert text.push(b"\xff a") == "\ufffd a"
    assert text.push(b"\xe4\xb8") == ""
    assert text.flush() == "\ufffd"


@pytest.mark.parametrize("deltas,stops,published,matched", [
    pytest.param(["Hello", " wor", "ld!"], ["world"], "Hello ", "world", id="spans-deltas"),
    pytest.param(["abc"], ["x"], "abc", None, id="no-match"),
    pytest.param(["a<", "/s", ">b"], ["</s>"], "a", "</s>", id="held-back-prefix"),
    pytest.param(["one two"], ["two", "one"], "", "one", id="earliest-wins"),
    pytest.param(["x<", "y"], ["<z"], "x<y", None, id="false-alarm-released"),
])
def test_stop_strings(deltas, stops, published, matched):
    s = StopStrings(stops)
    out = "".join(s.feed(d) for d in deltas)
    if s.matched is None:
        out += s.flush()
    assert out == published
    assert s.matched == matched


def test_a_partial_stop_is_never_published_while_pending():
    s = StopStrings(["STOP"])
    assert s.feed("go ST") == "go "
    assert s.feed("O") == ""
    assert s.feed("P now") == ""
    assert s.matched == "STOP"


@pytest.mark.parametrize("n,limit,reached", [(0, -1, False), (5, 5, True), (4, 5, False), (0, 0, True)])
def test_limit_reached(n, limit, reached):
    assert limit_reached(n, limit) is reached
