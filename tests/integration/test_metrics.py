"""GET /metrics: the seed's Prometheus metrics and the latency histograms beyond it (issue #6)."""
from __future__ import annotations

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .sse import stream

pytestmark = pytest.mark.slow

SEED = {
    "llamacpp:prompt_tokens_total": "counter",
    "llamacpp:prompt_seconds_total": "counter",
    "llamacpp:tokens_predicted_total": "counter",
    "llamacpp:tokens_predicted_seconds_total": "counter",
    "llamacpp:n_decode_total": "counter",
    "llamacpp:prompt_tokens_seconds": "gauge",
    "llamacpp:predicted_tokens_seconds": "gauge",
    "llamacpp:kv_cache_usage_ratio": "gauge",
    "llamacpp:kv_cache_tokens": "gauge",
    "llamacpp:requests_processing": "gauge",
    "llamacpp:requests_deferred": "gauge",
    "llamacpp:n_busy_slots_per_decode": "gauge",
}
HISTOGRAMS = ["llamacpp:queue_wait_seconds", "llamacpp:time_to_first_token_seconds",
              "llamacpp:inter_token_latency_seconds", "llamacpp:request_latency_seconds"]


@pytest.fixture(scope="module")
def srv(server_factory):
    return server_factory("-np", "2", "-c", "1024", "--metrics")


def scrape(srv) -> dict:
    """{sample name or (name, labels...): value} plus "__types__": {family: type}."""
    r = srv.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out: dict = {"__types__": {}, "__text__": r.text}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out["__types__"][sample.name] = family.type
            key = sample.name if not sample.labels else (sample.name, *sorted(sample.labels.items()))
            out[key] = sample.value
    return out


def complete(srv, **body):
    body.setdefault("temperature", 0)
    r = srv.post("/completion", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def http_count(m, endpoint, status):
    return m.get(("llamacpp:http_requests_total", ("endpoint", endpoint), ("status", str(status))), 0)


def test_every_seed_metric_is_exposed_with_its_exact_name_and_type(srv):
    complete(srv, prompt="Warm up", n_predict=2)
    m = scrape(srv)
    for name, type_ in SEED.items():
        assert name in m, f"{name} missing"
        assert m["__types__"][name] == type_, name
    assert "# TYPE llamacpp:prompt_tokens_total counter" in m["__text__"]
    for name in HISTOGRAMS:
        assert m["__types__"][name + "_bucket"] == "histogram"
        assert (name + "_bucket", ("le", "+Inf")) in m
    assert "llamacpp:prompt_tokens_total_created" not in m   # no stray _created series


def test_counters_follow_the_requests(srv):
    before = scrape(srv)
    a = complete(srv, prompt="The quick brown fox", n_predict=5, cache_prompt=False)
    events, _ = stream(srv.url + "/completion", {"prompt": "Jumps over the lazy", "n_predict": 4,
                                                 "temperature": 0, "stream": True, "cache_prompt": False})
    b = events[-1]
    after = scrape(srv)

    def delta(key):
        return after.get(key, 0) - before.get(key, 0)

    assert delta("llamacpp:tokens_predicted_total") == a["tokens_predicted"] + b["tokens_predicted"]
    assert delta("llamacpp:prompt_tokens_total") == a["timings"]["prompt_n"] + b["timings"]["prompt_n"]
    assert delta("llamacpp:requests_admitted_total") == 2
    assert delta(("llamacpp:requests_finished_total", ("reason", "length"))) == 2
    assert delta("llamacpp:n_decode_total") >= 5
    assert delta("llamacpp:prompt_seconds_total") > 0
    assert delta("llamacpp:tokens_predicted_seconds_total") > 0
    for name in ("llamacpp:time_to_first_token_seconds", "llamacpp:request_latency_seconds",
                 "llamacpp:queue_wait_seconds"):
        assert delta(name + "_count") == 2
        assert delta(name + "_sum") > 0
    assert delta("llamacpp:inter_token_latency_seconds_count") == \
        (a["tokens_predicted"] - 1) + (b["tokens_predicted"] - 1)
    assert after["llamacpp:requests_processing"] == 0 and after["llamacpp:requests_deferred"] == 0
    assert after["llamacpp:kv_cache_tokens"] > 0
    assert 0 < after["llamacpp:kv_cache_usage_ratio"] <= 1
    assert after["llamacpp:predicted_tokens_seconds"] > 0


def test_http_requests_are_counted_by_endpoint_and_status(srv):
    before = scrape(srv)
    complete(srv, prompt="Hi", n_predict=1)
    assert srv.post("/completion", json={"prompt": 5}).status_code == 400
    assert srv.get("/no/such/thing").status_code == 404
    after = scrape(srv)
    assert http_count(after, "/completion", 200) - http_count(before, "/completion", 200) == 1
    assert http_count(after, "/completion", 400) - http_count(before, "/completion", 400) == 1
    assert http_count(after, "unmatched", 404) - http_count(before, "unmatched", 404) == 1
    # the scrape before this one is counted too
    assert http_count(after, "/metrics", 200) >= 1


def test_a_client_that_goes_away_is_counted_as_a_cancellation(srv):
    before = scrape(srv)
    r = requests.post(srv.url + "/completion", stream=True, timeout=30,
                      json={"prompt": "Tell me a long story", "n_predict": 500, "ignore_eos": True, "stream": True})
    next(r.iter_content(chunk_size=None))
    r.close()
    deadline = time.time() + 15
    while time.time() < deadline:
        after = scrape(srv)
        if after["llamacpp:requests_cancelled_total"] > before["llamacpp:requests_cancelled_total"]:
            break
        time.sleep(0.1)
    assert after["llamacpp:requests_cancelled_total"] - before["llamacpp:requests_cancelled_total"] == 1
    assert after.get(("llamacpp:requests_finished_total", ("reason", "abort")), 0) \
        - before.get(("llamacpp:requests_finished_total", ("reason", "abort")), 0) == 1
    assert after["llamacpp:requests_processing"] == 0


def test_metrics_are_off_without_the_flag(server):
    r = server.get("/metrics")
    assert r.status_code == 501
    assert r.json()["error"]["type"] == "not_supported_error"
