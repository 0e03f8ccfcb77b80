"""Chat templates chosen by flag, through the server: the file, the sandbox, startup checks."""
from __future__ import annotations

import subprocess
import sys

import openai
import pytest
import requests

from webapp.chat_template import ChatTemplate

from ..conftest import ROOT

pytestmark = pytest.mark.slow

CUSTOM = ("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
          "{% if add_generation_prompt %}[assistant] {% endif %}")


@pytest.fixture(scope="module")
def file_server(server_factory, tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "chat.jinja"
    path.write_text(CUSTOM)
    return server_factory("-np", "1", "-c", "512", "-t", "1", "--chat-template-file", str(path))


def n_tokens(srv, text: str) -> int:
    return len(srv.post("/tokenize", json={"content": text, "add_special": True}).json()["tokens"])


def test_template_file_is_used_and_shown_in_props(file_server):
    assert file_server.get("/props").json()["chat_template"] == CUSTOM
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    client = openai.OpenAI(base_url=file_server.url + "/v1", api_key="x", max_retries=0)
    r = client.chat.completions.create(model="m", messages=messages, max_tokens=1)
    assert r.usage.prompt_tokens == n_tokens(file_server, "[system] Be brief.\n[user] Hi\n[assistant] ")


def test_a_last_assistant_message_is_continued(file_server):
    messages = [{"role": "user", "content": "Count to three."}, {"role": "assistant", "content": "One, two,"}]
    r = file_server.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 1})
    assert r.status_code == 200
    expected = ChatTemplate(CUSTOM).render(messages[:1]) + "One, two,"
    assert r.json()["usage"]["prompt_tokens"] == n_tokens(file_server, expected)


@pytest.mark.parametrize("template", [
    pytest.param("{{ messages.__class__.__mro__[1].__subclasses__() }}", id="subclasses"),
    pytest.param("{{ cycler.__init__.__globals__.os.popen('id').read() }}", id="globals-os"),
])
def test_a_template_reaching_python_internals_is_a_bad_request(server_factory, template):
    srv = server_factory("-np", "1", "-c", "256", "-t", "1", "--chat-template", template)
    r = requests.post(srv.url + "/v1/chat/completions",
                      json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}, timeout=30)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert "<class" not in err["message"] and "uid=" not in err["message"]
    srv.stop()


@pytest.mark.parametrize("args, message", [
    pytest.param(["--chat-template", "llama-3"], "unknown built-in chat template", id="unknown-builtin"),
    pytest.param(["--chat-template", "{% for %}"], "syntax error", id="bad-jinja"),
    pytest.param(["--chat-template-file", "/nonexistent/chat.jinja"], "cannot read", id="missing-file"),
    pytest.param(["--pooling", "rank"], "reranking", id="rank-pooling"),
])
def test_bad_template_flags_stop_startup_with_a_clear_message(args, message):
    proc = subprocess.run([sys.executable, "-m", "webapp.cli", "--port", "0", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
