"""Aggregate tok/s of one replica against several behind haproxy (docs/scaling.md).

    python -m bench.replicas                      # 8 streaming clients, three set-ups, twice
    python -m bench.replicas --replicas 3 --clients 8 --n-predict 128 --repeats 2

Set-ups, measured in turn (and the turns repeated, so drift in the machine's speed hits
each alike): ``direct``, one replica (``--one-args``) with the clients on its port;
``haproxy-1``, the same replica behind haproxy (deploy/haproxy/haproxy.cfg), which isolates
the router's cost; ``haproxy-N``, N replicas (``--each-args``) behind haproxy. Clients send
no X-Session-Id, so haproxy balances them by least connections. Every server is on
loopback; on a machine smaller than N replicas need, they share its cores, and the
difference is overhead, not the speed-up separate machines would give.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


from deploy.haproxy.render import render

from .loadgen import concurrent, stream_once
from .servers import free_port, start, stop, wait_healthy

def start_haproxy(binary: str, replica_urls: list[str], workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cfg = workdir / f"haproxy-{port}.cfg"
    cfg.write_text(render([u.removeprefix("http://") for u in replica_urls], bind=f"127.0.0.1:{port}",
                          stats_bind=f"127.0.0.1:{free_port()}"))
    proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url, 30, f"haproxy (config: {cfg})")
    return proc, url


def measure(url: str, clients: int, n_predict: int, rounds: int) -> dict:
    stream_once(url, "warm up", 8)
    return concurrent(url, clients, n_predict, rounds)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="one replica against several behind haproxy")
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--n-predict", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2, help="requests per client in each measurement")
    ap.add_argument("--repeats", type=int, default=2, help="times each set-up is measured")
    ap.add_argument("--one-args", default="-t 1 -np 8 -c 8192", help="the single replica's flags")
    ap.add_argument("--each-args", default="-t 1 -np 3 -c 3072", help="each of the N replicas' flags")
    ap.add_argument("--haproxy", default=shutil.which("haproxy"), help="haproxy binary")
    args = ap.parse_args(argv)
    if not args.haproxy:
        raise SystemExit("haproxy is not installed (apt-get install haproxy)")
    server = f"{sys.executable} -m webapp.cli"
    key_n = f"haproxy-{args.replicas}"
    runs: dict[str, list[dict]] = {"direct": [], "haproxy-1": [], key_n: []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(args.repeats):
            proc, url = start(f"{server} {args.one_args}")
            try:
                runs["direct"].append(measure(url, args.clients, args.n_predict, args.rounds))
                lb, lb_url = start_haproxy(args.haproxy, [url], work)
                try:
                    runs["haproxy-1"].append(measure(lb_url, args.clients, args.n_predict, args.rounds))
                finally:
                    stop(lb)
            finally:
                stop(proc)
            group = [start(f"{server} {args.each_args}") for _ in range(args.replicas)]
            try:
                lb, lb_url = start_haproxy(args.haproxy, [u for _, u in group], work)
                try:
                    runs[key_n].append(measure(lb_url, args.clients, args.n_predict, args.rounds))
                finally:
                    stop(lb)
            finally:
                for p, _ in group:
                    stop(p)
    _print(runs, args)


def _print(runs: dict[str, list[dict]], args) -> None:
    c = args.clients
    print(f"{args.clients} streaming clients, n_predict {args.n_predict}, {args.rounds} requests each, "
          f"{args.repeats} repeat(s); single replica: {args.one_args}; each of {args.replicas}: {args.each_args}")
    print(f"{'set-up':>10} {'agg tok/s':>10} {'(runs)':>18} {'p50 ms':>8} {'ttft ms':>8}")
    median = {}
    for name, results in runs.items():
        tps = [r[f"agg_tok_s@{c}"] for r in results]
        median[name] = statistics.median(tps)
        print(f"{name:>10} {median[name]:>10.1f} {' / '.join(f'{x:.1f}' for x in tps):>18} "
              f"{statistics.median(r[f'p50_ms@{c}'] for r in results):>8.0f} "
              f"{statistics.median(r[f'ttft_ms@{c}'] for r in results):>8.0f}")
    base = median["direct"]
    for name in list(runs)[1:]:
        print(f"{name} / direct: {median[name] / base:.3f}")


if __name__ == "__main__":
    main()
