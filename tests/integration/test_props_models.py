"""GET/POST /props, GET /models and /v1/models, and /completion's response_fields and
return_tokens, against the real server and model, with llama-server's fields and defaults
(tools/server/README.md, server-context.cpp at 0c1e570)."""
from __future__ import annotations

import openai
import pytest

from tests.sdist import template_source
from webapp.chat_template import ChatTemplate
from webapp.props import chat_template_caps

from .sse import stream

pytestmark = pytest.mark.slow

# every key llama-server's GET /props returns at 0c1e570 (chat_template_tool_use only when the
# model has a "tool_use" template, which SmolLM2 has not)
PROPS_KEYS = {"default_generation_settings", "total_slots", "model_alias", "model_ftype",
              "model_path", "modalities", "media_marker", "endpoint_slots", "endpoint_props",
              "endpoint_metrics", "ui", "ui_settings", "chat_template", "chat_template_caps",
              "bos_token", "eos_token", "build_info", "is_sleeping", "cors_proxy_enabled"}
CAPS_KEYS = {"supports_object_arguments", "supports_parallel_tool_calls", "supports_preserve_reasoning",
             "supports_reasoning_effort", "supports_string_content", "supports_system_role",
             "supports_tool_calls", "supports_tools", "supports_typed_content"}


@pytest.fixture(scope="module")
def srv(server_factory):
    return server_factory("-np", "2", "-c", "1024", "-s", "42", "--props", "--metrics", "-a", "smol")


def test_props_has_every_field_of_llama_server(srv):
    props = srv.get("/props").json()
    assert PROPS_KEYS <= set(props)
    assert props["total_slots"] == 2 and props["model_alias"] == "smol"
    assert props["model_path"].endswith(".gguf")
    assert props["model_ftype"] == "Q4_1"                 # SmolLM2-135M-Instruct.Q4_1.gguf
    assert props["modalities"] == {"vision": False, "video": False, "audio": False}
    assert props["media_marker"].startswith("<__media_") and props["media_marker"].endswith("__>")
    assert (props["endpoint_slots"], props["endpoint_props"], props["endpoint_metrics"]) == (True, True, True)
    assert props["ui"] is True and props["ui_settings"] == {}
    assert props["bos_token"] == "<|im_start|>" and props["eos_token"] == "<|im_end|>"
    assert props["is_sleeping"] is False and props["cors_proxy_enabled"] is False
    assert "<|im_start|>" in props["chat_template"]
    assert props["build_info"]


def test_default_generation_settings_in_llama_server_shape(srv):
    settings = srv.get("/props").json()["default_generation_settings"]
    assert settings["n_ctx"] == 1024 // 2                 # per slot, as test_basic.py checks
    params = settings["params"]
    assert params["seed"] == 42                           # -s 42
    assert params["n_predict"] == params["max_tokens"] == -1
    assert params["temperature"] == pytest.approx(0.8) and params["top_k"] == 40
    assert "n_ctx" not in params and "model" not in params
    assert settings["temperature"] == pytest.approx(0.8)   # the seed's flat fields, for completion.js


def test_chat_template_caps_of_the_default_model(srv):
    caps = srv.get("/props").json()["chat_template_caps"]
    assert set(caps) == CAPS_KEYS
    # ChatML as SmolLM2 ships it: a system role, plain string content, no tools
    assert caps["supports_system_role"] and caps["supports_string_content"]
    assert not caps["supports_tools"] and not caps["supports_tool_calls"]
    assert not caps["supports_parallel_tool_calls"] and not caps["supports_reasoning_effort"]


# what llama-server's own tests expect (tests/test-chat.cpp, test-chat-auto-parser.cpp), plus
# plain facts of the templates (gemma-2 raises on a system message; Llama 3.1 renders one call)
CAPS_CASES = [
    pytest.param("openai-gpt-oss-120b", {"supports_reasoning_effort": True}, id="gpt-oss-effort"),
    pytest.param("deepseek-ai-DeepSeek-V4", {"supports_reasoning_effort": True,
                                             "supports_preserve_reasoning": True}, id="deepseek-v4"),
    pytest.param("Cohere2MoE", {"supports_reasoning_effort": True}, id="cohere2-effort"),
    pytest.param("tencent-Hy3", {"supports_reasoning_effort": True}, id="hy3-effort"),
    pytest.param("poolside-Laguna-S-2.1", {"supports_preserve_reasoning": True}, id="laguna-preserve"),
    pytest.param("Qwen-Qwen3-0.6B", {"supports_reasoning_effort": False, "supports_tools": True,
                                     "supports_tool_calls": True, "supports_parallel_tool_calls": True,
                                     "supports_system_role": True}, id="qwen3"),
    pytest.param("meta-llama-Llama-3.1-8B-Instruct", {"supports_reasoning_effort": False,
                                                      "supports_tools": True,
                                                      "supports_parallel_tool_calls": False},
                 id="llama-3.1"),
    pytest.param("google-gemma-2-2b-it", {"supports_system_role": False, "supports_tools": False},
                 id="gemma-2"),
    pytest.param("Qwen3.5-4B", {"supports_typed_content": True}, id="qwen3.5-typed-content"),
]


