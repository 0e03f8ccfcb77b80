"""Media chunks inside the engine: their place in a slot's tokens, and their evaluation.

A prompt with images or audio is still one list of ints for the scheduler. Each media chunk
of ``n`` tokens stands in it as ``n`` placeholder values, all negative (no real token id is)
and within int32 (code that stores token lists as int32 arrays keeps working), each naming
the chunk's key and its own index inside the chunk::

    placeholder(key, i) = -((key << 15) | i) - 1        key < 2**16, i < 2**15

The key is the chunk's content hash (SHA-256, from libmtmd) interned by ``MediaKeys``: equal
files get equal keys, and a key is only given to another file after 65536 newer ones. So
prefix caching needs nothing new: the same image at the same place of two prompts gives
equal values, another image differs at its first token, and a cache cut inside an image
(which the scheduler never makes) could not pass for the whole image. The request carries
``media``: key -> ``llama_lib.mtmd.MediaChunk``, where the engine finds what to evaluate.

Rules the scheduler keeps (model-free, with the helpers below):
- a media chunk is evaluated whole, in a step of its own (``Plan.media``), alternating with
  ordinary batches so that the other slots keep generating between two chunks;
- text chunks stop before the next media chunk; a reused prefix never ends inside one;
- no context shift while the slot's cache holds media (llama-server turns shifting off with
  a projector loaded; we only refuse it for the slots it would cut through).

Positions: a chunk fills one KV cell per token, but under M-RoPE (Qwen2-VL and the like)
it advances the position by its ``n_pos`` (the larger side of its token grid), not by its
``n_tokens``: every cell of an image sits at the image's first position, and the text after
it continues at first + n_pos. ``MediaKeys`` keeps each key's shift (``n_pos - n_tokens``,
0 without M-RoPE) and ``position_shift`` sums the shifts of the whole chunks in a token
list, so the scheduler maps a cache index to its position (``Scheduler.pos``).

``MediaEvaluator`` (engine thread) encodes a chunk with the projector, or takes its
embeddings from a host-RAM LRU keyed by content hash, and decodes them into the slot's
sequence.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

__all__ = ["placeholders", "is_media", "media_key", "media_run", "text_run", "align_keep",
           "has_media", "text_tokens", "position_shift", "MediaEvaluator", "MediaKeys",
           "MAX_CHUNK_TOKENS"]

logger = logging.getLogger(__name__)

_KEY_BITS = 16
_INDEX_BITS = 15
_INDEX_MASK = (1 << _INDEX_BITS) - 1
MAX_CHUNK_TOKENS = 1 << _INDEX_BITS


class MediaKeys:
    """Content hash -> key, for any thread (web greenlets tokenize, the engine reads). Keys
    are handed out in turn; when all are used, the least recently seen hash gives up its
    key, 65536 files later."""

    def __init__(self):
        self._lock = threading.Lock()
        self._keys: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._shifts: dict[int, int] = {}      # key -> n_pos - n_tokens of its chunk

    def key(self, chunk_id: str, shift: int = 0) -> int:
        """The key of a chunk; ``shift``: its ``n_pos - n_tokens`` (see the module's
        Positions), the same for every chunk of one file."""
        with self._lock:
            key = self._keys.get(chunk_id)
            if key is not None:
                self._keys.move_to_end(chunk_id)
                return key
            if len(self._keys) < 1 << _KEY_BITS:
                key = len(self._keys)
            else:
                _, key = self._keys.popitem(last=False)
            self._keys[chunk_id] = key
            self._shifts[key] = shift
            return key

    def shift(self, key: int) -> int:
        return self._shifts.get(key, 0)


def placeholders(key: int, n: int) -> list[int]:
    base = key << _INDEX_BITS
    return [-(base | i) - 1 for i in range(n)]


def is_media(token: int) -> bool:
    return token < 0


def media_key(token: int) -> int:
    return (-token - 1) >> _INDEX_BITS


def _index(token: int) -> int:
    return (-token - 1) & _INDEX_MASK


def media_run(tokens, start: int = 0) -> int:
    """The length of the media chunk that starts at ``tokens[start]``."""
    key, first = media_key(tokens[start]), _index(tokens[start])
    n = 1
    while start + n < len(tokens) and tokens[start + n] < 0 and _index(tokens[start + n]) == first + n \
            and media_key(tokens[start + n]) == key:
        n += 1
    return n


def text_run(tokens, limit: int) -> int:
    """How many of the first ``limit`` tokens come before the first media placeholder."""
    for i in range(min(limit, len(tokens))):
        if tokens[i] < 0:
            return i
    return min(limit, len(tokens))


def align_keep(prompt, keep: int) -> int:
    """A reused prefix of ``keep`` tokens, moved back to the start of the media chunk it
    would otherwise end inside."""
    if 0 < keep < len(prompt) and prompt[keep] < 0:
        keep -= _index(prompt[keep])
    return max(keep, 0)


def position_shift(tokens, start: int, stop: int, shift_of) -> int:
    """The sum of ``shift_of(key)`` over the media chunks lying whole in tokens[start:stop]
    (``start`` at a chunk boundary)."""
    total = 0
    i = start
    while i < stop:
        if tokens[i] < 0:
            run = media_run(tokens, i)
            if i + run <= stop:
                total += shift_of(media_key(tokens[i]))
            i += run
        else:
            i += 1
    return total


def has_media(tokens) -> bool:
    return any(t < 0 for t in tokens)


def text_tokens(tokens) -> list[int]:
    return [t for t in tokens if t >= 0]


class MediaEvaluator:
    """Encodes and decodes media chunks for the engine (engine thread only).

    ``cache_bytes``: the host-RAM budget of the LRU of encoded chunks (0: none). Counters for
    /metrics: ``n_encoded`` (projector runs), ``n_cache_hits``, ``encode_seconds``."""

    def __init__(self, mtmd, cache_bytes: int = 0):
        self.mtmd = mtmd
        self.keys = MediaKeys()
        self.cache_bytes = cache_bytes
        self._lru: collections.OrderedDict[str, object] = collections.OrderedDict()
        self._held = 0
        self.n_encoded = 0
        self.n_cache_hits = 0
        self.encode_seconds = 0.0

    def embeddings(self, chunk):
        hit = self._lru.get(chunk.id) if chunk.id else None
        if hit is not None:
            self._lru.move_to_end(chunk.id)
            self.n_cache_hits += 1
            return hit
        t0 = time.perf_counter()
        embd = self.mtmd.encode(chunk)
        dt = time.perf_counter() - t0
        self.encode_seconds += dt
        self.n_encoded += 1
        logger.debug("%s of %d tokens encoded in %.1f ms", chunk.kind, chunk.n_tokens, dt * 1000)
        if chunk.id and 0 < embd.nbytes <= self.cache_bytes:
            self._lru[chunk.id] = embd
            self._held += embd.nbytes
            while self._held > self.cache_bytes:
                _, old = self._lru.popitem(last=False)
                self._held -= old.nbytes
        return embd

    def evaluate(self, context, chunk, n_past: int, seq_id: int, n_batch: int) -> int:
        """Put the chunk into ``seq_id`` from ``n_past``; the next position. On failure the
        positions it may have filled are removed again before the error propagates."""
        embd = self.embeddings(chunk)
        try:
            return self.mtmd.decode_media(context, chunk, embd, n_past, seq_id, n_batch)
        except Exception:
            context.seq_rm(seq_id, n_past, -1)
            raise
