"""LoRA adapters: --lora / --lora-scaled at startup, GET/POST /lora-adapters at run time.

Two adapters generated for the default model's shapes: a random one (id 0, changes the
model) and an all-zero one (id 1, applied in the graph but changing nothing)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.gguf_builders import lora_adapter

pytestmark = pytest.mark.slow

BASE = ("-t", "1", "-np", "1", "-c", "512")
PROMPT = "The capital of France is"


@pytest.fixture(scope="session")
def adapters(tmp_path_factory, model_path):
    folder = tmp_path_factory.mktemp("lora")
    return (lora_adapter(model_path, str(folder / "random.gguf"), std=0.05, seed=1),
            lora_adapter(model_path, str(folder / "zero.gguf"), std=0.0))


@pytest.fixture(scope="module")
def lora(server_factory, adapters):
    random_path, zero_path = adapters
    return server_factory(*BASE, "--lora", random_path, "--lora-scaled", zero_path, "1.0",
                          "--lora-base", "ignored.gguf")


def answer(srv):
    r = srv.post("/completion", json={"prompt": PROMPT, "n_predict": 8, "temperature": 0,
                                      "n_probs": 3, "ignore_eos": True})
    assert r.status_code == 200, r.text
    body = r.json()
    return body["content"], [[p["prob"] for p in t["probs"]] for t in body["completion_probabilities"]]


def set_scales(srv, scales):
    r = srv.post("/lora-adapters", json=scales)
    assert r.status_code == 200 and r.json() == {"success": True}, r.text


def close(a, b, tol=1e-5):
    return all(abs(x - y) <= tol for ra, rb in zip(a, b) for x, y in zip(ra, rb)) and len(a) == len(b)


def test_the_adapters_are_listed_with_their_scales(lora, adapters):
    assert lora.get("/lora-adapters").json() == [
        {"id": 0, "path": adapters[0], "scale": 1.0},
        {"id": 1, "path": adapters[1], "scale": 1.0},
    ]


def test_a_nonzero_adapter_changes_the_model_and_a_zero_one_does_not(lora, server_factory):
    base_text, base_probs = answer(server_factory(*BASE))
    set_scales(lora, [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 1.0}])
    with_random = answer(lora)
    set_scales(lora, [{"id": 1, "scale": 1.0}])            # id 0 left out: scale 0
    assert lora.get("/lora-adapters").json()[0]["scale"] == 0.0
    zero_text, zero_probs = answer(lora)
    assert zero_text == base_text and close(zero_probs, base_probs)
    assert not close(with_random[1], base_probs)
    set_scales(lora, [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 1.0}])
    # the same prompt again: no stale cached prefix from the other weights
    assert answer(lora)[0] == with_random[0]
    assert close(answer(lora)[1], with_random[1])


def test_scaling_an_adapter_down_moves_the_probabilities_towards_the_base(lora, server_factory):
    _, base_probs = answer(server_factory(*BASE))
    set_scales(lora, [{"id": 0, "scale": 1.0}])
    _, full = answer(lora)
    set_scales(lora, [{"id": 0, "scale": 0.1}])
    _, tenth = answer(lora)
    set_scales(lora, [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 1.0}])
    distance = lambda a, b: abs(a[0][0] - b[0][0])   # first token, top probability
    assert distance(tenth, base_probs) < distance(full, base_probs)


def test_init_without_apply_loads_the_adapters_at_scale_zero(server_factory, adapters):
    srv = server_factory(*BASE, "--lora", adapters[0], "--lora-init-without-apply")
    assert [a["scale"] for a in srv.get("/lora-adapters").json()] == [0.0]
    assert answer(srv)[0] == answer(server_factory(*BASE))[0]


BAD = [
    pytest.param({"id": 0, "scale": 1}, id="an-object-not-an-array"),
    pytest.param([{"id": 2, "scale": 1}], id="unknown-id"),
    pytest.param([{"id": -1, "scale": 1}], id="negative-id"),
    pytest.param([{"id": "0", "scale": 1}], id="id-as-string"),
    pytest.param([{"id": 0, "scale": "big"}], id="scale-as-string"),
    pytest.param([{"id": 0}], id="missing-scale"),
    pytest.param([3], id="item-not-an-object"),
]


@pytest.mark.parametrize("body", BAD)
def test_bad_scale_lists_get_a_400_and_change_nothing(lora, body):
    before = lora.get("/lora-adapters").json()
    r = lora.post("/lora-adapters", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert lora.get("/lora-adapters").json() == before


def test_a_body_that_is_not_json_gets_a_400(lora):
    import requests
    r = requests.post(lora.url + "/lora-adapters", data=b"[{", timeout=30,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == 400


@pytest.mark.parametrize("args,message", [
    pytest.param(["--lora", "/nonexistent/adapter.gguf"], "LoRA adapter not found", id="missing-file"),
    pytest.param(["--lora-scaled", "x.gguf", "big"], "not a number", id="scale-not-a-number"),
])
def test_bad_adapter_flags_stop_startup_with_one_clear_line(args, message):
    proc = subprocess.run([sys.executable, "-m", "webapp.cli", "--port", "0", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr
