"""API keys (--api-key, --api-key-file, LLAMA_API_KEY): who gets in, and the 401 shape."""
from __future__ import annotations

import subprocess
import sys

import openai
import pytest
import requests

from webapp import create_app
from webapp.cli import parse_settings

from ..conftest import ROOT
from ..unit.fakes import FakeEngine

INVALID = {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}}


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text("# operators\n\nkey-from-file\n  spaced-key  \n#not-a-key\n")
    return path


@pytest.fixture(scope="module")
def secured(server_factory, key_file):
    return server_factory("-np", "1", "-c", "512", "-t", "1", "--api-key", "key-one", "--api-key-file", str(key_file))


def client_for(srv, key):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["key-one", "key-from-file", "spaced-key"])
def test_every_configured_key_is_accepted(secured, key):
    client = client_for(secured, key)
    assert client.models.list().data[0].object == "model"
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert r.usage.completion_tokens == 1


@pytest.mark.slow
@pytest.mark.parametrize("key", ["wrong", "key-one-and-more", "# operators", "not-a-key", "#not-a-key"])
def test_a_wrong_key_raises_authentication_error(secured, key):
    with pytest.raises(openai.AuthenticationError) as exc:
        client_for(secured, key).models.list()
    assert exc.value.status_code == 401
    assert exc.value.body == INVALID["error"]


@pytest.mark.slow
@pytest.mark.parametrize("method, path, body", [
    ("POST", "/completion", {"prompt": "x", "n_predict": 1}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
    ("POST", "/v1/completions", {"prompt": "x"}),
    ("POST", "/tokenize", {"content": "x"}),
    ("GET", "/props", None),
    ("GET", "/v1/models", None),
    ("GET", "/slots", None),
    ("POST", "/v1/embeddings", {"input": "x"}),
    ("GET", "/no-such-route", None),
])
def test_no_key_means_401_in_the_openai_shape(secured, method, path, body):
    r = requests.request(method, secured.url + path, json=body, timeout=30)
    assert r.status_code == 401
    assert r.json() == INVALID


@pytest.mark.slow
def test_bearer_and_x_api_key_headers(secured):
    for headers in ({"Authorization": "Bearer key-one"}, {"X-Api-Key": "key-one"},
                    {"Authorization": "key-one"}):
        assert secured.get("/props", headers=headers).status_code == 200
    assert secured.get("/props", headers={"Authorization": "Bearer key-two"}).status_code == 401
    assert secured.get("/props", headers={"Authorization": "Basic a2V5LW9uZQ=="}).status_code == 401


@pytest.mark.slow
@pytest.mark.parametrize("method, path", [
    ("GET", "/health"), ("GET", "/v1/health"), ("GET", "/"), ("GET", "/completion.js"),
    ("OPTIONS", "/v1/chat/completions"),
])
def test_health_front_end_and_preflight_need_no_key(secured, method, path):
    r = requests.request(method, secured.url + path, headers={"Origin": "http://example"}, timeout=30)
    assert r.status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("headers, has_slots", [
    pytest.param({}, False, id="no-key"),
    pytest.param({"Authorization": "Bearer wrong"}, False, id="wrong-key"),
    pytest.param({"Authorization": "Bearer key-one"}, True, id="bearer-key"),
    pytest.param({"X-Api-Key": "key-from-file"}, True, id="x-api-key"),
])
def test_health_embeds_the_slots_only_for_a_valid_key(secured, headers, has_slots):
    r = secured.get("/health?include_slots", headers=headers)
    assert r.status_code == 200   # /health itself stays public
    body = r.json()
    assert body["status"] == "ok" and body["slots_idle"] + body["slots_processing"] == 1
    assert ("slots" in body) is has_slots
    if has_slots:
        assert [s["id"] for s in body["slots"]] == [0]


def test_a_post_to_a_front_end_path_still_needs_a_key():
    settings = parse_settings(["--api-key", "k"], environ={})
    client = create_app(settings, FakeEngine()).test_client()
    assert client.post("/", json={}).status_code == 401
    assert client.get("/").status_code in (200, 404)   # public (404 only if the UI is off)


def test_the_environment_sets_keys():
    settings = parse_settings([], environ={"LLAMA_API_KEY": "env-a,env-b"})
    client = create_app(settings, FakeEngine()).test_client()
    for key in ("env-a", "env-b"):
        r = client.post("/completion", json={"prompt": "x"}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    assert client.post("/completion", json={"prompt": "x"}).status_code == 401


def test_without_keys_everything_is_open():
    client = create_app(parse_settings([], environ={}), FakeEngine()).test_client()
    assert client.post("/completion", json={"prompt": "x"}).status_code == 200


@pytest.mark.parametrize("content, message", [
    pytest.param("# only a comment\n\n", "holds no key", id="no-key-in-file"),
    pytest.param(None, "cannot read", id="missing-file"),
])
def test_a_useless_key_file_stops_startup(tmp_path, content, message):
    path = tmp_path / "keys.txt"
    if content is not None:
        path.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "webapp.cli", "--port", "0", "--api-key-file", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
