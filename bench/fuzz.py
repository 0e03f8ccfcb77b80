"""Fuzz the HTTP API with requests generated from its own OpenAPI document (schemathesis).

    python -m bench.fuzz                           # start a server, 500 examples per operation
    python -m bench.fuzz --url http://host:port    # fuzz a running server
    python -m bench.fuzz --examples 50 --modes positive --seed 1

Not in CI: ``tests/integration/test_fuzz.py`` runs the same check with a few examples.

For every operation of ``GET /openapi.json`` and every mode (``positive``: requests the
document accepts; ``negative``: requests it rejects: wrong types, missing fields, bodies that
are not JSON), hypothesis generates ``--examples`` requests, sent one at a time. Each answer
is checked:

- no 5xx, also none sent as an error event inside a 200 event stream. 501
  ``not_supported_error`` is not a failure: it is the documented answer of a feature the
  server was started without (``--props``, ``--metrics``...) or the model lacks (infill
  without FIM tokens); the default command turns those features on to reach their code;
- every other non-2xx answer is JSON in the error shape ``{"error": {"code": <its status>,
  "message": str, "type": str}}`` (``/health``'s documented 503 body excepted);
- it matches the document (status documented, content type, JSON Schema of the body:
  schemathesis' conformance checks);
- it arrives within ``--timeout`` seconds (streams included), else it counts as a hang.

Two more modes send what schemathesis never generates; the answer must be a 400 either way:
``surrogates`` appends a lone surrogate (``"\\udc80"``: valid JSON, not valid Unicode) to half
of the strings of positive bodies, ``deep`` sends one body nested past Python's recursion limit.

Afterwards the server must answer ``GET /health`` with 200 (and, when started here, still
be running). Failures are counted, not raised, so one run reports all of them; the first few
of each kind are printed as curl commands.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field

import requests

__all__ = ["fuzz", "Tally", "error_shape_problem", "main", "FEATURES"]

PROBLEMS = ("5xx", "shape violations", "document violations", "timeouts", "connection errors")
EXAMPLES_KEPT = 2        # per kind of problem, operation and mode
NOT_SUPPORTED = 501
# Every optional route family on, so that its code is reached: {tmp} becomes a new folder.
FEATURES = ("--embeddings", "--pooling", "mean", "--metrics", "--props", "--slot-save-path", "{tmp}")


@dataclass
class Tally:
    sent: int = 0
    by_status: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    healthy_after: bool | None = None
    seconds: float = 0.0
    seed: int = 0

    def problem(self, kind: str, text: str, where: str = "") -> None:
        self.counts[kind] += 1
        kept = self.examples.setdefault((kind, where), [])
        if len(kept) < EXAMPLES_KEPT:
            kept.append(text)

    @property
    def ok(self) -> bool:
        return not any(self.counts[k] for k in PROBLEMS) and self.healthy_after is not False

    def report(self) -> str:
        by_class = Counter()
        for status, n in self.by_status.items():
            by_class[f"{status // 100}xx"] += n
        classes = "  ".join(f"{c} {by_class[c]}" for c in sorted(by_class))
        statuses = "  ".join(f"{s} {self.by_status[s]}" for s in sorted(self.by_status))
        lines = [f"seed                 {self.seed}",
                 f"requests sent        {self.sent} in {self.seconds:.0f} s",
                 f"by status class      {classes or '-'}",
                 f"by status            {statuses or '-'}"]
        lines += [f"{kind:<20} {self.counts[kind]}" for kind in PROBLEMS]
        lines.append(f"healthy afterwards   {'yes' if self.healthy_after else 'NO'}")
        for (kind, where), texts in self.examples.items():
            lines += [f"\n--- {kind}, {where}:\n{text}" for text in texts]
        return "\n".join(lines)


def error_shape_problem(status: int, content: bytes, path: str) -> str | None:
    """What is wrong with a non-2xx answer's body, or None when it has the error shape."""
    try:
        body = json.loads(content)
    except ValueError:
        return "the body is not JSON"
    if path in ("/health", "/v1/health") and status == 503 and isinstance(body, dict) \
            and body.get("status") == "no slot available":
        return None     # documented: fail_on_no_slot answers the Health shape
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "no 'error' object"
    code, message, type_ = error.get("code"), error.get("message"), error.get("type")
    if isinstance(code, bool) or code != status:
        return f"error.code {code!r} is not the status {status}"
    if not isinstance(message, str) or not isinstance(type_, str):
        return "error.message and error.type must be strings"
    return None


