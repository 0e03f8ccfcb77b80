"""Structured output against the real server and model: ``json_schema`` and ``grammar``.

Every corpus schema (tests/schemas) is asked for with a few seeds at temperature 0.8; every
answer that ended on its own must parse and validate. Answers cut short by ``n_predict``
(``stopped_limit``) are counted and printed; they are the only ones excused.
"""
from __future__ import annotations

import concurrent.futures as cf
import datetime
import ipaddress
import json
import time
from pathlib import Path

import jsonschema
import pytest

from .sse import stream

# the corpus fixture takes ~2.5 minutes on 2 idle cores; its time counts against the first test
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CORPUS = sorted((Path(__file__).resolve().parents[1] / "schemas").glob("*.json"))
SEEDS = (11, 12)
N_PREDICT = 384
N_SLOTS = 4


def _is_time(s):
    return datetime.time.fromisoformat(s.replace("Z", "+00:00")).tzinfo is not None


FORMATS = jsonschema.FormatChecker()
FORMATS.checks("date", raises=ValueError)(
    lambda s: len(s) == 10 and bool(datetime.date.fromisoformat(s)))
FORMATS.checks("time", raises=ValueError)(_is_time)
FORMATS.checks("date-time", raises=ValueError)(
    lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).tzinfo is not None)
FORMATS.checks("ipv4", raises=ValueError)(lambda s: bool(ipaddress.IPv4Address(s)))


def validation_errors(schema, doc) -> list[str]:
    cls = jsonschema.validators.validator_for(schema)
    return [e.message for e in cls(schema, format_checker=FORMATS).iter_errors(doc)]


def prompt_for(schema) -> str:
    return f"{schema.get('description', 'A JSON value.')}\nJSON:"


@pytest.fixture(scope="module")
def srv(server_factory):
    return server_factory("-np", str(N_SLOTS), "-c", "4096")


@pytest.fixture(scope="module")
def corpus_answers(srv):
    """{schema name: [(seed, response body), ...]}, asked N_SLOTS at a time."""
    jobs = [(path, seed) for path in CORPUS for seed in SEEDS]

    def ask(job):
        path, seed = job
        schema = json.loads(path.read_text())
        r = srv.post("/completion", json={"prompt": prompt_for(schema), "json_schema": schema,
                                          "n_predict": N_PREDICT, "temperature": 0.8,
                                          "seed": seed}, timeout=600)
        assert r.status_code == 200, f"{path.stem}: {r.status_code} {r.text}"
        return path.stem, seed, r.json()

    t0 = time.time()
    answers: dict[str, list] = {}
    with cf.ThreadPoolExecutor(N_SLOTS) as pool:
        for name, seed, body in pool.map(ask, jobs):
            answers.setdefault(name, []).append((seed, body))
    cut = sorted(f"{name}/{seed}" for name, runs in answers.items()
                 for seed, body in runs if body.get("stopped_limit"))
    print(f"\nstructured output: {len(jobs)} answers in {time.time() - t0:.0f}s, "
          f"{len(cut)} cut short by n_predict={N_PREDICT}: {', '.join(cut) or 'none'}")
    return answers


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_every_answer_parses_and_validates(corpus_answers, path):
    schema = json.loads(path.read_text())
    for seed, body in corpus_answers[path.stem]:
        if body.get("stopped_limit"):
            assert body["tokens_predicted"] >= N_PREDICT
            continue
        assert body.get("stopped_eos"), f"seed {seed}: ended without EOS: {body}"
        doc = json.loads(body["content"])
        assert validation_errors(schema, doc) == [], f"seed {seed}: {body['content']}"


def test_answers_cut_short_by_n_predict_are_rare(corpus_answers):
    runs = [body for answers in corpus_answers.values() for _, body in answers]
    cut = sum(bool(body.get("stopped_limit")) for body in runs)
    print(f"\n{cut} of {len(runs)} structured answers hit n_predict={N_PREDICT}")
    assert cut <= len(runs) // 10


