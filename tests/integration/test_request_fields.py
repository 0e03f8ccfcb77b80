"""llama-server's request fields through the real server and model: n_probs (before sampling)
and post_sampling_probs, n_cmpl, timings_per_token, return_progress, a per-request lora,
n_discard, cache_prompt, id_slot and t_max_predict_ms, with their range checks."""
from __future__ import annotations

import concurrent.futures as cf
import math

import openai
import pytest

from tests.gguf_builders import lora_adapter

from .sse import stream

pytestmark = pytest.mark.slow

PROMPT = "Today was the day. Today I would finally become a"
N_CTX_SLOT = 256


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, model_path):
    return lora_adapter(model_path, str(tmp_path_factory.mktemp("lora") / "random.gguf"),
                        std=0.05, seed=1)


@pytest.fixture(scope="module")
def srv(server_factory, adapter):
    # two slots, small batches (a prompt takes several decodes), one adapter applied at scale 0
    return server_factory("-np", "2", "-c", str(2 * N_CTX_SLOT), "-b", "64", "-ub", "64",
                          "--lora", adapter, "--lora-init-without-apply")


def complete(srv, **body):
    r = srv.post("/completion", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def bad_request(srv, path="/completion", **body) -> str:
    r = srv.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    return r.json()["error"]["message"]


# --- n_probs: the model's top N before sampling ------------------------------------------

def check_logprob_entry(tok, n):
    assert isinstance(tok["id"], int) and isinstance(tok["token"], str)
    assert isinstance(tok["bytes"], list) and tok["logprob"] <= 0.0
    top = tok["top_logprobs"]
    assert len(top) == n
    assert [p["logprob"] for p in top] == sorted((p["logprob"] for p in top), reverse=True)
    for p in top:
        assert {"id", "token", "bytes", "logprob"} <= set(p) and p["logprob"] <= 0.0
        assert bytes(p["bytes"]).startswith(p["token"].encode())      # text: the valid UTF-8 part
    mine = [p["logprob"] for p in top if p["id"] == tok["id"]]
    if mine:
        assert tok["logprob"] == pytest.approx(mine[0], abs=1e-4)


def test_n_probs_reports_the_top_n_before_sampling_for_every_token(srv):
    # top_k 2 cuts the chain to two candidates; the report is still the model's top 5
    body = dict(prompt=PROMPT, n_predict=8, n_probs=5, temperature=1.0, top_k=2, seed=3)
    whole = complete(srv, **body)
    entries = whole["completion_probabilities"]
    assert len(entries) == whole["tokens_predicted"] == 8
    for tok in entries:
        check_logprob_entry(tok, 5)
        assert tok["id"] in [p["id"] for p in tok["top_logprobs"][:2]]   # what top_k let through
        assert 1 <= len(tok["probs"]) <= 2                               # the seed's keys: the chain's
        assert tok["content"] == tok["token"] or not tok["token"]
    events, _ = stream(srv.url + "/completion", dict(body, stream=True))
    streamed = [e for ev in events for e in ev.get("completion_probabilities", [])]
    assert [e["id"] for e in streamed] == [e["id"] for e in entries]
    for mine, theirs in zip(streamed, entries):
        assert [p["id"] for p in mine["top_logprobs"]] == [p["id"] for p in theirs["top_logprobs"]]
        assert mine["logprob"] == pytest.approx(theirs["logprob"], abs=1e-3)


def test_greedy_picks_the_first_of_the_top_n(srv):
    whole = complete(srv, prompt=PROMPT, n_predict=6, n_probs=3, temperature=0)
    for tok in whole["completion_probabilities"]:
        check_logprob_entry(tok, 3)
        assert tok["id"] == tok["top_logprobs"][0]["id"]


def test_post_sampling_probs_reports_what_the_chain_kept(srv):
    body = dict(prompt=PROMPT, n_predict=6, n_probs=10, temperature=1.0, top_k=3, seed=5,
                post_sampling_probs=True)
    for tok in complete(srv, **body)["completion_probabilities"]:
        assert "logprob" not in tok and "top_logprobs" not in tok
        assert 0.0 < tok["prob"] <= 1.0
        top = tok["top_probs"]
        assert 1 <= len(top) <= 3 and all(0.0 < p["prob"] <= 1.0 for p in top)
        assert sum(p["prob"] for p in top) == pytest.approx(1.0, abs=1e-4)
        assert tok["prob"] == pytest.approx(next(p["prob"] for p in top if p["id"] == tok["id"]))
    settings = complete(srv, **body)["generation_settings"]
    assert settings["post_sampling_probs"] is True and settings["n_probs"] == 10


def test_openai_top_logprobs_are_the_models_top_n_whatever_the_chain_keeps(srv):
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    chat = client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "Name a color."}], max_tokens=6,
        logprobs=True, top_logprobs=4, temperature=1.0, seed=2, extra_body={"top_k": 1})
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    for tok in content:
        assert len(tok.top_logprobs) == 4
        assert tok.logprob == pytest.approx(tok.top_logprobs[0].logprob, abs=1e-4)   # top_k 1
    legacy = client.completions.create(model="x", prompt=PROMPT, max_tokens=5, logprobs=3,
                                       temperature=1.0, seed=2, extra_body={"top_k": 1})
    assert all(len(top) == 3 for top in legacy.choices[0].logprobs.top_logprobs)


