"""Checks shared by the media tests (images, audio): a /metrics counter, a text's token
count, and the follow-up turn that must come from the slot's cache without encoding its
media again."""
from __future__ import annotations

import re

GREEDY = {"temperature": 0, "max_tokens": 10}


def counter(server, name: str) -> float:
    found = re.search(rf"^llamacpp:{name} (\S+)$", server.get("/metrics").text, re.M)
    assert found, name
    return float(found.group(1))


def token_count(server, text: str, add_special: bool) -> int:
    """How many tokens the server's /tokenize gives ``text``."""
    r = server.post("/tokenize", json={"content": text, "add_special": add_special})
    return len(r.json()["tokens"])


def assert_second_turn_reuses_the_cache(server, client, messages: list[dict], question: str) -> None:
    """Ask ``messages``, then the answer and ``question`` after them: the second prompt is
    served from the slot's cache (at least the whole first prompt) and encodes nothing."""
    first = client.chat.completions.create(model="x", messages=messages, **GREEDY)
    encoded = counter(server, "media_encoded_total")
    follow_up = messages + [{"role": "assistant", "content": first.choices[0].message.content},
                            {"role": "user", "content": question}]
    second = client.chat.completions.create(model="x", messages=follow_up, **GREEDY)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens
    assert counter(server, "media_encoded_total") == encoded
