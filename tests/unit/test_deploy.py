"""deploy/ without a cluster, a Docker engine or a model, and the vLLM-style gauges that the
inference extension's Endpoint Picker reads from ``/metrics``.

The metric names the manifests reference are checked against a real ``/metrics`` answer:
the app's own route and registry over the real ``Engine`` driving a fake context
(tests/unit/engine_fakes.py). The families come from the collector whatever the model, so
this is the same list a server with a model serves, and it needs neither a model nor a
subprocess, which keeps these checks in the fast tier.
"""
from __future__ import annotations

import inspect
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from webapp.completion import call_engine
from webapp.metrics import HttpCounts, MetricsCollector

from .engine_fakes import FakeContext, gen_request, wait_final, wait_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
METRIC_NAME = re.compile(r"\b((?:vllm|llamacpp):[a-z_]+)")
VLLM_GAUGES = ["vllm:num_requests_running", "vllm:num_requests_waiting",
               "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"]


# --- the app over a fake engine ------------------------------------------------------------
@pytest.fixture
def metrics_app(app_over):
    return lambda ctx: app_over(ctx, "--metrics", "--alias", "fake-model")


def samples(text: str) -> dict:
    """{family name: (type, [(labels, value), ...])}"""
    return {f.name: (f.type, [(s.labels, s.value) for s in f.samples])
            for f in text_string_to_metric_families(text)}


def scrape(app) -> dict:
    r = app.test_client().get("/metrics")
    assert r.status_code == 200, r.text
    return samples(r.get_data(as_text=True))


# --- the gauges -----------------------------------------------------------------------------
def test_vllm_gauges_read_the_same_engine_state_as_the_slots(metrics_app):
    ctx = FakeContext(n_ctx=4096, n_seq=2)
    ctx.on_decode = lambda batch: time.sleep(0.002)
    app, engine = metrics_app(ctx)
    state = app.extensions["llama"]
    engine.lora_adapters = [SimpleNamespace(path="/adapters/sql-lora.gguf"),
                            SimpleNamespace(path="/adapters/chat.gguf")]
    engine.lora_scales = [1.0, 0.0]
    reqs = [engine.submit(gen_request(n_prompt=20, n_predict=1500, first=10 + 100 * i)) for i in range(3)]
    try:
        assert wait_for(lambda: engine.n_processing == 2 and engine.n_waiting == 1)
        # one call on the engine thread: the snapshot and the slots it was taken from
        snap, cells = call_engine(engine, lambda e: (state.observer.snapshot(e, reset_bucket=False),
                                                     sum(len(s.cache_tokens) for s in e.scheduler.slots)))
        registry = CollectorRegistry(auto_describe=False)
        registry.register(MetricsCollector(lambda: snap, HttpCounts(), model_name="fake-model"))
        m = samples(generate_latest(registry).decode())
    finally:
        for req in reqs:
            engine.abort(req.id)

    def value(name):
        type_, [(labels, v)] = m[name]
        assert type_ == "gauge" and labels == {"model_name": "fake-model", "engine": "0"}, (name, m[name])
        return v

    assert value("vllm:num_requests_running") == 2
    assert value("vllm:num_requests_waiting") == 1
    assert cells > 40
    assert value("vllm:kv_cache_usage_perc") == pytest.approx(cells / 4096)
    assert value("vllm:gpu_cache_usage_perc") == value("vllm:kv_cache_usage_perc")
    type_, [(labels, stamp)] = m["vllm:lora_requests_info"]
    assert type_ == "gauge"
    assert labels == {"max_lora": "2", "running_lora_adapters": "sql-lora", "waiting_lora_adapters": "sql-lora"}
    assert abs(stamp - time.time()) < 60


def test_an_idle_server_reports_nothing_running_or_waiting(metrics_app):
    app, engine = metrics_app(FakeContext(n_ctx=512, n_seq=2))
    wait_final(engine.submit(gen_request(n_prompt=5, n_predict=4)))
    assert wait_for(lambda: engine.n_processing == 0 and engine.n_waiting == 0)
    m = scrape(app)
    for name in VLLM_GAUGES:
        assert m[name][0] == "gauge"
        [(labels, _)] = m[name][1]
        assert labels == {"model_name": "fake-model", "engine": "0"}
    assert m["vllm:num_requests_running"][1][0][1] == 0
    assert m["vllm:num_requests_waiting"][1][0][1] == 0
    assert 0 < m["vllm:kv_cache_usage_perc"][1][0][1] <= 1        # the finished request's cache stays
    assert m["vllm:lora_requests_info"][1][0][0] == {"max_lora": "0", "running_lora_adapters": "",
                                                     "waiting_lora_adapters": ""}


# --- the manifests --------------------------------------------------------------------------
def yaml_files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.yaml"))


def documents() -> list[tuple[str, dict]]:
    """(where, document) for every YAML document under deploy/, and for the YAML files that
    ConfigMaps carry (the Endpoint Picker's configuration)."""
    out = []
    for path in yaml_files():
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is None:
                continue
            where = f"{path.relative_to(ROOT)}#{i}"
            out.append((where, doc))
            if doc.get("kind") == "ConfigMap":
                for key, text in (doc.get("data") or {}).items():
                    if key.endswith((".yaml", ".yml")):
                        out.append((f"{where}:{key}", yaml.safe_load(text)))
    return out


def strings(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif isinstance(node, str):
        yield node


def by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in documents() if doc.get("kind") == kind]


