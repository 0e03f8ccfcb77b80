"""Sampling through the real server: n_probs, seeds under load, logit_bias, repeat penalty."""
from __future__ import annotations

import concurrent.futures as cf

import pytest

from .sse import stream

pytestmark = pytest.mark.slow

PROMPT = "Here is a short story about a dragon who"


@pytest.fixture(scope="module")
def one_slot(server_factory):
    return server_factory("-np", "1", "-c", "1024", "-t", "1")


@pytest.fixture(scope="module")
def three_slots(server_factory):
    return server_factory("-np", "3", "-c", "3072", "-t", "1")


def complete(srv, **body):
    r = srv.post("/completion", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def token_texts(result) -> list[str]:
    return [entry["content"] for entry in result["completion_probabilities"]]


def assert_probs_shape(entries, n_probs):
    for entry in entries:
        probs = [p["prob"] for p in entry["probs"]]
        assert 1 <= len(probs) <= n_probs
        assert all(isinstance(p["tok_str"], str) for p in entry["probs"])
        assert probs == sorted(probs, reverse=True)
        assert 0.0 <= min(probs) and sum(probs) <= 1.0 + 1e-4


@pytest.mark.parametrize("temperature", [0.0, 0.8], ids=["greedy", "sampled"])
def test_n_probs_without_streaming(one_slot, temperature):
    result = complete(one_slot, prompt=PROMPT, n_predict=8, n_probs=3, temperature=temperature,
                      seed=1)
    entries = result["completion_probabilities"]
    assert len(entries) == result["tokens_predicted"] == 8
    assert_probs_shape(entries, 3)
    assert "".join(token_texts(result)) == result["content"]
    if temperature == 0.0:      # greedy picks the most probable token
        assert all(e["content"] == e["probs"][0]["tok_str"] for e in entries)


def test_n_probs_when_streaming_match_the_whole_response(one_slot):
    body = dict(prompt=PROMPT, n_predict=8, n_probs=2, temperature=0.0)
    whole = complete(one_slot, **body)
    events, _ = stream(one_slot.url + "/completion", dict(body, stream=True))
    assert events[-1]["stop"] is True
    streamed = [e for chunk in events[:-1] for e in chunk.get("completion_probabilities", [])]
    assert all("completion_probabilities" in chunk for chunk in events[:-1] if chunk["content"])
    assert_probs_shape(streamed, 2)
    assert [e["content"] for e in streamed] == token_texts(whole)
    for mine, theirs in zip(streamed, whole["completion_probabilities"]):
        assert [p["tok_str"] for p in mine["probs"]] == [p["tok_str"] for p in theirs["probs"]]
        assert [p["prob"] for p in mine["probs"]] == pytest.approx(
            [p["prob"] for p in theirs["probs"]], abs=1e-3)


SEEDED = dict(prompt=PROMPT, n_predict=24, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
              seed=4242, cache_prompt=False)
NOISE = ["The capital of France is", "def fibonacci(n):", "Once upon a time",
         "List three fruits:", "The weather today"]


def seeded_under_load(srv, noise_requests: int) -> str:
    """The seeded request, sent while other requests with other seeds run beside it."""
    with cf.ThreadPoolExecutor(noise_requests + 1) as pool:
        noise = [pool.submit(complete, srv, prompt=NOISE[i % len(NOISE)], n_predict=32,
                             temperature=1.0, seed=-1)
                 for i in range(noise_requests)]
        mine = pool.submit(complete, srv, **SEEDED)
        for f in noise:
            f.result()
        return mine.result()["content"]


def test_same_seed_same_text_whatever_the_slots_and_the_traffic(one_slot, three_slots):
    alone = complete(one_slot, **SEEDED)["content"]
    assert len(alone) > 0
    assert seeded_under_load(one_slot, 2) == alone
    assert seeded_under_load(three_slots, 4) == alone
    assert seeded_under_load(three_slots, 2) == alone


def test_different_seeds_give_different_texts(three_slots):
    texts = {complete(three_slots, **dict(SEEDED, seed=seed))["content"] for seed in (1, 2, 3)}
    assert len(texts) == 3


def test_logit_bias_false_bans_the_greedy_first_token(one_slot):
    body = dict(prompt=PROMPT, n_predict=12, temperature=0.0, n_probs=5)
    first = token_texts(complete(one_slot, **body))[0]
    r = one_slot.post("/tokenize", json={"content": first, "with_pieces": True})
    banned = r.json()["tokens"]
    assert len(banned) == 1, f"{first!r} is not one token"
    banned_id = banned[0]["id"]

    result = complete(one_slot, **body, logit_bias=[[banned_id, False]])
    texts = token_texts(result)
    assert texts[0] != first
    assert first not in texts
    for entry in result["completion_probabilities"]:
        assert first not in [p["tok_str"] for p in entry["probs"]]


def test_logit_bias_by_string(one_slot):
    body = dict(prompt=PROMPT, n_predict=12, temperature=0.0, n_probs=1)
    first = token_texts(complete(one_slot, **body))[0]
    result = complete(one_slot, **body, logit_bias=[[first, False]])
    assert first not in token_texts(result)


def repeats(texts: list[str]) -> int:
    return len(texts) - len(set(texts))


def test_strong_repeat_penalty_reduces_repeats(one_slot):
    body = dict(prompt="The list of numbers: 1, 2, 3, 1, 2, 3, 1, 2, 3,", n_predict=40,
                temperature=0.0, n_probs=1, ignore_eos=True)
    plain = token_texts(complete(one_slot, **body, repeat_penalty=1.0))
    penalized = token_texts(complete(one_slot, **body, repeat_penalty=1.8, repeat_last_n=64))
    assert repeats(plain) > 20, plain
    assert repeats(penalized) < repeats(plain) // 2, penalized


def test_bad_sampling_value_is_a_400_naming_the_field(one_slot):
    r = one_slot.post("/completion", json={"prompt": "x", "top_p": 2.0})
    assert r.status_code == 400
    assert "top_p" in r.text
