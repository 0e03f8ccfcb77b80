"""Self-extend (group attention, ``--grp-attn-n N --grp-attn-w W``): model-free bookkeeping.

A slot's KV cache normally holds token i at position i. With self-extend, once the next
position reaches ``ga_i + W``, the W positions from ``ga_i`` are grouped N to one (divided by
N) and everything after them moves back by ``W - W/N``; ``ga_i`` then advances by ``W/N``.
Old tokens end up at coarse positions, the most recent window keeps exact ones, and the
largest position stays near ``(n_tokens / W) * (W / N) + W`` instead of ``n_tokens``: a model
can attend over more tokens than its training context (the cells still count: the context
size ``-c`` limits the tokens held).

Each grouping is three KV edits, emitted into the plan as ``("add", seq, p0, p1, delta)`` and
``("div", seq, p0, p1, d)`` (``llama_memory_seq_add`` / ``seq_div`` over ``[p0, p1)``), the
same arithmetic as llama.cpp's llama-cli and the seed's server::

    ib = N * ga_i / W;  bd = (W / N) * (N - 1);  dd = W / N - ib * bd - W
    add [ga_i, pos) + ib*bd;  div [ga_i + ib*bd, ga_i + ib*bd + W) / N;  add [ga_i + ib*bd + W, pos + ib*bd) + dd

The scheduler asks ``room()`` before placing a prompt chunk and never lets a chunk cross the
current window, so no position the model sees exceeds ``ga_i + W``. A grouped cache cannot
be cut at an arbitrary token (N tokens share a position), so the scheduler does not reuse a
grouped cache as a prompt prefix: the next request on that slot starts from an empty cache.
"""
from __future__ import annotations

__all__ = ["GroupAttention"]


class GroupAttention:
    def __init__(self, n: int, w: int):
        if n < 2 or w < n or w % n:
            raise ValueError(f"self-extend needs --grp-attn-n >= 2 and --grp-attn-w a multiple of it "
                             f"(got n={n}, w={w})")
        self.n = n
        self.w = w
        self._state: dict[int, tuple[int, int]] = {}   # slot id -> (ga_i, positions removed so far)

    def reset(self, slot_id: int) -> None:
        self._state.pop(slot_id, None)

    def grouped(self, slot_id: int) -> bool:
        return slot_id in self._state

    def position(self, slot_id: int, n_past: int) -> int:
        """The position of the slot's next token, given the tokens its cache holds."""
        return n_past - self._state.get(slot_id, (0, 0))[1]

    def room(self, slot_id: int, n_past: int) -> int:
        """Tokens that fit before the current window ends (call after ``group()``)."""
        ga_i = self._state.get(slot_id, (0, 0))[0]
        return ga_i + self.w - self.position(slot_id, n_past)

    def group(self, slot_id: int, n_past: int, kv_ops: list) -> None:
        """Group every full window before the next token; append the KV edits to kv_ops."""
        n, w = self.n, self.w
        ga_i, removed = self._state.get(slot_id, (0, 0))
        pos = n_past - removed
        bd = (w // n) * (n - 1)
        while pos >= ga_i + w:
            ib = (n * ga_i) // w
            dd = (w // n) - ib * bd - w
            if ib * bd:
                kv_ops.append(("add", slot_id, ga_i, pos, ib * bd))
            kv_ops.append(("div", slot_id, ga_i + ib * bd, ga_i + ib * bd + w, n))
            kv_ops.append(("add", slot_id, ga_i + ib * bd + w, pos + ib * bd, dd))
            pos -= bd
            removed += bd
            ga_i += w // n
        if removed:
            self._state[slot_id] = (ga_i, removed)