# --- n_cmpl ------------------------------------------------------------------------------

def test_n_cmpl_completions_share_the_evaluated_prompt(srv):
    results = complete(srv, prompt=PROMPT + " doctor", n_predict=6, temperature=0, n_cmpl=2,
                       cache_prompt=False)
    assert isinstance(results, list) and [r["index"] for r in results] == [0, 1]
    assert results[0]["content"] == results[1]["content"] != ""       # greedy, same logits
    assert {r["id_slot"] for r in results} == {0, 1}
    n_prompt = results[0]["tokens_evaluated"]
    assert results[0]["timings"]["prompt_n"] == n_prompt and results[0]["tokens_cached"] == 0
    assert results[1]["timings"]["prompt_n"] == 0 and results[1]["tokens_cached"] == n_prompt


def test_n_is_an_alias_and_each_completion_has_its_own_seed(srv):
    body = dict(prompt=PROMPT, n_predict=10, temperature=1.0, seed=40)
    both = complete(srv, **body, n=2)
    assert [r["content"] for r in both] == [complete(srv, **body)["content"],
                                            complete(srv, **dict(body, seed=41))["content"]]


def test_n_cmpl_streams_every_completion_with_its_index(srv):
    events, _ = stream(srv.url + "/completion", dict(prompt=PROMPT, n_predict=5, temperature=0,
                                                     n_cmpl=2, stream=True))
    finals = [e for e in events if e["stop"]]
    assert sorted(e["index"] for e in finals) == [0, 1]
    texts = ["".join(e["content"] for e in events if e["index"] == i) for i in (0, 1)]
    assert texts[0] == texts[1] != ""


def test_n_cmpl_with_a_unified_kv_cache_shares_the_cells(server_factory):
    unified = server_factory("-np", "3", "-c", "768", "--kv-unified")
    results = complete(unified, prompt=PROMPT, n_predict=6, temperature=0, n_cmpl=3)
    assert len({r["content"] for r in results}) == 1
    assert [r["timings"]["prompt_n"] for r in results[1:]] == [0, 0]
    again = complete(unified, prompt=PROMPT + " teacher", n_predict=4, temperature=0, n_cmpl=2)
    assert again[0]["tokens_cached"] > 0 and again[0]["content"] == again[1]["content"]


@pytest.mark.parametrize("field, value", [("n_cmpl", 3), ("n_cmpl", 0), ("n", 5), ("n_cmpl", 1.5)],
                         ids=["more-than-slots", "zero", "alias-too-many", "fraction"])
def test_n_cmpl_out_of_range_is_a_400_naming_the_field(srv, field, value):
    assert f"'{field}'" in bad_request(srv, prompt="x", **{field: value})


# --- timings_per_token and return_progress ----------------------------------------------------

