"""Router mode (issue #17): several models behind one server, one child server each.

The live router serves two models, the default GGUF under two names (symlinks), with
``--models-max 1``: load, routing by name (the OpenAI SDK), eviction of the least recently
used (never of a busy model), unbuffered streaming through the proxy, a client that leaves,
unload, and a killed child reported then started again. Other routers check API keys and a
preset file with ``--no-models-autoload``. The first tests check the model list and the
children's command lines without starting anything; the others are marked slow. Children
run ``-t 1 -np 1`` with ``-c 512`` (the preset router: ``-c 768``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest
import requests

from tests.conftest import ROOT, ServerProcess
from webapp.cli import is_router_mode, parse_settings
from webapp.router.catalog import CatalogError, find_models, forwarded_values, render_args

CHILD_ARGS = ("-c", "512", "-np", "1")


# --- the model list and the children's command lines (no process) -----------------------------

def settings_for(*args: str):
    return parse_settings(list(args), environ={})


def test_a_models_dir_lists_files_and_subfolders(tmp_path, model_path):
    (tmp_path / "alpha.gguf").symlink_to(model_path)
    (tmp_path / "mmproj-alpha.gguf").symlink_to(model_path)      # a projector, not a model
    (tmp_path / "notes.txt").write_text("not a model")
    split = tmp_path / "big"
    split.mkdir()
    for part in ("big-00002-of-00002.gguf", "big-00001-of-00002.gguf"):
        (split / part).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    specs = find_models(settings_for("--models-dir", str(tmp_path)))
    assert [(s.name, s.source, s.path) for s in specs] == [
        ("alpha", "models_dir", str(tmp_path / "alpha.gguf")),
        ("big", "models_dir", str(split / "big-00001-of-00002.gguf")),
    ]


def test_without_m_a_models_source_means_router_mode(tmp_path):
    assert is_router_mode(settings_for("--models-dir", str(tmp_path)))
    assert settings_for("--models-dir", str(tmp_path)).model is None
    assert not is_router_mode(settings_for("-m", "x.gguf", "--models-dir", str(tmp_path)))
    assert not is_router_mode(settings_for())          # the default model, as before


def test_the_routers_own_flags_reach_every_child_and_parse_back(tmp_path):
    settings = settings_for("--models-dir", str(tmp_path), "--models-max", "2", "--api-key", "k",
                            "--port", "9", "-c", "512", "--no-context-shift", "--temp", "0.5",
                            "--lora", "a.gguf", "--lora-scaled", "b.gguf", "0.5", "-fa", "on",
                            "--no-mmap", "--log-file", "x.log")
    values = forwarded_values(settings)
    assert {"models_dir", "models_max", "api_key", "port", "log_file"}.isdisjoint(values)
    child = settings_for(*render_args(values))
    for dest, value in values.items():
        assert getattr(child, dest) == value, dest


def preset(tmp_path, text: str) -> str:
    path = tmp_path / "models.ini"
    path.write_text(text)
    return str(path)


def test_a_preset_cascades_star_then_section_then_the_command_line(tmp_path, model_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "alpha.gguf").symlink_to(model_path)
    ini = preset(tmp_path, f"""version = 1
; comments with ; and #
[*]
c = 256
top-k = 7            # inline comment
LLAMA_ARG_N_PREDICT = 9

[alpha]
top-k = 5
no-context-shift = true
load-on-startup = true

