"""A small SSE reader for tests: yields parsed `data:` payloads, keeping the raw bytes."""
from __future__ import annotations

import json

import requests


def stream(url: str, body: dict, timeout: float = 120):
    """(events, raw_bytes) for one streamed request; events are parsed JSON objects or "[DONE]"."""
    r = requests.post(url, json=body, stream=True, timeout=timeout)
    r.raise_for_status()
    raw = b""
    events = []
    for chunk in r.iter_content(chunk_size=None):
        raw += chunk
    for block in raw.split(b"\n\n"):
        if not block.strip():
            continue
        assert block.startswith(b"data: "), block[:80]
        payload = block[len(b"data: "):]
        events.append("[DONE]" if payload == b"[DONE]" else json.loads(payload.decode("utf-8")))
    return events, raw
