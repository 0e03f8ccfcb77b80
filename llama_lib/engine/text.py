"""Text side of generation: UTF-8-safe incremental detokenization and stop conditions.

Each stop condition is a small callable or class with one job, tested on its own.
"""
from __future__ import annotations

import codecs

__all__ = ["IncrementalText", "StopStrings", "limit_reached"]


class IncrementalText:
    """Turns token pieces (bytes) into text, never emitting half a UTF-8 sequence.

    A piece that ends inside a multi-byte character is held until the rest arrives; bytes
    that can never become valid UTF-8 are replaced with U+FFFD, as a strict decoder would
    otherwise stall forever.
    """

    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._clean = True          # the decoder holds no bytes of an unfinished character

    def push(self, piece: bytes) -> str:
        out = self._decoder.decode(piece)
        self._clean = not self._decoder.getstate()[0]
        return out

    def push_token(self, vocab, token: int, special: bool) -> str:
        """push(vocab.piece(token)), through the vocabulary's text of the piece when nothing
        is pending (the same text, without a trip through the decoder)."""
        if self._clean:
            text = vocab.piece_text(token, special)
            if text is not None:
                return text
        return self.push(vocab.piece(token, special))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


def limit_reached(n_generated: int, n_predict: int) -> bool:
    """n_predict < 0 means no limit."""
    return 0 <= n_predict <= n_generated


class StopStrings:
    """Finds stop strings in the generated text and holds back what could start one.

    ``feed(delta)`` returns the text that is safe to publish now; after a match, ``matched``
    is the stop string and the text before it has been published (the stop string and what
    follows never are). ``flush()`` returns the held-back tail once generation ends otherwise.
    """

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self._max = max((len(s) for s in self.stops), default=0)
        self._held = ""
        self.matched: str | None = None

    def feed(self, delta: str) -> str:
        if not self.stops:
            return delta
        text = self._held + delta
        best = None
        for stop in self.stops:
            pos = text.find(stop)
            if pos >= 0 and (best is None or pos < best[0]):
                best = (pos, stop)
        if best is not None:
            self.matched = best[1]
            self._held = ""
            return text[:best[0]]
        hold = self._partial_suffix(text)
        self._held = text[len(text) - hold:] if hold else ""
        return text[:len(text) - hold]

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest tail of text that is a proper prefix of some stop string."""
        for n in range(min(len(text), self._max - 1), 0, -1):
            tail = text[-n:]
            if any(stop.startswith(tail) for stop in self.stops):
                return n
        return 0

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held
