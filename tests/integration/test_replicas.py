"""Many replicas of one model (docs/scaling.md).

- The vLLM-style gauges the inference extension's Endpoint Picker reads, under load, against
  ``GET /slots`` of the same server.
- Three replicas (``-np 1 -c 1024 -t 1``) behind haproxy (deploy/haproxy/haproxy.cfg) on
  loopback: a conversation keeps its replica (and so its slot cache), and a replica killed
  under load loses no request that started after it died; its share moves to the others.

haproxy is Debian's; when it is missing it is installed with apt-get where that is allowed
(root), and only when that fails are the haproxy tests skipped. The kill test runs last: it
leaves the module's group with one replica fewer.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from deploy.haproxy.render import render
from tests.conftest import ARTIFACTS, ServerProcess, free_port

pytestmark = pytest.mark.slow

REPLICA_ARGS = ("-np", "1", "-c", "1024", "-t", "1")


def gauges(url: str) -> dict:
    """{family name: [(labels, value)]} of one /metrics scrape."""
    r = requests.get(url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(r.text)}


def one(m: dict, name: str) -> float:
    [(_, value)] = m[name]
    return value


# --- the Endpoint Picker's gauges -----------------------------------------------------------
def test_vllm_gauges_follow_the_slots_under_load(server_factory):
    srv = server_factory("-np", "3", "-c", "3072", "--metrics")
    body = {"prompt": "Write a long story about a lighthouse keeper.", "n_predict": 300,
            "ignore_eos": True, "stream": True, "temperature": 0}
    streams = [requests.post(srv.url + "/completion", json=body, stream=True, timeout=60) for _ in range(2)]
    # keep the line iterators: dropping one mid-stream makes urllib3 close the connection
    lines = [r.iter_lines() for r in streams]
    try:
        for r, it in zip(streams, lines):
            assert r.status_code == 200
            next(it)                          # both are generating
        before = srv.get("/slots").json()
        m = gauges(srv.url)
        after = srv.get("/slots").json()
    finally:
        for r in streams:
            r.close()                         # the client leaves: the request is aborted
    assert one(m, "vllm:num_requests_running") == 2
    assert one(m, "vllm:num_requests_waiting") == 0
    [(labels, kv)] = m["vllm:kv_cache_usage_perc"]
    assert labels["engine"] == "0" and labels["model_name"] == srv.get("/props").json()["model_alias"]
    assert one(m, "vllm:gpu_cache_usage_perc") == kv
    # cells holding tokens over the context of all slots; generation went on between the
    # three reads, so the scrape lies between the two /slots readings
    n_ctx = sum(s["n_ctx"] for s in before)
    assert n_ctx == 3072
    lo, hi = (sum(s["n_cache_tokens"] for s in slots) for slots in (before, after))
    assert 0 < lo <= hi
    assert lo - 0.5 <= kv * n_ctx <= hi + 0.5, (lo, kv * n_ctx, hi)
    [(lora_labels, stamp)] = m["vllm:lora_requests_info"]
    assert lora_labels == {"max_lora": "0", "running_lora_adapters": "", "waiting_lora_adapters": ""}
    assert abs(stamp - time.time()) < 60
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        m = gauges(srv.url)
        if one(m, "vllm:num_requests_running") == 0:
            break
        time.sleep(0.1)
    assert one(m, "vllm:num_requests_running") == 0
    assert one(m, "vllm:num_requests_waiting") == 0


# --- three replicas behind haproxy -----------------------------------------------------------
def haproxy_binary() -> str | None:
    if shutil.which("haproxy"):
        return shutil.which("haproxy")
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "haproxy"],
                           env=env, capture_output=True, timeout=300)
        except subprocess.TimeoutExpired:
            return None
    return shutil.which("haproxy")


class Balancer:
    """haproxy in the foreground on loopback, over the given replicas."""

    def __init__(self, binary: str, replicas: list[ServerProcess]):
        self.port, self.stats_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ARTIFACTS.mkdir(exist_ok=True)
        self.cfg = ARTIFACTS / f"haproxy-{self.port}.cfg"
        self.cfg.write_text(render([f"127.0.0.1:{r.port}" for r in replicas], bind=f"127.0.0.1:{self.port}",
                                   stats_bind=f"127.0.0.1:{self.stats_port}"))
        self._log = open(ARTIFACTS / f"haproxy-{self.port}.log", "wb")
        self.proc = subprocess.Popen([binary, "-db", "-f", str(self.cfg)], stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def status(self) -> dict[str, str]:
        """Server name -> health (UP, DOWN, ...) in the checked backend."""
        r = requests.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5)
        rows = csv.DictReader(io.StringIO(r.text.lstrip("# ")))
        return {row["svname"]: row["status"] for row in rows
                if row["pxname"] == "sticky" and row["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_status(self, want, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}")
            try:
                status = self.status()
                if want(status):
                    return status
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"haproxy's view after {timeout}s: {status}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@dataclass
class Group:
    balancer: Balancer
    replicas: list[ServerProcess]         # replicas[i] is haproxy's server r{i+1}


@pytest.fixture(scope="module")
def group():
    binary = haproxy_binary()
    if binary is None:
        pytest.skip("haproxy is not installed and could not be installed (apt-get install haproxy)")
    replicas = [ServerProcess(REPLICA_ARGS, log_name=f"replica{i + 1}") for i in range(3)]
    balancer = None
    try:
        for r in replicas:
            r.wait_ready(90)
        balancer = Balancer(binary, replicas)
        balancer.wait_status(lambda s: len(s) == 3 and all(v == "UP" for v in s.values()), 15)
        yield Group(balancer, replicas)
    finally:
        if balancer is not None:
            balancer.stop()
        for r in replicas:
            r.stop()


def complete(session: requests.Session, url: str, body: dict, headers=None, timeout: float = 60):
    return session.post(url + "/completion", json=body, headers=headers or {}, timeout=timeout)


def test_a_conversation_stays_on_its_replica(group):
    served_by = {}
    http = requests.Session()
    for name in ("alice", "bob", "carol", "dave"):
        prompt = f"A conversation with {name}.\nUser: Tell me about the sea.\nAssistant:"
        cached, replicas = [], set()
        for turn in range(3):
            r = complete(http, group.balancer.url,
                         {"prompt": prompt, "n_predict": 12, "temperature": 0, "cache_prompt": True},
                         headers={"X-Session-Id": name})
            assert r.status_code == 200, r.text
            replicas.add(r.headers["X-Served-By"])
            cached.append(r.json()["tokens_cached"])
            prompt += r.json()["content"] + f"\nUser: And then, part {turn + 2}?\nAssistant:"
        assert len(replicas) == 1, f"session {name} moved: {replicas}"
        # each turn reuses the previous turns from the replica's slot: the cached prefix grows
        assert 0 < cached[1] < cached[2], (name, cached)
        served_by[name] = replicas.pop()
    # the hash spreads sessions (deterministic for these names)
    assert len(set(served_by.values())) >= 2, served_by


class Load:
    """Clients sending short requests without a session header through the balancer until
    stopped (bounded: at most max_each requests per client)."""

    def __init__(self, url: str, clients: int = 4, max_each: int = 400):
        self.url = url
        self.results: list[dict] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i, max_each), daemon=True) for i in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, i: int, max_each: int) -> None:
        http = requests.Session()
        for k in range(max_each):
            if self.stop.is_set():
                return
            t0 = time.monotonic()
            try:
                r = complete(http, self.url, {"prompt": f"Client {i} asks question {k}: why is the sky blue?",
                                              "n_predict": 6, "temperature": 0, "ignore_eos": True}, timeout=30)
                ok = r.status_code == 200 and r.json().get("tokens_predicted") == 6
                result = {"t0": t0, "ok": ok, "status": r.status_code, "by": r.headers.get("X-Served-By"),
                          "error": "" if ok else r.text[:200]}
            except (requests.RequestException, json.JSONDecodeError) as exc:
                result = {"t0": t0, "ok": False, "status": None, "by": None, "error": repr(exc)}
            result["t1"] = time.monotonic()
            with self.lock:
                self.results.append(result)

    def since(self, t: float) -> list[dict]:
        with self.lock:
            return [r for r in self.results if r["t0"] >= t]

    def wait(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return False

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(40)


def test_killing_a_replica_under_load_loses_no_later_request(group):
    load = Load(group.balancer.url)
    try:
        assert load.wait(lambda: {r["by"] for r in load.since(0)} >= {"r1", "r2", "r3"}, 30), \
            "the three replicas did not all get requests"
        victim = group.replicas[1]                       # haproxy's r2
        victim.proc.kill()
        victim.proc.wait(10)
        t_kill = time.monotonic()                        # its port is closed from here on
        status = group.balancer.wait_status(lambda s: s["r2"].startswith("DOWN"), 15)
        t_down = time.monotonic()
        assert status["r1"] == "UP" and status["r3"] == "UP", status
        assert load.wait(lambda: len(load.since(t_down)) >= 16, 30)
    finally:
        load.finish()
    after_kill = load.since(t_kill)
    lost = [r for r in after_kill if not r["ok"]]
    assert after_kill and not lost, f"{len(lost)} of {len(after_kill)} requests after the kill failed: {lost[:3]}"
    # once haproxy has marked it down, the killed replica's share goes to both others
    shares = {r["by"] for r in load.since(t_down)}
    assert shares == {"r1", "r3"}, shares