def _stream_server_errors(content: bytes) -> list[dict]:
    """The error events with a 5xx code inside an event stream."""
    out = []
    for line in content.decode("utf-8", "replace").splitlines():
        if not line.startswith("data: {"):
            continue
        try:
            event = json.loads(line[6:])
        except ValueError:
            continue
        error = event.get("error") if isinstance(event, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        if isinstance(code, int) and code >= 500 and code != NOT_SUPPORTED:
            out.append(error)
    return out


def _describe(case, url: str, response=None, note: str = "", mode: str = "") -> str:
    text = case.as_curl_command(base_url=url)
    if MODES.get(mode, (None, None))[1] is not None:
        text += f"\n(the body sent was this one changed by mode {mode!r})"
    if response is not None:
        text += f"\n-> {response.status_code}: {response.content[:300]!r}"
    return text + (f"\n{note}" if note else "")


def _with_lone_surrogates(body):
    """Half of the strings (values, not keys) get a lone surrogate: also changing the few that
    must be one of some names (a message's role) would only ever test that check."""
    rng = random.Random(zlib.crc32(repr(body).encode("utf-8", "surrogatepass")))

    def poison(value):
        if isinstance(value, str):
            return value + "\udc80" if rng.random() < 0.5 else value
        if isinstance(value, list):
            return [poison(v) for v in value]
        if isinstance(value, dict):
            return {k: poison(v) for k, v in value.items()}
        return value
    return poison(body)


# mode -> (schemathesis' generation mode, what replaces the JSON body: a value or raw bytes)
MODES = {
    "positive": ("positive", None),
    "negative": ("negative", None),
    "surrogates": ("positive", _with_lone_surrogates),
    "deep": ("positive", lambda _body: b"[" * 100_000),
}


def _send(case, url: str, session, timeout: float, mutate):
    if mutate is None:
        return case.call(base_url=url, session=session, timeout=timeout)
    # sent here: schemathesis re-validates a changed body, and cannot encode lone surrogates
    from schemathesis import Response
    kwargs = case.as_transport_kwargs(base_url=url)
    body = mutate(kwargs.pop("json", None))
    kwargs["data" if isinstance(body, bytes) else "json"] = body
    return Response.from_requests(session.request(**kwargs, timeout=timeout), verify=True)


def _check_one(case, url: str, session, timeout: float, tally: Tally, doc_checks,
               mode: str = "positive") -> bool:
    """Send one case and record what is wrong with the answer; False when the server is gone.
    A mode that replaces the body is not checked against the document."""
    from schemathesis.core.failures import Failure, FailureGroup

    mutate = MODES[mode][1]

    def describe(response=None, note: str = "") -> str:
        return _describe(case, url, response, note, mode)

    def problem(kind: str, text: str) -> None:
        tally.problem(kind, text, f"{case.operation.label} ({mode})")

    try:
        response = _send(case, url, session, timeout, mutate)
    except requests.Timeout:
        problem("timeouts", describe(note=f"no answer within {timeout} s"))
        return True
    except requests.ConnectionError as exc:
        problem("connection errors", describe(note=repr(exc)[:300]))
        return _alive(url)
    tally.sent += 1
    status = response.status_code
    tally.by_status[status] += 1
    if response.stream_cut_short:
        problem("timeouts", describe(response, f"the stream ran past {timeout} s"))
    if status >= 500 and status != NOT_SUPPORTED:
        problem("5xx", describe(response))
    elif status >= 300:
        wrong = error_shape_problem(status, response.content, case.operation.path)
        if wrong:
            problem("shape violations", describe(response, wrong))
    elif "event-stream" in (response.headers.get("content-type") or [""])[0]:
        for error in _stream_server_errors(response.content):
            problem("5xx", describe(response, f"error event in a stream: {error}"))
    if mutate is not None:
        return True
    try:
        case.validate_response(response, checks=doc_checks)
    except (Failure, FailureGroup) as exc:
        problem("document violations", describe(response, str(exc)[:1500]))
    return True


def _alive(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=10).status_code < 500
    except requests.RequestException:
        return False


def fuzz(url: str, examples: int = 500, modes=("positive", "negative"), timeout: float = 60.0,
         seed: int | None = None, operations: str | None = None, log=None) -> Tally:
    """Fuzz the server at ``url`` from its /openapi.json; ``operations``: only those whose
    label (e.g. ``POST /completion``) contains this text."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fix_seed
    from hypothesis.errors import Unsatisfiable
    from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                                   status_code_conformance)

    doc_checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    tally = Tally(seed=seed if seed is not None else random.randrange(2**32))
    config = schemathesis.Config.from_dict({"max-stream-events": 1_000_000})
    schema = schemathesis.openapi.from_url(url + "/openapi.json", config=config, timeout=30)
    session = requests.Session()
    t0 = time.monotonic()
    alive = True
    for result in schema.get_all_operations():
        op = result.ok()
        if operations and operations not in op.label:
            continue
        for mode in modes:
            if not alive:
                break

            generation, mutate = MODES[mode]
            if mutate is not None and not len(op.body):
                continue

            @fix_seed(zlib.crc32(f"{tally.seed} {op.label} {mode}".encode()))   # aliases differ
            @settings(max_examples=1 if mode == "deep" else examples, deadline=None, database=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck), print_blob=False)
            @given(case=op.as_strategy(generation_mode=schemathesis.GenerationMode(generation)))
            def run(case):
                nonlocal alive
                if alive:
                    alive = _check_one(case, url, session, timeout, tally, doc_checks, mode)

            before = Counter(tally.by_status)
            try:
                run()
            except Unsatisfiable:   # nothing to negate (no parameters, no body)
                pass
            if log:
                got = tally.by_status - before
                log(f"{op.label:<28} {mode:<9} " + " ".join(f"{c}: {got[c]:<4}" for c in sorted(got))
                    + (f"  problems so far: {dict(tally.counts)}" if tally.counts else ""))
    tally.seconds = time.monotonic() - t0
    tally.healthy_after = _healthy(url)
    return tally


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=10).status_code == 200
    except requests.RequestException:
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="fuzz the server from its OpenAPI document")
    ap.add_argument("--url", help="fuzz an already running server")
    ap.add_argument("--cmd", default=f"{sys.executable} -m webapp.cli -t 1 -np 2 -c 1024 -n 16 "
                                     + " ".join(FEATURES),
                    help="command that starts the server; {tmp}: a new temporary folder "
                         "(default: %(default)s)")
    ap.add_argument("--examples", type=int, default=500, help="requests per operation and mode")
    ap.add_argument("--modes", default=",".join(MODES), help="of %(default)s")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one answer may take")
    ap.add_argument("--seed", type=int, help="hypothesis seed (default: random, printed)")
    ap.add_argument("--operations", help="only operations whose label contains this, e.g. 'POST /infill'")
    args = ap.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())

    def run(url: str) -> Tally:
        return fuzz(url, args.examples, modes, args.timeout, args.seed, args.operations,
                    log=lambda line: print(line, flush=True))

    if args.url:
        tally = run(args.url)
    else:
        from .servers import start, stop
        with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
            proc, url = start(args.cmd.replace("{tmp}", tmp))
            try:
                tally = run(url)
                if proc.poll() is not None:
                    tally.problem("connection errors", f"the server exited with {proc.returncode}")
            finally:
                stop(proc)
    print(tally.report())
    return 0 if tally.ok else 1


if __name__ == "__main__":
    sys.exit(main())
