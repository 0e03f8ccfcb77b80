"""The web layer over a scripted fake engine: error shape, routing, CLI flags, docs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from webapp import create_app
from webapp.cli import build_parser, parse_settings
from webapp.flags import FLAGS

from .fakes import FakeEngine

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def client():
    settings = parse_settings([])
    app = create_app(settings, FakeEngine("hi"))
    return app.test_client()


def test_completion_over_the_fake_engine(client):
    r = client.post("/completion", json={"prompt": "abc", "n_predict": 5})
    assert r.status_code == 200
    body = r.get_json()
    assert body["content"] == "hi" and body["stopped_eos"] is True
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["X-Request-Id"]


def test_streaming_frames_are_sse_data_lines(client):
    r = client.post("/completion", json={"prompt": "abc", "stream": True})
    frames = [f for f in r.get_data().split(b"\n\n") if f]
    assert all(f.startswith(b"data: {") for f in frames)
    assert b'"stop":true' in frames[-1]


BAD = [
    pytest.param("/completion", b"{", 400, id="bad-json"),
    pytest.param("/completion", b"null", 400, id="json-null"),
    pytest.param("/completion", b'{"prompt": {"a": 1}}', 400, id="prompt-object"),
    pytest.param("/completion", b'{"prompt": "x", "n_predict": 1.5}', 400, id="n_predict-float"),
    pytest.param("/completion", b'{"prompt": "x", "seed": "1"}', 400, id="seed-string"),
    pytest.param("/completion", b'{"prompt": "x", "samplers": ["nope"]}', 400, id="unknown-sampler"),
    pytest.param("/completion", b'{"prompt": "x", "logit_bias": [[1]]}', 400, id="logit-bias-shape"),
    pytest.param("/completion", b'{"prompt": "x", "cache_prompt": "yes"}', 400, id="bool-as-string"),
    pytest.param("/completion", b'{"prompt": [true]}', 400, id="prompt-bool-token"),
    pytest.param("/tokenize", b'{"content": null}', 400, id="tokenize-null"),
    pytest.param("/detokenize", b'{"tokens": [1, 999]}', 400, id="detokenize-out-of-range"),
    pytest.param("/props", b'{}', 501, id="props-post-disabled"),
    pytest.param("/lora-adapters", b"[" * 100_000, 400, id="lora-nested-too-deep"),   # was a 500
]


@pytest.mark.parametrize("path,data,status", BAD)
def test_every_bad_request_gets_the_openai_error_shape(client, path, data, status):
    r = client.post(path, data=data, content_type="application/json")
    assert r.status_code == status
    body = r.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == status
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["type"] in ("invalid_request_error", "not_supported_error")


def test_unknown_routes_and_methods(client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.get_json()["error"]["type"] == "not_found_error"
    r = client.get("/completion")
    assert r.status_code == 405 and r.get_json()["error"]["code"] == 405


def test_health_while_loading_is_503():
    from webapp.state import ServerState
    settings = parse_settings([])
    app = create_app(settings, state=ServerState(settings))
    r = app.test_client().get("/health")
    assert r.status_code == 503
    assert r.get_json() == {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    r = app.test_client().post("/completion", json={"prompt": "x"})
    assert r.status_code == 503


def test_cors_preflight(client):
    r = client.open("/completion", method="OPTIONS", headers={"Origin": "http://example"})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "http://example"


# --- flags -----------------------------------------------------------------------------------
def test_seed_defaults():
    s = parse_settings([], environ={})
    assert (s.port, s.host, s.parallel, s.batch_size, s.ubatch_size, s.cont_batching) == \
        (8080, "127.0.0.1", 1, 2048, 512, True)


@pytest.mark.parametrize("argv,attr,value", [
    pytest.param(["-np", "4"], "parallel", 4, id="short"),
    pytest.param(["--parallel", "3"], "parallel", 3, id="long"),
    pytest.param(["-c", "256"], "ctx_size", 256, id="ctx"),
    pytest.param(["--no-cont-batching"], "cont_batching", False, id="nocb"),
    pytest.param(["-cb"], "cont_batching", True, id="cb"),
    pytest.param(["-fa"], "flash_attn", "on", id="bare-fa"),
    pytest.param(["-fa", "off"], "flash_attn", "off", id="fa-off"),
    pytest.param(["--no-context-shift"], "context_shift", False, id="no-shift"),
    pytest.param(["--temp", "0.2"], "temp", 0.2, id="temp"),
    pytest.param(["--no-slots"], "slots_endpoint", False, id="no-slots"),
    pytest.param(["--slots-endpoint-disable"], "slots_endpoint", False, id="seed-no-slots"),
    pytest.param(["--no-webui"], "webui", False, id="no-webui"),
    pytest.param(["--no-jinja"], "jinja", False, id="no-jinja"),
    pytest.param(["-ctk", "q8_0"], "cache_type_k", "q8_0", id="cache-type"),
])
def test_flags_parse(argv, attr, value):
    assert getattr(parse_settings(argv, environ={}), attr) == value


@pytest.mark.parametrize("env,attr,value", [
    pytest.param({"LLAMA_ARG_CTX_SIZE": "1024"}, "ctx_size", 1024, id="ctx"),
    pytest.param({"LLAMA_ARG_N_PARALLEL": "2"}, "parallel", 2, id="n-parallel"),
    pytest.param({"LLAMA_ARG_NO_CONTEXT_SHIFT": "1"}, "context_shift", False, id="negative-bool"),
    pytest.param({"LLAMA_ARG_PORT": "9000"}, "port", 9000, id="port"),
])
def test_environment_sets_flags(env, attr, value):
    assert getattr(parse_settings([], environ=env), attr) == value


def test_the_command_line_beats_the_environment():
    assert parse_settings(["-c", "64"], environ={"LLAMA_ARG_CTX_SIZE": "1024"}).ctx_size == 64


def test_unknown_flags_are_rejected():
    with pytest.raises(SystemExit):
        parse_settings(["--definitely-not-a-flag"], environ={})


def test_help_lists_every_flag():
    text = build_parser().format_help()
    for flag in FLAGS:
        for name in flag.names:
            assert name in text


def test_every_flag_and_endpoint_is_documented():
    docs = (ROOT / "docs" / "server.md").read_text()
    for flag in FLAGS:
        for name in flag.names:
            assert f"`{name}`" in docs, f"{name} missing from docs/server.md"
    settings = parse_settings([])
    app = create_app(settings, FakeEngine())
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/static"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        assert path in docs, f"endpoint {path} missing from docs/server.md"


@pytest.mark.parametrize("schema", [
    {"type": "string", "pattern": "^a{99999999999999999999}$"},
], ids=["huge-quantifier"])
def test_schemas_the_converter_cannot_take_are_a_400(client, schema):
    r = client.post("/completion", json={"prompt": "x", "json_schema": schema})
    assert r.status_code == 400 and r.get_json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path, body", [
    ("/completion", b'{"prompt": "a\\ud800b"}'),
    ("/tokenize", b'{"content": "\\udc80"}'),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\uDBFF"}]}'),
    ("/completion", b'{"prompt": "x", "stop": ["\\ud800"]}'),
    ("/completion", b"[" * 100_000),
    ("/completion", b'{"a": ' * 100_000),
], ids=["prompt-surrogate", "tokenize-surrogate", "chat-surrogate-uppercase", "stop-surrogate",
        "deep-array", "deep-object"])
def test_bodies_no_json_parser_should_take_are_a_400(client, path, body):
    r = client.post(path, data=body, content_type="application/json")
    assert r.status_code == 400 and r.get_json()["error"]["type"] == "invalid_request_error"

