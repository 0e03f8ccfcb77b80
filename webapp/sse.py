"""Server-sent events framing."""
from __future__ import annotations

import json

__all__ = ["sse_data", "sse_done", "dumps"]


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sse_data(obj) -> bytes:
    return f"data: {dumps(obj)}\n\n".encode("utf-8")


def sse_done() -> bytes:
    return b"data: [DONE]\n\n"
