"""GET /slots and slot save / erase / restore, against the real server and model (issue #6)."""
from __future__ import annotations

import os
import threading
import time

import pytest
import requests

pytestmark = pytest.mark.slow

PROMPT = ("A long shared preamble about the history of tea in China and Japan, where it was "
          "grown, traded and brewed for centuries. In short, tea was")


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("slot-files")


@pytest.fixture(scope="module")
def srv(server_factory, save_dir):
    return server_factory("-np", "2", "-c", "1024", "--slot-save-path", str(save_dir))


def complete(srv, **body):
    body.setdefault("temperature", 0)
    r = srv.post("/completion", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def slots(srv):
    r = srv.get("/slots")
    assert r.status_code == 200, r.text
    return r.json()


def action(srv, slot, name, **body):
    return requests.post(f"{srv.url}/slots/{slot}?action={name}", json=body or None, timeout=60)


def assert_error(r, status, type_="invalid_request_error"):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["type"] == type_ and err["message"]


def wait_idle(srv, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(s["is_processing"] for s in slots(srv)):
            return
        time.sleep(0.05)
    raise AssertionError("slots still busy")


# --- GET /slots ---------------------------------------------------------------------------
def test_slots_describe_the_last_request_of_each_slot(srv):
    r = complete(srv, prompt="Hello there, how", n_predict=4, id_slot=1, stop=["never-matches"])
    s = slots(srv)
    assert [x["id"] for x in s] == [0, 1]
    one = s[1]
    assert one["is_processing"] is False and one["state"] == 0
    assert one["n_ctx"] == 512
    assert one["prompt"] == "Hello there, how"
    assert one["n_predict"] == 4
    assert one["n_past"] == one["n_cache_tokens"] == r["tokens_evaluated"] + r["tokens_predicted"] - 1
    assert one["id_task"] >= 1
    assert one["params"]["temperature"] == 0 and one["params"]["stop"] == ["never-matches"]
    assert one["next_token"] == {"has_next_token": False, "n_remain": 0, "n_decoded": 4,
                                 "stopped_eos": False, "stopped_word": False, "stopped_limit": True,
                                 "stopping_word": ""}


def test_a_generating_slot_is_processing(srv):
    body = {"prompt": "Tell me a long story", "n_predict": 400, "ignore_eos": True, "stream": True,
            "id_slot": 0}
    r = requests.post(srv.url + "/completion", json=body, stream=True, timeout=30)
    chunks = r.iter_content(chunk_size=None)   # kept: dropping the iterator hangs up
    try:
        next(chunks)
        s = slots(srv)[0]
        assert s["is_processing"] is True and s["state"] == 1
        assert s["next_token"]["has_next_token"] is True
        assert 0 < s["next_token"]["n_decoded"] < 400
        assert s["next_token"]["n_remain"] == 400 - s["next_token"]["n_decoded"]
        health = srv.get("/health?include_slots").json()
        assert [x["id"] for x in health["slots"]] == [0, 1]
        assert health["slots"][0]["is_processing"] is True
    finally:
        r.close()
    wait_idle(srv)


# --- save / erase / restore ----------------------------------------------------------------
def test_save_erase_restore_then_continue_as_if_never_saved(srv, save_dir):
    first = complete(srv, prompt=PROMPT, n_predict=8, id_slot=1)
    cached = slots(srv)[1]["n_cache_tokens"]

    saved = action(srv, 1, "save", filename="tea.bin")
    assert saved.status_code == 200, saved.text
    saved = saved.json()
    assert saved["id_slot"] == 1 and saved["filename"] == "tea.bin"
    assert saved["n_saved"] == cached and saved["n_written"] > 0
    assert saved["timings"]["save_ms"] >= 0
    assert os.path.getsize(save_dir / "tea.bin") == saved["n_written"]

    erased = action(srv, 1, "erase").json()
    assert erased == {"id_slot": 1, "n_erased": cached}
    assert slots(srv)[1]["n_cache_tokens"] == 0

    restored = action(srv, 1, "restore", filename="tea.bin").json()
    assert restored["id_slot"] == 1 and restored["n_restored"] == cached
    assert restored["n_read"] == saved["n_written"] and restored["timings"]["restore_ms"] >= 0
    assert slots(srv)[1]["n_cache_tokens"] == cached

    # continue the text: the restored cache is reused, and the output is what a fresh
    # evaluation of the whole prompt gives
    follow = PROMPT + first["content"]
    fresh = complete(srv, prompt=follow, n_predict=8, id_slot=0, cache_prompt=False)
    again = complete(srv, prompt=follow, n_predict=8, id_slot=1)
    assert again["content"] == fresh["content"]
    assert again["tokens_cached"] >= first["tokens_evaluated"] - 1
    assert again["timings"]["prompt_n"] < fresh["timings"]["prompt_n"]


def test_a_file_saved_from_one_slot_restores_into_another(srv):
    reference = complete(srv, prompt=PROMPT, n_predict=6, id_slot=1, cache_prompt=False)
    assert action(srv, 1, "save", filename="from-one.bin").status_code == 200
    assert action(srv, 0, "erase").status_code == 200
    r = action(srv, 0, "restore", filename="from-one.bin")
    assert r.status_code == 200, r.text
    again = complete(srv, prompt=PROMPT, n_predict=6, id_slot=0)
    assert again["tokens_cached"] == again["tokens_evaluated"] - 1
    assert again["content"] == reference["content"]


def test_an_action_on_a_busy_slot_waits_for_it(srv):
    body = {"prompt": "Count slowly:", "n_predict": 24, "ignore_eos": True, "id_slot": 0,
            "temperature": 0}
    done: dict = {}

    def generate():
        done["result"] = srv.post("/completion", json=body).json()
        done["t"] = time.perf_counter()

    worker = threading.Thread(target=generate)
    worker.start()
    deadline = time.time() + 10
    while not slots(srv)[0]["is_processing"] and time.time() < deadline:
        time.sleep(0.01)
    r = action(srv, 0, "save", filename="busy.bin")
    t_saved = time.perf_counter()
    worker.join(30)
    assert r.status_code == 200, r.text
    result = done["result"]
    assert r.json()["n_saved"] == result["tokens_evaluated"] + result["tokens_predicted"] - 1
    assert t_saved >= done["t"] - 0.5   # answered after the generation, not in the middle


BAD_FILENAMES = [
    pytest.param("", id="empty"),
    pytest.param("../escape.bin", id="parent"),
    pytest.param("..", id="dotdot"),
    pytest.param(".", id="dot"),
    pytest.param("sub/escape.bin", id="slash"),
    pytest.param("sub\\escape.bin", id="backslash"),
    pytest.param("/tmp/escape.bin", id="absolute"),
    pytest.param("esc\x00ape.bin", id="nul"),
    pytest.param("esc\nape.bin", id="newline"),
    pytest.param("c:escape.bin", id="colon"),
    pytest.param(" escape.bin", id="leading-space"),
    pytest.param("escape.", id="trailing-dot"),
    pytest.param("x" * 256, id="too-long"),
    pytest.param(7, id="not-a-string"),
    pytest.param(None, id="missing"),
]


@pytest.mark.parametrize("name", BAD_FILENAMES)
@pytest.mark.parametrize("verb", ["save", "restore"])
def test_bad_file_names_are_refused(srv, save_dir, verb, name):
    before = set(os.listdir(save_dir.parent))
    r = action(srv, 1, verb, **({} if name is None else {"filename": name}))
    assert_error(r, 400)
    assert set(os.listdir(save_dir.parent)) == before


def test_a_symlink_out_of_the_folder_is_refused(srv, save_dir, tmp_path):
    target = tmp_path / "outside.bin"
    (save_dir / "link.bin").symlink_to(target)
    assert_error(action(srv, 1, "save", filename="link.bin"), 400)
    assert not target.exists()


@pytest.mark.parametrize("slot,verb,status", [
    pytest.param("2", "erase", 400, id="slot-out-of-range"),
    pytest.param("-1", "erase", 400, id="negative-slot"),
    pytest.param("one", "erase", 400, id="slot-not-a-number"),
    pytest.param("0", "explode", 400, id="unknown-action"),
    pytest.param("0", "", 400, id="no-action"),
])
def test_bad_slot_actions(srv, slot, verb, status):
    assert_error(requests.post(f"{srv.url}/slots/{slot}?action={verb}", timeout=30), status)


def test_restoring_a_missing_or_foreign_file_fails_cleanly(srv, save_dir):
    assert_error(action(srv, 1, "restore", filename="does-not-exist.bin"), 400)
    (save_dir / "junk.bin").write_bytes(b"not a llama state file" * 10)
    assert_error(action(srv, 1, "restore", filename="junk.bin"), 400)
    assert slots(srv)[1]["n_cache_tokens"] == 0
    assert complete(srv, prompt="Still fine?", n_predict=2, id_slot=1)["tokens_predicted"] == 2


def test_slots_endpoints_can_be_turned_off(server_factory):
    off = server_factory("-np", "1", "-c", "256", "--no-slots")
    assert_error(off.get("/slots"), 501, "not_supported_error")
    # no --slot-save-path: actions are not supported either
    assert_error(requests.post(off.url + "/slots/0?action=erase", timeout=30), 501, "not_supported_error")
    # /health does not hand out what /slots refuses: include_slots is ignored
    health = off.get("/health?include_slots")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert "slots" not in health.json()
