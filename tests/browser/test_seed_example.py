"""The seed's completion.js example page, served with --path, in a real browser."""
from __future__ import annotations

import http.client
import json
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The example from llama.cpp's server README, as written there.
EXAMPLE = """<html>
  <head>
    <script type="module">
      import { llama } from '/completion.js'

      const prompt = `### Instruction:
Write dad jokes, each one paragraph.
You can use html formatting if needed.

### Response:`

      for await (const chunk of llama(prompt)) {
        document.write(chunk.data.content)
      }
    </script>
  </head>
  <body>
  </body>
</html>
"""

# A page using the other helpers; it reports what it saw in window.results.
HELPERS = """<!doctype html>
<script type="module">
  import { llama, llamaPromise, llamaEventTarget, llamaComplete, llamaModelInfo } from '/completion.js'
  const params = { n_predict: 4, temperature: 0 }
  const results = {}
  results.info = await llamaModelInfo()
  results.promise = await llamaPromise('The sky is', params)
  results.events = await new Promise((resolve) => {
    const seen = []
    const target = llamaEventTarget('The sky is', params)
    target.addEventListener('message', (e) => seen.push(e.detail.content))
    target.addEventListener('timings', (e) => seen.push(typeof e.detail.predicted_per_second))
    target.addEventListener('done', (e) => resolve({ seen, content: e.detail.content }))
  })
  const chunks = []
  await llamaComplete({ prompt: 'The sky is', ...params }, new AbortController(), (c) => chunks.push(c.data))
  results.complete = chunks.map((c) => c.content).join('')
  const controller = new AbortController()
  const gen = llama('Count to one hundred:', { n_predict: 400, ignore_eos: true }, { controller })
  results.aborted = []
  for await (const chunk of gen) {
    results.aborted.push(chunk.data.content)
    if (results.aborted.length === 3) controller.abort()
  }
  try {
    await llamaPromise('x', { n_predict: 'nope' })
  } catch (e) {
    results.error = { name: e.name, status: e.status, message: e.message }
  }
  window.results = results
</script>
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("seed-site")
    root = base / "public"
    root.mkdir()
    (root / "index.html").write_text(EXAMPLE)
    (root / "helpers.html").write_text(HELPERS)
    (base / "secret.txt").write_text("do not serve")
    return root


@pytest.fixture(scope="module")
def srv(server_factory, site):
    # -n caps every request: the example asks for the seed's default of 500 tokens.
    return server_factory("--path", str(site), "-n", "8", "-np", "1", "-c", "1024", "-t", "1")


def test_the_seed_example_page_writes_the_streamed_jokes(new_page, srv):
    page = new_page()
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/completion")) as req:
        page.goto(srv.url + "/")
    body = req.value.post_data_json
    assert body["stream"] is True and body["n_predict"] == 500 and body["temperature"] == 0.2
    assert body["stop"] == ["</s>"] and body["prompt"].startswith("### Instruction:")
    page.wait_for_function("document.body && document.body.innerText.trim().length > 0", timeout=60_000)
    page.wait_for_load_state("networkidle")
    assert page.errors == []


def test_the_other_helpers_work_too(new_page, srv):
    page = new_page()
    page.goto(srv.url + "/helpers.html")
    results = page.wait_for_function("window.results", timeout=90_000).json_value()
    assert results["info"]["temperature"] == 0.8 and "top_k" in results["info"]
    greedy = srv.post("/completion", json={"prompt": "The sky is", "n_predict": 4, "temperature": 0,
                                           "stop": ["</s>"]}).json()["content"]
    assert results["promise"] == greedy
    assert results["complete"] == greedy
    assert results["events"]["content"] == greedy
    assert "number" in results["events"]["seen"]
    assert len(results["aborted"]) == 3
    assert results["error"]["status"] == 400 and results["error"]["name"] == "LlamaError"
    deadline = time.time() + 10      # the aborted request's slot is freed at its next token
    while srv.get("/health").json()["slots_processing"] and time.time() < deadline:
        time.sleep(0.1)
    assert srv.get("/health").json()["slots_processing"] == 0


@pytest.mark.parametrize("raw_path", ["/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt",
                                      "/%2e%2e%2fsecret.txt"])
def test_raw_paths_cannot_leave_the_folder(srv, raw_path):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", raw_path)     # sent as is: no client-side normalisation
    response = conn.getresponse()
    data = response.read()
    conn.close()
    assert response.status == 404 and b"do not serve" not in data
    assert json.loads(data)["error"]["type"] == "not_found_error"
