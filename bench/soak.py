"""Soak test: many short mixed requests, some clients hanging up on purpose, then a check
that nothing leaked.

    python -m bench.soak                          # start a server, 10,000 requests, 8 clients
    python -m bench.soak --n 300 --clients 4      # a short run
    python -m bench.soak --url http://127.0.0.1:8080 --pid 1234

Not in CI. The requests cycle through the generating routes: native ``/completion`` (one
prompt streamed or not, several prompts in ``prompt`` not streamed), ``/v1/chat/completions``
and ``/v1/completions`` streamed and not with ``n`` from 1 to 3 (at most the server's slots),
and ``/v1/embeddings`` (when the server answers it; the default command starts it with
``--embeddings``), each generating 4 to 32 tokens. About a third of the clients are
impatient: each of their requests is abandoned at a random moment, before the answer
(a plain close or a reset) or after a random number of stream events.

Every other answer is read to its end and checked against the route's shape (JSON fields,
SSE framing, one finish per choice, the stream's terminator). Printed at the end: requests
sent, completed, disconnected on purpose, lost (cut short, timed out, refused), malformed
(complete but not of the route's shape), 5xx (status or error event), other errors, the
slots still processing a few seconds after the run (``GET /slots``, else ``/health``), and
the server's RSS at start and end (``/proc/PID/status``: a server started here, or
``--pid``). The exit status is 1 when anything was lost, malformed, 5xx or leaked.

Every loop is bounded in count and time (``--n``, ``--max-seconds``, ``--timeout`` per
request, ``--settle`` for the slots); only 127.0.0.1 is ever contacted.
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

import requests

from .servers import start, stop

__all__ = ["main", "soak", "make_job", "check_body", "check_stream"]

PROMPTS = ["Write a haiku about the sea.", "Why is the sky blue?", "List three fruits.",
           "Tell me a joke about cats.", "What is the capital of Italy?", "Count to ten:",
           "Describe a sunrise in one sentence.", "The quick brown fox"]
ROUTES = {           # name: weight in the mix
    "native": 2, "native_multi": 1, "native_stream": 2,
    "chat": 2, "chat_stream": 2, "completions": 2, "completions_stream": 2, "embeddings": 1,
}
MAX_EVENTS = 10_000           # stream events read per answer at most
MAX_LINE = 1 << 20
FINISH_REASONS = ("stop", "length")


class Malformed(Exception):
    """A complete answer that is not of the route's shape."""


class ServerError(Exception):
    """A 5xx status, or an error event with a 5xx code inside a stream."""


class ClientError(Exception):
    """Any other error answer (none is expected: every request is valid)."""


class Lost(Exception):
    """No complete answer: connection refused or cut, timeout, a stream without its end."""


# --- requests ---------------------------------------------------------------------------
def make_job(rng: random.Random, n_slots: int, routes: list[str]) -> dict:
    """One request: route, path, body, how many choices and prompts its answer holds."""
    route = rng.choices(routes, [ROUTES[r] for r in routes])[0]
    n_tokens = rng.randint(4, 32)
    sampling = {"temperature": rng.choice([0.0, 0.8]), "seed": rng.randrange(1 << 30)}
    n = rng.randint(1, min(3, n_slots))
    prompts = rng.sample(PROMPTS, rng.randint(2, 3))
    if route.startswith("native"):
        prompt = prompts if route == "native_multi" else prompts[0]
        body = {"prompt": prompt, "n_predict": n_tokens, "stream": route == "native_stream", **sampling}
        return {"route": route, "path": "/completion", "body": body, "n": 1,
                "prompts": len(prompts) if route == "native_multi" else 1}
    if route.startswith("chat"):
        body = {"messages": [{"role": "user", "content": prompts[0]}], "max_tokens": n_tokens,
                "n": n, "stream": route == "chat_stream", **sampling}
        return {"route": route, "path": "/v1/chat/completions", "body": body, "n": n, "prompts": 1}
    if route.startswith("completions"):
        body = {"prompt": prompts[0], "max_tokens": n_tokens, "n": n,
                "stream": route == "completions_stream", **sampling}
        return {"route": route, "path": "/v1/completions", "body": body, "n": n, "prompts": 1}
    return {"route": route, "path": "/v1/embeddings", "body": {"input": prompts}, "n": 1,
            "prompts": len(prompts)}