[beta]
model = {model_path}
stop-timeout = 2.5
""")
    specs = {s.name: s for s in find_models(settings_for(
        "--models-dir", str(tmp_path / "dir"), "--models-preset", ini, "-c", "384"))}
    alpha, beta = specs["alpha"], specs["beta"]
    assert alpha.source == "preset" and alpha.load_on_startup and not beta.load_on_startup
    assert alpha.values["ctx_size"] == 384                         # the command line wins
    assert alpha.values["top_k"] == 5 and beta.values["top_k"] == 7  # the section over [*]
    assert alpha.values["context_shift"] is False and "context_shift" not in beta.values
    assert beta.values["n_predict"] == 9 and beta.path == model_path
    assert beta.stop_timeout == 2.5


@pytest.mark.parametrize("text, message", [
    ("[m]\nmodel = x.gguf\nbogus-flag = 1\n", "[m] bogus-flag: not a flag of this server"),
    ("[m]\nc = 512\n", "[m] names no model"),
    ("[m]\nmodel = x.gguf\nc = big\n", "[m] c: 'big' is not an int"),
    ("[m]\nmodel = x.gguf\ncontext-shift = maybe\n", "'maybe' is not true or false"),
    ("[m]\nmodel = x.gguf\nflash-attn = fast\n", "'fast' is not one of on, off, auto"),
    ("c = 512\n[m]\nmodel = x.gguf\n", "keys before the first section (c)"),
], ids=["unknown-key", "no-model", "bad-int", "bad-bool", "bad-choice", "key-outside-a-section"])
def test_a_bad_preset_is_named(tmp_path, text, message):
    with pytest.raises(CatalogError) as info:
        find_models(settings_for("--models-preset", preset(tmp_path, text)))
    assert message in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (("--models-dir", "/nonexistent/models"), "does not exist or is not a folder"),
    (("--models-max", "-1", "--models-dir", "."), "--models-max must be >= 0"),
], ids=["missing-dir", "negative-max"])
def test_a_bad_router_setup_stops_startup_with_one_line(args, message):
    done = subprocess.run([sys.executable, "-m", "webapp.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert message in done.stderr


# --- a live router: two names for the default model, one loaded at a time ----------------------

@pytest.fixture(scope="module")
def router(tmp_path_factory, model_path):
    folder = tmp_path_factory.mktemp("models")
    for name in ("smol-a", "smol-b"):
        os.symlink(model_path, folder / f"{name}.gguf")
    srv = ServerProcess(("--models-dir", str(folder), "--models-max", "1", *CHILD_ARGS),
                        log_name="router").wait_ready()
    yield srv
    parent = srv.proc.pid
    assert srv.stop() == 0
    assert child_pids(parent) == set(), "the router left child servers behind"


def cards(srv) -> dict:
    r = srv.get("/models")
    assert r.status_code == 200, r.text
    return {card["id"]: card for card in r.json()["data"]}


def wait_status(srv, name: str, value: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        card = cards(srv)[name]
        if card["status"]["value"] == value:
            return card
        time.sleep(0.05)
    raise AssertionError(f"{name} never became {value}: {card['status']}")


def child_pids(parent: int, port: int | None = None) -> set[int]:
    """The router's child servers (the one on ``port`` when given)."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"webapp.cli" in argv and (
                port is None or str(port).encode() == argv[argv.index(b"--port") + 1]):
            found.add(int(proc.name))
    return found


def child_port(card: dict) -> int:
    args = card["status"]["args"]
    return int(args[args.index("--port") + 1])


def openai_client(srv) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def slot_busy(srv, model: str) -> bool:
    r = srv.get("/slots", params={"model": model})
    assert r.status_code == 200, r.text
    return any(s["is_processing"] for s in r.json())


def wait_idle(srv, model: str, timeout: float) -> float:
    t0 = time.monotonic()
    while slot_busy(srv, model):
        assert time.monotonic() - t0 < timeout, f"{model} still generating after {timeout}s"
        time.sleep(0.1)
    return time.monotonic() - t0


def data_lines(response):
    for line in response.iter_lines():
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            yield json.loads(line[6:])


@pytest.mark.slow
def test_every_model_is_listed_unloaded(router):
    models = cards(router)
    assert set(models) == {"smol-a", "smol-b"}
    for name, card in models.items():
        assert card["object"] == "model" and card["owned_by"] == "llamacpp"
        assert card["path"].endswith(f"{name}.gguf") and card["source"] == "models_dir"
        assert card["status"]["value"] == "unloaded" and "failed" not in card["status"]
        assert card["status"]["args"][:3] == ["llama-server", "--model", card["path"]]
    assert {m["id"] for m in router.get("/v1/models").json()["data"]} == set(models)
    assert router.get("/models/smol-b").json()["id"] == "smol-b"
    missing = router.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert router.get("/health").json() == {"status": "ok"}
    props = router.get("/props").json()
    assert props["role"] == "router" and props["max_instances"] == 1 and props["models_autoload"] is True


CHAT = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}


@pytest.mark.slow
@pytest.mark.parametrize("method, path, body, status, message", [
    ("post", "/v1/chat/completions", CHAT, 400, "model name is missing from the request"),
    ("post", "/v1/chat/completions", dict(CHAT, model="nope"), 400, "model 'nope' not found"),
    ("post", "/completion", {"model": 5, "prompt": "x"}, 400, "'model' must be a string"),
    ("post", "/completion", b"{not json", 400, "not valid JSON"),
    ("get", "/slots", None, 400, "model name is missing from the request"),
    ("post", "/completion?autoload=false", {"model": "smol-a", "prompt": "x"}, 400, "model is not loaded"),
    ("post", "/models/load", {"model": "nope"}, 404, "model is not found"),
    ("post", "/models/load", {}, 400, "'model' (a model name) is required"),
    ("post", "/models/unload", {"model": "smol-a"}, 400, "model is not running"),
    ("post", "/models/unload", {"model": "nope"}, 400, "model is not found"),
], ids=["no-model", "unknown-model", "model-not-a-string", "body-not-json", "get-without-model",
        "autoload-false", "load-unknown", "load-without-model", "unload-not-running", "unload-unknown"])