@pytest.mark.parametrize("name,expected", CAPS_CASES)
def test_chat_template_caps_from_probe_renders(name, expected):
    caps = chat_template_caps(ChatTemplate(template_source(name), "<s>", "</s>"))
    assert set(caps) == CAPS_KEYS
    assert {k: caps[k] for k in expected} == expected


def test_post_props_needs_the_props_flag(server, srv):
    r = server.post("/props", json={})
    assert r.status_code == 501 and r.json()["error"]["type"] == "not_supported_error"
    assert "--props" in r.json()["error"]["message"]
    assert srv.post("/props", json={}).json() == {"success": True}


def test_models_in_llama_server_combined_shape(srv):
    for path in ("/models", "/v1/models"):
        body = srv.get(path).json()
        assert set(body) == {"models", "object", "data"} and body["object"] == "list"
        (card,) = body["data"]
        assert card["id"] == "smol" and card["object"] == "model" and card["owned_by"] == "llamacpp"
        assert card["aliases"] == ["smol"] and card["tags"] == []
        meta = card["meta"]
        assert meta["n_vocab"] == 49152 and meta["n_ctx"] == 512 and meta["n_ctx_train"] == 8192
        assert meta["vocab_type"] == 2 and meta["ftype"] == "Q4_1"        # BPE
        assert meta["n_params"] > 100_000_000 and meta["size"] > 0 and meta["n_embd"] == 576
        (entry,) = body["models"]
        assert entry["name"] == entry["model"] == "smol"
        assert entry["capabilities"] == ["completion"] and entry["details"]["format"] == "gguf"


def test_the_openai_sdk_lists_and_retrieves_the_model(srv):
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    models = client.models.list()
    assert [m.id for m in models.data] == ["smol"]
    assert client.models.retrieve("smol").owned_by == "llamacpp"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


PROMPT = "The capital of France is"


def complete(srv, **body):
    r = srv.post("/completion", json=dict(body, prompt=PROMPT, temperature=0, n_predict=6))
    assert r.status_code == 200, r.text
    return r.json()


def test_tokens_are_empty_unless_return_tokens(srv):
    plain = complete(srv)
    assert plain["tokens"] == []
    with_tokens = complete(srv, return_tokens=True)
    assert len(with_tokens["tokens"]) == with_tokens["tokens_predicted"] == 6
    text = srv.post("/detokenize", json={"tokens": with_tokens["tokens"]}).json()["content"]
    assert text == with_tokens["content"] == plain["content"]


def test_streamed_chunks_carry_their_token_ids(srv):
    events, _ = stream(srv.url + "/completion", {"prompt": PROMPT, "temperature": 0, "n_predict": 6,
                                                 "stream": True})
    ids = [t for e in events[:-1] for t in e["tokens"]]
    assert len(ids) == 6 and events[-1]["tokens"] == []
    text = srv.post("/detokenize", json={"tokens": ids}).json()["content"]
    assert text == "".join(e["content"] for e in events)


def test_response_fields_keep_the_listed_keys_and_pull_nested_ones_up(srv):
    whole = complete(srv)
    picked = complete(srv, response_fields=["content", "generation_settings/n_predict",
                                            "timings/predicted_n", "no_such_field", "content/deeper"])
    assert picked == {"content": whole["content"], "generation_settings/n_predict": 6,
                      "timings/predicted_n": 6}


def test_response_fields_shape_the_final_stream_chunk_only(srv):
    events, _ = stream(srv.url + "/completion", {"prompt": PROMPT, "n_predict": 4, "stream": True,
                                                 "response_fields": ["stop", "tokens_predicted"]})
    assert events[-1] == {"stop": True, "tokens_predicted": 4}
    assert all("content" in e for e in events[:-1])


@pytest.mark.parametrize("field,value", [
    pytest.param("return_tokens", "yes", id="return_tokens-string"),
    pytest.param("response_fields", "content", id="response_fields-string"),
    pytest.param("response_fields", ["content", 3], id="response_fields-number-inside"),
])
def test_bad_shape_fields_are_400(srv, field, value):
    r = srv.post("/completion", json={"prompt": PROMPT, "n_predict": 1, field: value})
    assert r.status_code == 400
    assert field in r.json()["error"]["message"]