def test_timings_per_token_puts_timings_on_every_streamed_chunk(srv):
    events, _ = stream(srv.url + "/completion", dict(prompt=PROMPT, n_predict=5, temperature=0,
                                                     stream=True, timings_per_token=True))
    chunks = [e for e in events if not e["stop"]]
    assert chunks and all("timings" in e for e in chunks)
    counts = [e["timings"]["predicted_n"] for e in chunks]
    assert counts == sorted(counts) and counts[-1] <= 5
    plain, _ = stream(srv.url + "/completion", dict(prompt=PROMPT, n_predict=5, stream=True))
    assert not any("timings" in e for e in plain if not e["stop"])


def progress_of(srv, prompt, **body):
    events, _ = stream(srv.url + "/completion", dict(prompt=prompt, n_predict=3, temperature=0,
                                                     stream=True, return_progress=True, **body))
    first_text = next(i for i, e in enumerate(events) if e["content"])
    progress = [e["prompt_progress"] for e in events if "prompt_progress" in e]
    assert all("prompt_progress" not in e for e in events[first_text:])   # before any text
    return progress, events


def test_return_progress_reports_each_prompt_batch(srv):
    prompt = "This is a test. " * 40                     # about 160 tokens: three 64-token batches
    progress, _ = progress_of(srv, prompt, cache_prompt=False)
    total = progress[0]["total"]
    assert total > 128 and len(progress) == 1 + math.ceil(total / 64)
    assert progress[0]["processed"] == progress[0]["cache"] == 0
    assert [p["processed"] for p in progress[1:]] == [min(total, 64 * k) for k in range(1, len(progress))]
    assert all(p["total"] == total and p["cache"] == 0 and p["time_ms"] >= 0 for p in progress)
    again, _ = progress_of(srv, prompt + "Again.", timings_per_token=True)   # the cached prefix
    assert again[0]["cache"] == again[0]["processed"] > 128
    assert again[-1]["processed"] == again[-1]["total"]


def test_without_stream_or_the_field_there_is_no_progress(srv):
    plain, _ = stream(srv.url + "/completion", dict(prompt=PROMPT, n_predict=2, stream=True))
    assert not any("prompt_progress" in e for e in plain)
    assert "prompt_progress" not in complete(srv, prompt=PROMPT, n_predict=2, return_progress=True)


# --- a per-request lora ----------------------------------------------------------------

LORA = [{"id": 0, "scale": 1.0}]


def greedy(srv, **body):
    return complete(srv, **{"prompt": "The capital of France is", "n_predict": 8, "temperature": 0,
                            "ignore_eos": True, "n_probs": 1, **body})


def first_logprobs(result):
    return [t["logprob"] for t in result["completion_probabilities"]]


def test_a_requests_lora_changes_its_output_only(srv):
    base = greedy(srv)
    with_lora = greedy(srv, lora=LORA)
    assert first_logprobs(with_lora) != pytest.approx(first_logprobs(base), abs=1e-4)
    assert with_lora["generation_settings"]["lora"] == [{"id": 0, "scale": 1.0}]
    assert srv.get("/lora-adapters").json()[0]["scale"] == 0.0          # the server's: untouched
    after = greedy(srv)
    assert after["content"] == base["content"]
    assert first_logprobs(after) == pytest.approx(first_logprobs(base), abs=1e-4)
    zero = greedy(srv, lora=[{"id": 0, "scale": 0.0}])
    assert first_logprobs(zero) == pytest.approx(first_logprobs(base), abs=1e-4)


def test_requests_with_different_adapters_run_at_the_same_time(srv):
    alone = [greedy(srv, n_predict=16), greedy(srv, n_predict=16, lora=LORA)]
    with cf.ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda kw: greedy(srv, n_predict=16, **kw), [{}, {"lora": LORA}]))
    assert [r["content"] for r in together] == [r["content"] for r in alone]
    for mine, theirs in zip(together, alone):
        assert first_logprobs(mine) == pytest.approx(first_logprobs(theirs), abs=1e-3)
    assert {r["id_slot"] for r in together} == {0, 1}


