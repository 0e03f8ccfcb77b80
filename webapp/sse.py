"""Server-sent events framing.

``Frames``: a stream's token chunks differ from one another only in a field or two (the
text, the token ids); everything else (id, model, created, index, ...) is the same bytes
every time. A ``Frames`` made from one chunk with those fields marked encodes the constant
parts once, and each chunk after that encodes only its own values: the bytes are exactly
``sse_data`` of the whole chunk.
"""
from __future__ import annotations

import json
import uuid

__all__ = ["sse_data", "sse_done", "dumps", "Frames"]


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sse_data(obj) -> bytes:
    return f"data: {dumps(obj)}\n\n".encode("utf-8")


def sse_done() -> bytes:
    return b"data: [DONE]\n\n"


class Frames:
    """``Frames(template, path, ...)``: ``frame(value, ...)`` is ``sse_data`` of the template
    with each path (a tuple of keys and list indices) set to its value."""

    def __init__(self, template: dict, *paths: tuple):
        self._template = template
        self._paths = paths
        nonce = uuid.uuid4().hex
        markers = [f"\x00{nonce}{n}\x00" for n in range(len(paths))]
        data = sse_data(_with(template, paths, markers))
        parts: list[bytes] = []
        for marker in markers:
            pieces = data.split(dumps(marker).encode("utf-8"))
            if len(pieces) != 2:        # cannot happen short of a nonce collision
                self._parts = None
                return
            parts.append(pieces[0])
            data = pieces[1]
        parts.append(data)
        self._parts = tuple(parts)

    def frame(self, *values) -> bytes:
        parts = self._parts
        if parts is None:
            return sse_data(_with(self._template, self._paths, values))
        out = [parts[0]]
        for value, part in zip(values, parts[1:]):
            out.append(dumps(value).encode("utf-8"))
            out.append(part)
        return b"".join(out)


def _with(template, paths, values):
    """A copy of template with each path set to its value (containers on the paths copied)."""
    root = _copy(template)
    for path, value in zip(paths, values):
        node = root
        for key in path[:-1]:
            node[key] = _copy(node[key])
            node = node[key]
        node[path[-1]] = value
    return root


def _copy(node):
    return list(node) if isinstance(node, list) else dict(node)