# --- shapes -------------------------------------------------------------------------------
def _need(ok: bool, what: str) -> None:
    if not ok:
        raise Malformed(what)


def check_body(job: dict, body) -> None:
    """A whole JSON answer against its route's shape."""
    route, n, prompts = job["route"], job["n"], job["prompts"]
    if route == "native":
        _native_result(body)
    elif route == "native_multi":
        _need(isinstance(body, list) and len(body) == prompts, "one result per prompt")
        for i, result in enumerate(body):
            _native_result(result)
            _need(result.get("index") == i, "results in prompt order")
    elif route == "chat":
        _need(isinstance(body, dict) and body.get("object") == "chat.completion", "object chat.completion")
        choices = body.get("choices")
        _need(isinstance(choices, list) and [c.get("index") for c in choices] == list(range(n)),
              "n choices")
        for c in choices:
            _need(isinstance(c.get("message", {}).get("content"), str), "message.content")
            _need(c.get("finish_reason") in FINISH_REASONS, "finish_reason")
        _need(isinstance(body.get("usage", {}).get("completion_tokens"), int), "usage")
    elif route == "completions":
        _need(isinstance(body, dict) and body.get("object") == "text_completion", "object text_completion")
        choices = body.get("choices")
        _need(isinstance(choices, list) and [c.get("index") for c in choices] == list(range(n * prompts)),
              "n choices per prompt")
        for c in choices:
            _need(isinstance(c.get("text"), str) and c.get("finish_reason") in FINISH_REASONS,
                  "text, finish_reason")
    elif route == "embeddings":
        _need(isinstance(body, dict) and body.get("object") == "list", "object list")
        data = body.get("data")
        _need(isinstance(data, list) and [d.get("index") for d in data] == list(range(prompts)),
              "one per input")
        for d in data:
            vec = d.get("embedding")
            _need(isinstance(vec, list) and vec and all(isinstance(x, (int, float)) for x in vec),
                  "embedding")
    else:
        raise ValueError(route)


def _native_result(result) -> None:
    _need(isinstance(result, dict) and isinstance(result.get("content"), str), "content")
    _need(result.get("stop") is True and isinstance(result.get("tokens_predicted"), int),
          "stop, tokens_predicted")


def check_stream(job: dict, events: list) -> None:
    """The events of a whole stream (``"[DONE]"`` kept as the string) against the route."""
    route, n = job["route"], job["n"]
    _need(bool(events), "at least one event")
    if route == "native_stream":
        for ev in events[:-1]:
            _need(isinstance(ev, dict) and isinstance(ev.get("content"), str) and ev.get("stop") is False,
                  "content deltas with stop false")
        _native_result(events[-1])
        return
    _need(events[-1] == "[DONE]" and "[DONE]" not in events[:-1], "[DONE] last, once")
    kind = "chat.completion.chunk" if route == "chat_stream" else "text_completion"
    finished: set[int] = set()
    for ev in events[:-1]:
        _need(isinstance(ev, dict) and ev.get("object") == kind, f"object {kind}")
        for c in ev.get("choices", []):
            i = c.get("index")
            _need(isinstance(i, int) and 0 <= i < n and i not in finished,
                  "choice index, nothing after its finish")
            text = c.get("delta", {}).get("content", "") if kind != "text_completion" else c.get("text")
            _need(isinstance(text, str), "text of the delta")
            if c.get("finish_reason") is not None:
                _need(c["finish_reason"] in FINISH_REASONS, "finish_reason")
                finished.add(i)
    _need(finished == set(range(n)), "every choice finished")