def test_every_yaml_document_parses_and_names_its_kind():
    assert {p.name for p in yaml_files()} >= {"llama-server.yaml", "inference-pool.yaml", "kustomization.yaml"}
    docs = documents()
    assert docs
    for where, doc in docs:
        assert isinstance(doc, dict), where
        assert doc.get("apiVersion") and doc.get("kind"), f"{where}: no apiVersion/kind"
    kinds = {doc["kind"] for _, doc in docs}
    assert {"Deployment", "Service", "InferencePool", "EndpointPickerConfig"} <= kinds


def test_every_metric_the_manifests_name_is_served(metrics_app):
    app, _ = metrics_app(FakeContext(n_ctx=512, n_seq=2))
    r = app.test_client().get("/metrics")
    served = set()
    for family in text_string_to_metric_families(r.get_data(as_text=True)):
        served.add(family.name)
        served.update(s.name for s in family.samples)
    named = {m for _, doc in documents() for s in strings(doc) for m in METRIC_NAME.findall(s)}
    assert named >= {"vllm:num_requests_waiting", "vllm:num_requests_running",
                     "vllm:kv_cache_usage_perc", "vllm:lora_requests_info"}
    assert named <= served, f"named but not served: {sorted(named - served)}"


def test_the_endpoint_picker_reads_our_engine_config_for_our_pods():
    [config] = by_kind("EndpointPickerConfig")
    [extractor] = [p for p in config["plugins"] if p["type"] == "core-metrics-extractor"]
    params = extractor["parameters"]
    [engine_config] = params["engineConfigs"]
    [deployment] = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "llama-server-py"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[params["engineLabelKey"]] == engine_config["name"] == params["defaultEngine"]
    [pool] = by_kind("InferencePool")
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert "--metrics" in container["args"]
    port = container["ports"][0]["containerPort"]
    assert [p["number"] for p in pool["spec"]["targetPorts"]] == [port]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", probe


def test_the_grace_period_covers_the_servers_graceful_drain():
    from webapp import server
    source = inspect.getsource(server._graceful_stop)
    engine_stop = float(re.search(r"engine\.stop,\s*([\d.]+)", source).group(1))
    drain = inspect.signature(server._graceful_stop).parameters["drain_s"].default
    [deployment] = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "llama-server-py"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = float(pre_stop[1]) + engine_stop + drain
    assert needed <= pod["terminationGracePeriodSeconds"] <= needed + 10


# --- the Dockerfile -------------------------------------------------------------------------
def makefile_vars(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^(\w+)\s*[:?]?=\s*(.*)$", text, re.M)}


def recipe(text: str, target: str) -> tuple[list[str], list[str]]:
    """(prerequisites, recipe lines) of a Makefile target."""
    m = re.search(rf"^{target}:([^\n]*)\n((?:\t[^\n]*\n)*)", text, re.M)
    assert m, f"no {target} target"
    return m.group(1).split(), [line.strip() for line in m.group(2).splitlines()]


def expand(line: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: expand(variables.get(m.group(1), ""), variables), line)


def test_the_dockerfile_installs_and_serves_as_the_makefile_does():
    makefile = (ROOT / "Makefile").read_text()
    docker = (DEPLOY / "Dockerfile").read_text()
    runs = re.findall(r"^RUN ((?:[^\n]*\\\n)*[^\n]*)", docker, re.M)     # with continuation lines
    assert any(re.search(r"(^|&&\s*)make install(\s|$)", run) for run in runs), runs
    prerequisites, lines = recipe(makefile, "serve")
    assert prerequisites == ["install"]            # serve = install, then this command
    [command] = lines
    [port] = re.findall(r"^EXPOSE (\d+)$", docker, re.M)
    variables = makefile_vars(makefile) | {"HOST": "0.0.0.0", "PORT": port, "ARGS": ""}
    entrypoint = yaml.safe_load(re.search(r"^ENTRYPOINT (.*)$", docker, re.M).group(1))
    assert entrypoint == shlex.split(expand(command, variables))
    # the README's apt-get line is what the image installs (and more)
    readme = (ROOT / "README.md").read_text()
    needed = re.search(r"apt-get install ([^`)]+)", readme).group(1).split()
    apt = next(run for run in runs if "apt-get install" in run)
    assert set(needed) <= set(apt.split()), needed
    [deployment] = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "llama-server-py"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == int(port)


# --- haproxy --------------------------------------------------------------------------------
def test_the_haproxy_template_routes_sessions_by_hash_and_the_rest_by_least_connections():
    from deploy.haproxy.render import render
    cfg = render(["10.0.0.1:8080", "10.0.0.2:8080"], bind="0.0.0.0:80")
    directives = [line.strip() for line in cfg.splitlines() if line.strip() and not line.strip().startswith("#")]
    for expected in ("balance hdr(X-Session-Id)", "hash-type consistent", "balance leastconn",
                     "option redispatch 1", "http-check send meth GET uri /health", "bind 0.0.0.0:80"):
        assert expected in directives, expected
    assert any(d.startswith("retries ") and int(d.split()[1]) >= 1 for d in directives)
    assert any(d.startswith("retry-on ") and "conn-failure" in d.split() for d in directives)
    servers = [d for d in directives if d.startswith("server ")]
    assert servers == ["server r1 10.0.0.1:8080 check", "server r2 10.0.0.2:8080 check",
                       "server r1 10.0.0.1:8080 track sticky/r1", "server r2 10.0.0.2:8080 track sticky/r2"]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
@pytest.mark.parametrize("replicas", [["127.0.0.1:8081"], ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"]],
                         ids=["one-replica", "three-replicas"])
def test_haproxy_accepts_the_rendered_configuration(tmp_path, replicas):
    from deploy.haproxy.render import render
    path = tmp_path / "haproxy.cfg"
    path.write_text(render(replicas))
    done = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
