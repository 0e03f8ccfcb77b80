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


class PieceVocab:
    """Tokens are fixed byte strings: whole characters, pieces of one, and invalid bytes."""
    PIECES = [b"a", "\U0001f40d".encode()[:2], "\U0001f40d".encode()[2:], b" b", b"\xff",
              "\u00e9".encode()[:1], "\u00e9".encode()[1:] + b"c", "\u20ac".encode()]

    def __init__(self):
        self.asked_text = 0

    def piece(self, token, special=True):
        return self.PIECES[token]

    def piece_text(self, token, special=True):
        self.asked_text += 1
        try:
            return self.PIECES[token].decode("utf-8")
        except UnicodeDecodeError:
            return None


@pytest.mark.parametrize("tokens", [
    [0, 1, 2, 3], [1, 2, 0], [4, 0, 5, 6, 7], [1, 0, 2, 3], [5, 5, 6], [7, 1, 7, 2, 7], [6, 4, 1],
])
def test_pushing_tokens_gives_the_text_of_pushing_their_bytes(tokens):
    """The vocabulary's text of a whole piece is used only while no character is pending:
    the output is the decoder's, byte for byte, whatever the pieces split."""
    vocab = PieceVocab()
    by_token, by_bytes = IncrementalText(), IncrementalText()
    got = [by_token.push_token(vocab, t, True) for t in tokens] + [by_token.flush()]
    want = [by_bytes.push(vocab.piece(t)) for t in tokens] + [by_bytes.flush()]
    assert got == want
    assert vocab.asked_text > 0


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
