"""The host-RAM prompt cache (--cache-ram, --cache-idle-slots), against the real server (issue #16).

One slot, prompts A, B, A: B evicts A from the KV cache, the cache keeps A's state, and the
third request gets it back, evaluating only its tail.
"""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow

A = ("The history of tea begins in ancient China, where leaves were boiled as medicine long "
     "before they became a daily drink. Traders carried bricks of tea along mountain roads, and "
     "monks brought the custom to Japan, where it grew into a ceremony. Question: who brought it?")
B = ("Volcanoes form where magma rises through the crust. Some erupt gently with rivers of "
     "lava, others explode and throw ash high into the sky, changing the weather for years. "
     "Iceland sits on a ridge where two plates pull apart. Question: why is Iceland volcanic?")


def complete(srv, prompt):
    r = srv.post("/completion", json={"prompt": prompt, "n_predict": 4, "temperature": 0,
                                      "cache_prompt": True})
    assert r.status_code == 200, r.text
    return r.json()


def metric(srv, name) -> float:
    text = srv.get("/metrics").text
    m = re.search(rf"^llamacpp:{name} ([0-9.e+]+)$", text, re.M)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


@pytest.fixture(scope="module")
def cached(server_factory):
    return server_factory("-np", "1", "-c", "1024", "--metrics")


@pytest.fixture(scope="module")
def tiny(server_factory):
    # 1 MiB holds no 80-token state of this model (about 23 KB a token): nothing is kept
    return server_factory("-np", "1", "-c", "1024", "--cache-ram", "1", "--metrics")


@pytest.fixture(scope="module")
def off(server_factory):
    return server_factory("-np", "1", "-c", "1024", "--cache-ram", "0", "--metrics")


def test_a_prompt_evicted_by_another_is_restored_from_host_ram(cached):
    first = complete(cached, A)
    complete(cached, B)
    again = complete(cached, A)
    n = first["tokens_evaluated"]
    assert again["tokens_cached"] >= n - 1          # all but the token evaluated for logits
    assert again["timings"]["prompt_n"] <= 1
    assert again["content"] == first["content"]     # the restored state gives the same answer
    assert metric(cached, "prompt_cache_hits_total") >= 1
    assert metric(cached, "prompt_cache_tokens_restored_total") >= n - 1
    assert metric(cached, "prompt_cache_bytes") > 0   # B went in when A came back


def test_a_cache_smaller_than_one_prompt_keeps_nothing(tiny):
    first = complete(tiny, A)
    complete(tiny, B)
    again = complete(tiny, A)
    assert again["tokens_cached"] < first["tokens_evaluated"] // 2
    assert metric(tiny, "prompt_cache_hits_total") == 0
    assert metric(tiny, "prompt_cache_bytes") == 0


def test_cache_ram_0_turns_the_cache_off(off):
    first = complete(off, A)
    complete(off, B)
    again = complete(off, A)
    assert again["tokens_cached"] < first["tokens_evaluated"] // 2
    assert again["timings"]["prompt_n"] > first["tokens_evaluated"] // 2
    assert metric(off, "prompt_cache_hits_total") == 0
