"""Speculative decoding against the real server and model (issue #16).

The output must not change: the same text with and without speculation, at temperature 0 and
with a fixed seed. A draft that is the model itself is accepted almost always; a random
one-layer draft on the same vocabulary almost never; a draft with another vocabulary fails
the load with a clear message.
"""
from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import ServerProcess
from tests.gguf_builders import renamed_tokens_model, tiny_llama

pytestmark = pytest.mark.slow

# a text the model continues by repeating itself: n-grams of its own history come back
PROMPT = ("Copy the list exactly.\n"
          "red apple, green pear, yellow banana, purple plum, orange peach, red cherry\n"
          "red apple, green pear, yellow banana, purple plum, orange peach, red cherry\n"
          "red apple, green pear, yellow banana,")
COMMON = ("-np", "2", "-c", "2048", "--cache-ram", "0")


def complete(srv, **body):
    body.setdefault("prompt", PROMPT)
    body.setdefault("n_predict", 48)
    body.setdefault("temperature", 0)
    r = srv.post("/completion", json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def plain(server_factory):
    return server_factory(*COMMON)


@pytest.fixture(scope="module")
def ngram(server_factory):
    return server_factory(*COMMON, "--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "3",
                          "--spec-ngram-simple-size-m", "8", "--metrics")


@pytest.fixture(scope="module")
def self_draft(server_factory, model_path):
    return server_factory(*COMMON, "-md", model_path, "--spec-draft-n-max", "4")


@pytest.fixture(scope="module")
def random_draft(server_factory, model_path, tmp_path_factory):
    path = tiny_llama(str(tmp_path_factory.mktemp("draft") / "tiny.gguf"), model_path)
    return server_factory(*COMMON, "-md", path, "--spec-type", "draft-simple")


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 0.9, "seed": 42, "top_k": 0,
                                                            "top_p": 1.0, "min_p": 0.0}],
                         ids=["greedy", "fixed-seed"])
def test_ngram_speculation_gives_the_same_text_with_drafts_accepted(plain, ngram, sampling):
    want = complete(plain, **sampling)
    got = complete(ngram, **sampling)
    assert got["content"] == want["content"]
    assert "draft_n" not in want["timings"]
    if sampling["temperature"] == 0:
        assert got["timings"]["draft_n"] > 0
        assert got["timings"]["draft_n_accepted"] > 0
    metrics = ngram.get("/metrics").text
    assert "llamacpp:draft_tokens_total" in metrics


def test_ngram_speculation_serves_several_slots_at_once(plain, ngram):
    from concurrent.futures import ThreadPoolExecutor
    prompts = [PROMPT, PROMPT.replace("red", "blue")]
    want = [complete(plain, prompt=p)["content"] for p in prompts]
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda p: complete(ngram, prompt=p)["content"], prompts))
    assert got == want


def test_slots_say_which_speculation_is_on(plain, ngram):
    assert {s["speculative.type"] for s in ngram.get("/slots").json()} == {"ngram-simple"}
    assert all(s["speculative"] for s in ngram.get("/slots").json())
    assert not any(s["speculative"] for s in plain.get("/slots").json())


def test_a_draft_that_is_the_model_itself_is_almost_always_accepted(plain, self_draft):
    want = complete(plain, prompt="The capital of France is", n_predict=32)
    got = complete(self_draft, prompt="The capital of France is", n_predict=32)
    assert got["content"] == want["content"]
    t = got["timings"]
    assert t["draft_n"] > 0 and t["draft_n_accepted"] >= 0.8 * t["draft_n"]


def test_a_random_draft_is_almost_never_accepted_and_changes_nothing(plain, random_draft):
    want = complete(plain, prompt="The capital of France is", n_predict=24)
    got = complete(random_draft, prompt="The capital of France is", n_predict=24)
    assert got["content"] == want["content"]
    t = got["timings"]
    assert t["draft_n"] > 0 and t["draft_n_accepted"] <= 0.2 * t["draft_n"]


def test_a_draft_with_another_vocabulary_fails_the_load_clearly(model_path, tmp_path):
    draft = renamed_tokens_model(model_path, str(tmp_path / "other-vocab.gguf"), {1000: "zzzz-renamed"})
    srv = ServerProcess(("-np", "1", "-c", "512", "-md", draft, "-t", "1"), log_name="spec-mismatch")
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                r = requests.get(srv.url + "/health", timeout=1)
                if r.status_code != 503:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        assert r.status_code == 500, r.text
        message = r.json()["error"]["message"]
        assert "draft model" in message and "token 1000" in message
    finally:
        srv.stop()


def test_an_unknown_spec_type_stops_startup(tmp_path):
    srv = ServerProcess(("--spec-type", "ngram-nonsense"), log_name="spec-bad-type")
    assert srv.proc.wait(30) != 0
    srv.stop()
    assert "unknown type 'ngram-nonsense'" in srv.log_tail()