def test_bad_requests_are_a_400_in_the_error_shape(router, method, path, body, status, message):
    kw = {"data": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, bytes) \
        else {"json": body}
    r = getattr(router, method)(path, **kw)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == status and message in error["message"]
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert all(c["status"]["value"] == "unloaded" for c in cards(router).values())


@pytest.mark.slow
def test_a_loaded_model_answers_by_name(router):
    r = router.post("/models/load", json={"model": "smol-a"})
    assert r.status_code == 200 and r.json() == {"success": True}
    again = router.post("/models/load", json={"model": "smol-a"})
    assert again.status_code == 400 and "already running" in again.json()["error"]["message"]
    card = wait_status(router, "smol-a", "loaded")
    assert card["meta"]["n_ctx_train"] > 0                     # the child's own card, merged
    reply = openai_client(router).chat.completions.create(
        model="smol-a", messages=CHAT["messages"], max_tokens=8, temperature=0)
    assert reply.model == "smol-a" and reply.choices[0].message.content
    props = router.get("/props", params={"model": "smol-a"}).json()
    assert props["model_alias"] == "smol-a" and props["n_ctx"] == 512   # -c 512 reached the child


@pytest.mark.slow
def test_a_request_for_another_model_unloads_the_least_recently_used(router):
    assert cards(router)["smol-a"]["status"]["value"] == "loaded"
    reply = openai_client(router).completions.create(model="smol-b", prompt="Once upon a time",
                                                     max_tokens=4, temperature=0)
    assert reply.model == "smol-b" and reply.usage.completion_tokens == 4
    models = cards(router)
    assert models["smol-b"]["status"]["value"] == "loaded"
    assert models["smol-a"]["status"]["value"] == "unloaded"
    assert "failed" not in models["smol-a"]["status"]                   # stopped, not crashed


@pytest.mark.slow
def test_a_stream_arrives_while_it_is_generated(router):
    body = {"model": "smol-b", "prompt": "Write a story.", "n_predict": 48, "ignore_eos": True,
            "temperature": 0, "stream": True}
    with requests.post(router.url + "/completion", json=body, stream=True, timeout=120) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        events = data_lines(r)
        first = next(events)
        assert first["content"] is not None and not first["stop"]
        # the first token is here while the child still generates the other 47: no buffering
        assert slot_busy(router, "smol-b")
        rest = list(events)
    assert rest[-1]["stop"] and rest[-1]["tokens_predicted"] == 48
    assert len(rest) == 48
    chunks = list(openai_client(router).chat.completions.create(
        model="smol-b", messages=CHAT["messages"], max_tokens=6, temperature=0, stream=True))
    assert len(chunks) > 3 and all(c.model == "smol-b" for c in chunks)


@pytest.mark.slow
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not-streamed"])
def test_a_client_that_leaves_stops_the_generation(router, stream):
    body = {"model": "smol-b", "prompt": "Count to a million:", "n_predict": 4000,
            "ignore_eos": True, "stream": stream}
    if stream:
        with requests.post(router.url + "/completion", json=body, stream=True, timeout=60) as r:
            events = data_lines(r)
            next(events), next(events)
    else:
        with pytest.raises(requests.ReadTimeout):
            requests.post(router.url + "/completion", json=body, timeout=1.5)
    # 4000 tokens would take over a minute; the abort takes the router's 1 s check at most
    assert wait_idle(router, "smol-b", timeout=10) < 10


@pytest.mark.slow
def test_unload_stops_the_child(router):
    port = child_port(cards(router)["smol-b"])
    r = router.post("/models/unload", json={"model": "smol-b"})
    assert r.status_code == 200 and r.json() == {"success": True}
    card = wait_status(router, "smol-b", "unloaded")
    assert "failed" not in card["status"] and "meta" not in card
    assert child_pids(router.proc.pid, port) == set()
    again = router.post("/models/unload", json={"model": "smol-b"})
    assert again.status_code == 400