def _error_of(payload) -> None:
    """Raise for an error body (a whole answer or one stream event)."""
    if isinstance(payload, dict) and "error" in payload:
        err = payload["error"]
        code = err.get("code") if isinstance(err, dict) else None
        if isinstance(code, int) and code >= 500:
            raise ServerError(f"error event {code}: {err.get('message')}")
        raise ClientError(f"error event: {err}")


# --- one request ----------------------------------------------------------------------------
def run_one(host: str, port: int, job: dict, timeout: float, headers: dict, hang_up: dict | None) -> str:
    """Send ``job``; ``hang_up`` (impatient clients): ``{"at": "before"|events, "delay", "reset"}``.
    Returns "completed", "disconnected" or raises one of the outcome exceptions."""
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        try:
            conn.connect()
            if hang_up and hang_up["reset"]:   # close with RST instead of FIN
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            data = json.dumps(job["body"]).encode()
            conn.request("POST", job["path"], body=data, headers={
                **headers, "Content-Type": "application/json", "Connection": "close"})
            if hang_up and hang_up["at"] == "before":
                time.sleep(hang_up["delay"])
                return "disconnected"
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise Lost(f"{type(exc).__name__}: {exc}") from None
        streaming = job["body"].get("stream") and resp.status == 200
        if not streaming:
            try:
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise Lost(f"{type(exc).__name__} reading the body") from None
            return _whole(job, resp.status, raw)
        stop_after = hang_up["at"] if hang_up else None
        return _stream(job, resp, deadline, stop_after)
    finally:
        conn.close()


