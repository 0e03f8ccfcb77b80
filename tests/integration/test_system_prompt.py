"""The server-wide system prompt: -spf FILE and the `system_prompt` request field (issue #6).

The reference for every output is a server without a system prompt, given the system
prompt's tokens (with BOS when the model adds one) followed by the request's own tokens
(without BOS), at temperature 0.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..conftest import ROOT, free_port

pytestmark = pytest.mark.slow

SYSTEM = {"prompt": "You are a helpful assistant who answers briefly and kindly.\n",
          "anti_prompt": "User:", "assistant_name": "Assistant:"}
OTHER = {"prompt": "Transcript of a dialog between a curious child and a patient teacher.\n",
         "anti_prompt": "Child:", "assistant_name": "Teacher:"}


@pytest.fixture(scope="module")
def spf(tmp_path_factory):
    path = tmp_path_factory.mktemp("spf") / "system.json"
    path.write_text(json.dumps(SYSTEM))
    return path


@pytest.fixture(scope="module")
def srv(server_factory, spf):
    return server_factory("-np", "2", "-c", "1024", "-spf", str(spf))


@pytest.fixture(scope="module")
def plain(server_factory):
    return server_factory("-np", "2", "-c", "1024", "--metrics")   # shared with test_metrics


def complete(srv, **body):
    body.setdefault("temperature", 0)
    r = srv.post("/completion", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def tokens(srv, text, add_special):
    return srv.post("/tokenize", json={"content": text, "add_special": add_special}).json()["tokens"]


def reference(plain, system: str, prompt: str, n_predict: int) -> str:
    ids = tokens(plain, system, True) + tokens(plain, prompt, False)
    return complete(plain, prompt=ids, n_predict=n_predict, cache_prompt=False)["content"]


def test_props_show_the_system_prompt(srv):
    props = srv.get("/props").json()
    assert props["system_prompt"] == SYSTEM["prompt"]
    assert props["user_name"] == "User:"
    assert props["assistant_name"] == "Assistant:"


@pytest.mark.parametrize("slot,prompt", [(0, "User: What is tea?\nAssistant:"),
                                         (1, "Question: name a color.\nAnswer:")])
def test_every_slot_starts_with_the_prompt_evaluated_once(srv, plain, slot, prompt):
    n_system = len(tokens(srv, SYSTEM["prompt"], True))
    r = complete(srv, prompt=prompt, n_predict=8, id_slot=slot)
    assert r["content"] == reference(plain, SYSTEM["prompt"], prompt, 8)
    # the slot already held the system prompt: only the request's own tokens were evaluated
    assert r["tokens_cached"] == n_system
    assert r["timings"]["prompt_n"] == len(tokens(srv, prompt, False))
    assert r["prompt"] == prompt
    slot_view = srv.get("/slots").json()[slot]
    assert slot_view["prompt"].startswith(SYSTEM["prompt"].strip())


def test_the_system_prompt_is_kept_without_cache_prompt(srv, plain):
    prompt = "Tell me one fact about the moon."
    n_system = len(tokens(srv, SYSTEM["prompt"], True))
    first = complete(srv, prompt=prompt, n_predict=6, cache_prompt=False)
    second = complete(srv, prompt=prompt, n_predict=6, cache_prompt=False, id_slot=first["id_slot"])
    assert second["tokens_cached"] == n_system
    assert first["content"] == second["content"] == reference(plain, SYSTEM["prompt"], prompt, 6)


@pytest.mark.parametrize("value", [
    pytest.param(5, id="number"),
    pytest.param(["a"], id="list"),
    pytest.param({"prompt": 3}, id="prompt-not-a-string"),
    pytest.param({"prompt": "x", "colour": "red"}, id="unknown-field"),
    pytest.param({"prompt": "word " * 400}, id="too-long-for-the-context"),
])
def test_a_bad_system_prompt_field_is_refused(srv, value):
    r = srv.post("/completion", json={"prompt": "Hi", "n_predict": 1, "system_prompt": value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert srv.get("/props").json()["system_prompt"] == SYSTEM["prompt"]


def test_the_request_field_replaces_the_system_prompt_for_everyone(srv, plain):
    prompt = "Child: Why is the sky blue?\nTeacher:"
    try:
        r = complete(srv, prompt=prompt, n_predict=8, system_prompt=OTHER, id_slot=0)
        expected = reference(plain, OTHER["prompt"], prompt, 8)
        assert r["content"] == expected
        props = srv.get("/props").json()
        assert (props["system_prompt"], props["user_name"], props["assistant_name"]) == \
            (OTHER["prompt"], "Child:", "Teacher:")
        # later requests without the field use it too; the idle slot was given it already
        n_other = len(tokens(srv, OTHER["prompt"], True))
        later = complete(srv, prompt=prompt, n_predict=8, id_slot=1)
        assert later["content"] == expected
        assert later["tokens_cached"] == n_other
        # a plain string replaces only the prompt text
        complete(srv, prompt="Hi", n_predict=1, system_prompt=SYSTEM["prompt"])
        props = srv.get("/props").json()
        assert (props["system_prompt"], props["assistant_name"]) == (SYSTEM["prompt"], "Teacher:")
    finally:
        complete(srv, prompt="Hi", n_predict=1, system_prompt=SYSTEM)
    assert srv.get("/props").json()["assistant_name"] == "Assistant:"


@pytest.mark.parametrize("content", [
    pytest.param(None, id="missing-file"),
    pytest.param("{not json", id="not-json"),
    pytest.param('{"prompt": 1}', id="prompt-not-a-string"),
    pytest.param('["a list"]', id="not-an-object"),
])
def test_a_bad_system_prompt_file_stops_startup(tmp_path, content):
    path = tmp_path / "system.json"
    if content is not None:
        path.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "webapp.cli", "--port", str(free_port()), "-spf", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "--system-prompt-file" in proc.stderr