@pytest.mark.slow
def test_a_killed_child_is_reported_and_started_again(router):
    body = {"model": "smol-a", "prompt": "Count to a million:", "n_predict": 4000,
            "ignore_eos": True, "stream": True}
    with requests.post(router.url + "/completion", json=body, stream=True, timeout=120) as r:
        events = data_lines(r)
        next(events)
        [pid] = child_pids(router.proc.pid, child_port(cards(router)["smol-a"]))
        os.kill(pid, signal.SIGKILL)
        rest = list(events)
    assert rest and "error" in rest[-1], rest[-3:]
    assert rest[-1]["error"]["type"] == "unavailable_error"
    card = wait_status(router, "smol-a", "unloaded")
    assert card["status"]["failed"] is True and card["status"]["exit_code"] == -signal.SIGKILL
    reply = openai_client(router).completions.create(model="smol-a", prompt="Hello", max_tokens=3)
    assert reply.model == "smol-a" and reply.usage.completion_tokens == 3
    assert cards(router)["smol-a"]["status"]["value"] == "loaded"


@pytest.mark.slow
def test_a_busy_model_is_not_unloaded_under_its_request(router):
    """smol-a streams; a request for smol-b (--models-max 1) waits for the stream to end."""
    assert cards(router)["smol-a"]["status"]["value"] == "loaded"
    body = {"model": "smol-a", "prompt": "Tell me a story.", "n_predict": 40, "ignore_eos": True,
            "stream": True}
    other: dict = {}

    def ask_smol_b():
        r = router.post("/completion", json={"model": "smol-b", "prompt": "Hi", "n_predict": 2})
        other.update(status=r.status_code, model=r.json().get("model"), at=time.monotonic())

    with requests.post(router.url + "/completion", json=body, stream=True, timeout=120) as r:
        events = data_lines(r)
        next(events)
        waiter = threading.Thread(target=ask_smol_b)
        waiter.start()
        rest = list(events)
        ended = time.monotonic()
    waiter.join(120)
    assert rest[-1]["stop"] and rest[-1]["tokens_predicted"] == 40     # not cut by an unload
    assert other["status"] == 200 and other["model"] == "smol-b" and other["at"] > ended
    models = cards(router)
    assert models["smol-b"]["status"]["value"] == "loaded"
    assert models["smol-a"]["status"]["value"] == "unloaded"


@pytest.mark.slow
def test_with_an_api_key_only_health_and_the_page_are_public(tmp_path, model_path):
    (tmp_path / "smol.gguf").symlink_to(model_path)
    srv = ServerProcess(("--models-dir", str(tmp_path), "--api-key", "sekrit"),
                        log_name="router-key").wait_ready()
    try:
        assert srv.get("/health").status_code == 200 and srv.get("/").status_code == 200
        for r in (srv.get("/models"), srv.post("/models/load", json={"model": "smol"}),
                  srv.post("/v1/chat/completions", json=dict(CHAT, model="smol"))):
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        keyed = srv.get("/models", headers={"Authorization": "Bearer sekrit"})
        assert keyed.status_code == 200 and keyed.json()["data"][0]["status"]["value"] == "unloaded"
    finally:
        assert srv.stop() == 0


# --- a preset file, no autoload ----------------------------------------------------------------

@pytest.mark.slow
def test_a_preset_router_loads_only_on_request(tmp_path, model_path):
    ini = preset(tmp_path, f"""[*]
c = 256
top-k = 7

[smol-c]
model = {model_path}
top-k = 5
n-predict = 3
""")
    srv = ServerProcess(("--models-preset", ini, "--no-models-autoload", "--models-max", "0",
                         "-np", "1", "-c", "768"), log_name="router-preset").wait_ready()
    try:
        props = srv.get("/props").json()
        assert props["models_autoload"] is False and props["max_instances"] == 0
        card = cards(srv)["smol-c"]
        assert card["source"] == "preset" and card["status"]["value"] == "unloaded"
        r = srv.post("/completion", json={"model": "smol-c", "prompt": "Hi"})
        assert r.status_code == 400 and r.json()["error"]["message"] == "model is not loaded"
        r = srv.post("/completion?autoload=true", json={"model": "smol-c", "prompt": "Hi"})
        assert r.status_code == 200 and r.json()["tokens_predicted"] == 3   # n-predict = 3
        props = srv.get("/props", params={"model": "smol-c"}).json()
        assert props["n_ctx"] == 768                                      # the command line wins
        assert props["default_generation_settings"]["top_k"] == 5         # the section over [*]
    finally:
        assert srv.stop() == 0