def _whole(job: dict, status: int, raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        if status >= 500:
            raise ServerError(f"HTTP {status}") from None
        raise Malformed(f"HTTP {status}, not JSON: {raw[:80]!r}") from None
    if status >= 500:
        raise ServerError(f"HTTP {status}: {str(body)[:200]}")
    if status != 200:
        raise ClientError(f"HTTP {status}: {str(body)[:200]}")
    _error_of(body)
    check_body(job, body)
    return "completed"


def _stream(job: dict, resp, deadline: float, stop_after) -> str:
    events: list = []
    pending_blank = False
    try:
        for _ in range(MAX_EVENTS * 2 + 2):
            if time.monotonic() > deadline:
                raise Lost("stream timed out")
            line = resp.readline(MAX_LINE)
            if not line:
                break
            if line == b"\n":
                _need(pending_blank, "blank line without an event")
                pending_blank = False
                continue
            _need(line.startswith(b"data: ") and line.endswith(b"\n") and not pending_blank,
                  f"SSE data line: {line[:80]!r}")
            payload = line[6:].strip()
            if payload == b"[DONE]":
                events.append("[DONE]")
            else:
                try:
                    ev = json.loads(payload)
                except ValueError:
                    raise Malformed(f"event not JSON: {payload[:80]!r}") from None
                _error_of(ev)
                events.append(ev)
            pending_blank = True
            if isinstance(stop_after, int) and len(events) >= stop_after:
                return "disconnected"
        else:
            raise Malformed(f"more than {MAX_EVENTS} events")
    except (OSError, http.client.HTTPException) as exc:
        raise Lost(f"{type(exc).__name__} mid-stream after {len(events)} events") from None
    last = events[-1] if events else None
    if job["route"] == "native_stream":
        ended = isinstance(last, dict) and last.get("stop") is True
    else:
        ended = last == "[DONE]"
    if not ended:
        raise Lost(f"stream ended without its last event after {len(events)} events")
    _need(not pending_blank, "last event not terminated by a blank line")
    check_stream(job, events)
    return "completed"


# --- the run -------------------------------------------------------------------------------
class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.by_route: dict[str, Counter] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, route: str, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.counts[outcome] += 1
            self.by_route.setdefault(route, Counter())[outcome] += 1
            if detail and len(self.examples.setdefault(outcome, [])) < 5:
                self.examples[outcome].append(f"{route}: {detail}")

    def finish(self, route: str, outcome: str, detail: str, every: int, log) -> None:
        """Record a request's outcome; every ``every`` finished requests, a progress line."""
        self.add(route, outcome, detail)
        with self.lock:
            self.counts["finished"] += 1
            c = self.counts
            line = (f"  {c['finished']} done: completed {c['completed']}, disconnected {c['disconnected']}, "
                    f"problems {c['lost'] + c['malformed'] + c['5xx'] + c['other errors']}"
                    if log and c["finished"] % every == 0 else None)
        if line:
            log(line)


def soak(url: str, n: int, clients: int, *, seed: int, timeout: float, max_seconds: float,
         headers: dict, routes: list[str], n_slots: int, log=print) -> Tally:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    tally = Tally()
    next_job = iter(range(n))
    job_lock = threading.Lock()
    stop_at = time.monotonic() + max_seconds
    n_impatient = round(clients / 3)

    def client(k: int) -> None:
        impatient = k < n_impatient
        for _ in range(n):                        # bounded: at most every job by one client
            if time.monotonic() > stop_at:
                return
            with job_lock:
                i = next(next_job, None)
            if i is None:
                return
            rng = random.Random(seed * 1_000_003 + i)
            job = make_job(rng, n_slots, routes)
            hang_up = None
            if impatient:
                mid = job["body"].get("stream") and rng.random() < 0.6
                hang_up = {"at": rng.randint(1, 12) if mid else "before",
                           "delay": rng.uniform(0.0, 0.3), "reset": rng.random() < 0.5}
            tally.add(job["route"], "sent")
            try:
                outcome = run_one(host, port, job, timeout, headers, hang_up)
                detail = ""
                if outcome == "disconnected":
                    tally.add(job["route"], "disconnected before the answer" if hang_up["at"] == "before"
                              else "disconnected mid-stream")
            except (Lost, Malformed, ServerError, ClientError) as exc:
                outcome, detail = {Lost: "lost", Malformed: "malformed", ServerError: "5xx",
                                   ClientError: "other errors"}[type(exc)], str(exc)
            tally.finish(job["route"], outcome, detail, max(1, n // 10), log)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, stop_at - time.monotonic()) + timeout + 5)
    return tally


def busy_slots(url: str, headers: dict) -> int | None:
    """Slots processing now (``/slots``, else ``/health``); None when neither answers."""
    try:
        r = requests.get(url + "/slots", headers=headers, timeout=10)
        if r.status_code == 200:
            return sum(1 for s in r.json() if s.get("is_processing"))
        r = requests.get(url + "/health", headers=headers, timeout=10)
        return r.json().get("slots_processing") if r.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def settle(url: str, headers: dict, seconds: float) -> tuple[int | None, float]:
    """Wait (at most ``seconds``) for every slot to be idle: (still busy, seconds waited)."""
    t0 = time.monotonic()
    busy = busy_slots(url, headers)
    while busy and time.monotonic() - t0 < seconds:
        time.sleep(0.25)
        busy = busy_slots(url, headers)
    return busy, time.monotonic() - t0


def rss(pid: int | None) -> dict:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    out = {}
    if pid:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "VmHWM"):
                        out[key] = int(value.split()[0]) / 1024
        except OSError:
            pass
    return out


def _server_facts(url: str, headers: dict) -> tuple[int, bool]:
    """(slots, whether /v1/embeddings answers)."""
    props = requests.get(url + "/props", headers=headers, timeout=30).json()
    r = requests.post(url + "/v1/embeddings", json={"input": "probe"}, headers=headers, timeout=60)
    return int(props.get("total_slots", 1)), r.status_code == 200


def report(tally: Tally, seconds: float, busy, waited: float, mem_start: dict, mem_end: dict,
           n_slots: int) -> None:
    c = tally.counts
    disconnected = c["disconnected"]
    rows = [
        ("requests sent", c["sent"]),
        ("completed", c["completed"]),
        ("disconnected on purpose", f"{disconnected} ({c['disconnected before the answer']} before the "
                                    f"answer, {c['disconnected mid-stream']} mid-stream)"),
        ("lost", c["lost"]),
        ("malformed", c["malformed"]),
        ("5xx", c["5xx"]),
        ("other errors", c["other errors"]),
        ("leaked slots", "unknown (no /slots or /health answer)" if busy is None
         else f"{busy} of {n_slots} still processing {waited:.1f} s after the run"),
    ]
    if mem_start:
        rows.append(("server RSS", f"{mem_start['VmRSS']:.1f} MiB at start, "
                                   f"{mem_end.get('VmRSS', 0):.1f} MiB at end "
                                   f"(peak {mem_end.get('VmHWM', 0):.1f} MiB)"))
    print(f"soak: {c['sent']} requests in {seconds:.1f} s ({c['sent'] / max(seconds, 1e-9):.1f}/s)")
    for name, value in rows:
        print(f"  {name:<24} {value}")
    print("  per route (sent / completed / disconnected / problems):")
    for route, rc in sorted(tally.by_route.items()):
        problems = rc["lost"] + rc["malformed"] + rc["5xx"] + rc["other errors"]
        print(f"    {route:<20} {rc['sent']:>6} {rc['completed']:>6} {rc['disconnected']:>6} {problems:>6}")
    for outcome, examples in tally.examples.items():
        print(f"  first {outcome}:")
        for line in examples:
            print(f"    {line}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="soak the server with mixed requests and hang-ups")
    ap.add_argument("--url", help="an already running server on 127.0.0.1")
    ap.add_argument("--pid", type=int, help="its process id, for the RSS figures (with --url)")
    ap.add_argument("--cmd", default=f"{sys.executable} -m webapp.cli -t 1 -np 4 -c 2048 "
                                     "--embeddings --pooling mean",
                    help="command that starts the server (default: %(default)s)")
    ap.add_argument("--n", type=int, default=10_000, help="requests to send (default: %(default)s)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take")
    ap.add_argument("--max-seconds", type=float, default=4 * 3600.0, help="stop sending after this long")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds the slots get to become idle")
    ap.add_argument("--api-key", help="sent as Authorization: Bearer")
    args = ap.parse_args(argv)
    if args.n < 1 or args.clients < 1:
        ap.error("--n and --clients must be positive")
    if args.url and urlsplit(args.url).hostname not in ("127.0.0.1", "localhost"):
        ap.error("--url must be a server on 127.0.0.1")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    proc, url, pid = None, args.url, args.pid
    if not url:
        proc, url = start(args.cmd)
        pid = proc.pid
    try:
        n_slots, has_embeddings = _server_facts(url, headers)
        routes = [r for r in ROUTES if r != "embeddings" or has_embeddings]
        print(f"soak: {args.n} requests, {args.clients} clients ({round(args.clients / 3)} hanging up), "
              f"{url}, {n_slots} slots, routes: {', '.join(routes)}")
        mem_start = rss(pid)
        t0 = time.monotonic()
        tally = soak(url, args.n, args.clients, seed=args.seed, timeout=args.timeout,
                     max_seconds=args.max_seconds, headers=headers, routes=routes, n_slots=n_slots)
        seconds = time.monotonic() - t0
        busy, waited = settle(url, headers, args.settle)
        mem_end = rss(pid)
        report(tally, seconds, busy, waited, mem_start, mem_end, n_slots)
    finally:
        if proc is not None:
            stop(proc)
    c = tally.counts
    bad = c["lost"] + c["malformed"] + c["5xx"] + c["other errors"] + (busy or 0) + (busy is None)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