@pytest.mark.parametrize("lora, match", [
    ([{"id": 1, "scale": 1.0}], "invalid adapter id 1"),
    ([{"id": 0, "scale": "big"}], "scale of adapter 0"),
    ({"id": 0, "scale": 1.0}, "must be an array"),
    ([[0, 1.0]], "must be an array"),
], ids=["unknown-id", "scale-not-a-number", "not-an-array", "items-not-objects"])
def test_a_bad_lora_is_a_400_naming_the_field(srv, lora, match):
    message = bad_request(srv, prompt="x", lora=lora)
    assert "'lora'" in message and match in message


# --- n_discard, cache_prompt, id_slot, t_max_predict_ms ----------------------------------

def slot_n_past(srv, slot_id: int) -> int:
    return next(s["n_past"] for s in srv.get("/slots").json() if s["id"] == slot_id)


@pytest.mark.parametrize("n_discard", [0, 4], ids=["default-half", "four-at-a-time"])
def test_n_discard_sets_how_many_tokens_a_context_shift_drops(srv, n_discard):
    # a long prompt (evaluated in batches, fast) nearly fills the slot; a few tokens more
    # cross the context, and the shifts leave the slot's cache as n_discard says
    prompt = "Count: " + ", ".join(str(i) for i in range(1, 62))
    n_prompt = len(srv.post("/tokenize", json={"content": prompt}).json()["tokens"])
    assert 200 < n_prompt < N_CTX_SLOT - 10
    n_predict = N_CTX_SLOT - n_prompt + 20
    result = complete(srv, prompt=prompt, n_predict=n_predict, ignore_eos=True, temperature=0,
                      n_keep=0, n_discard=n_discard, cache_prompt=False)
    assert result["truncated"] is True and result["tokens_predicted"] == n_predict
    assert result["generation_settings"]["n_discard"] == n_discard
    n_past = slot_n_past(srv, result["id_slot"])
    if n_discard:
        assert N_CTX_SLOT - n_discard <= n_past <= N_CTX_SLOT   # small steps: always nearly full
    else:
        assert n_past <= N_CTX_SLOT // 2 + 30                   # one shift dropped half


def test_cache_prompt_and_id_slot(srv):
    prompt = "A long shared prefix about the sea and the ships that sail on it. " * 3
    first = complete(srv, prompt=prompt, n_predict=2, id_slot=1)
    again = complete(srv, prompt=prompt + "More.", n_predict=2, id_slot=1)
    assert first["id_slot"] == again["id_slot"] == 1
    assert again["tokens_cached"] >= first["tokens_evaluated"] - 1
    fresh = complete(srv, prompt=prompt + "More.", n_predict=2, id_slot=1, cache_prompt=False)
    assert fresh["tokens_cached"] == 0 and fresh["generation_settings"]["cache_prompt"] is False


def test_t_max_predict_ms_stops_at_a_new_line_once_the_time_is_up(srv):
    body = dict(prompt="A list of fruits, one per line:\n", n_predict=200, temperature=0,
                ignore_eos=True)
    limited = complete(srv, **body, t_max_predict_ms=1)
    assert limited["stopped_limit"] is True and limited["tokens_predicted"] < 200
    assert limited["content"].endswith("\n")


@pytest.mark.parametrize("field, value, match", [
    ("n_discard", -1, "between 0 and 2147483647"),
    ("n_keep", -2, "between -1 and 2147483647"),
    ("n_predict", -2, "between -1 and 2147483647"),
    ("t_max_predict_ms", -5, "between -1 and"),
    ("id_slot", 2, "does not exist"),
    ("id_slot", "one", "must be an integer"),
    ("cache_prompt", "yes", "must be a boolean"),
    ("timings_per_token", 1, "must be a boolean"),
    ("return_progress", "true", "must be a boolean"),
    ("post_sampling_probs", 0, "must be a boolean"),
], ids=lambda v: str(v))
def test_an_out_of_range_field_is_a_400_naming_it(srv, field, value, match):
    message = bad_request(srv, prompt="x", **{field: value})
    assert f"'{field}'" in message and match in message