def test_streamed_answer_validates(srv):
    schema = json.loads((CORPUS[0].parent / "recipe.json").read_text())
    events, _ = stream(srv.url + "/completion", {
        "prompt": prompt_for(schema), "json_schema": schema, "n_predict": N_PREDICT,
        "temperature": 0.8, "seed": 3, "stream": True}, timeout=600)
    final = events[-1]
    assert final["stop"] is True
    if not final.get("stopped_limit"):
        doc = json.loads("".join(e["content"] for e in events))
        assert validation_errors(schema, doc) == []


@pytest.mark.parametrize("grammar, allowed", [
    ('root ::= "yes" | "no"', {"yes", "no"}),
    ('root ::= "[" digit ("," digit){2} "]"\ndigit ::= [0-9]', None),
], ids=["alternatives", "rules-and-repetition"])
def test_grammar_field_constrains_the_output(srv, grammar, allowed):
    for seed in (1, 2, 3):
        r = srv.post("/completion", json={"prompt": "Answer:", "grammar": grammar,
                                          "n_predict": 32, "temperature": 1.0, "seed": seed})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["stopped_eos"], body
        if allowed is not None:
            assert body["content"] in allowed
        else:
            values = json.loads(body["content"])
            assert len(values) == 3 and all(0 <= v <= 9 for v in values)


def test_chat_response_format_json_schema(srv):
    schema = json.loads((CORPUS[0].parent / "color_rgb.json").read_text())
    r = srv.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "Give me a color."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "color", "schema": schema}},
        "max_tokens": N_PREDICT, "temperature": 0.8, "seed": 5})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    if choice["finish_reason"] == "stop":
        assert validation_errors(schema, json.loads(choice["message"]["content"])) == []


def assert_still_serving(srv):
    deadline = time.time() + 10
    while True:
        health = srv.get("/health").json()
        if health.get("slots_idle") == N_SLOTS or time.time() > deadline:
            break
        time.sleep(0.1)
    assert health["slots_idle"] == N_SLOTS, health
    r = srv.post("/completion", json={"prompt": "Hi", "n_predict": 2, "temperature": 0})
    assert r.status_code == 200 and r.json()["tokens_predicted"] >= 1


def assert_openai_400(r, *fragments):
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == 400 and err["type"] == "invalid_request_error"
    for fragment in fragments:
        assert fragment in err["message"], err["message"]


@pytest.mark.parametrize("grammar", [
    "root ::= undefined-rule",
    'root ::= "unterminated',
    "root ::= [0-",
    'other ::= "no root"',
], ids=["undefined rule", "unterminated literal", "unterminated class", "no root rule"])
def test_a_bad_grammar_is_a_400_and_the_slot_stays_free(srv, grammar):
    r = srv.post("/completion", json={"prompt": "x", "grammar": grammar, "n_predict": 4})
    assert_openai_400(r, "Failed to parse grammar")
    assert_still_serving(srv)


@pytest.mark.parametrize("schema, keyword", [
    ({"type": "string", "format": "email"}, "format"),
    ({"type": "object", "patternProperties": {"^x": {}}}, "patternProperties"),
    ({"not": {"type": "null"}}, "not"),
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "oneOf"),
    ({"type": "strings"}, "type"),
], ids=["unsupported format", "patternProperties", "not", "overlapping oneOf", "invalid schema"])
def test_an_unenforceable_or_invalid_schema_is_a_400(srv, schema, keyword):
    r = srv.post("/completion", json={"prompt": "x", "json_schema": schema, "n_predict": 4})
    assert_openai_400(r, keyword)
    assert_still_serving(srv)


def test_grammar_and_json_schema_together_is_a_400(srv):
    r = srv.post("/completion", json={"prompt": "x", "grammar": 'root ::= "a"',
                                      "json_schema": {"type": "string"}, "n_predict": 4})
    assert_openai_400(r, "grammar", "json_schema")
    assert_still_serving(srv)
