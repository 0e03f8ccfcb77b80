"""Greedy decode, local vs through one ggml RPC worker on loopback (not in CI).

    python -m bench.rpc [--n-predict 128] [--threads 1]

Starts `llama-rpc-server` on a free loopback port, then the server twice (all layers on
the local CPU; all layers on the worker with `--rpc ... -ngl 99`), each with the same thread
count, and prints single-stream greedy decode tok/s and the ratio. On one machine the
worker shares the CPU: the ratio measures the RPC round trips, not a speed-up.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import requests

from .servers import free_port, start, stop

PROMPT = "Building a website can be done in 10 simple steps:"


def greedy_tok_s(url: str, n_predict: int, repeats: int = 3) -> float:
    best = 0.0
    requests.post(url + "/completion", json={"prompt": PROMPT, "n_predict": 8}, timeout=300)
    for _ in range(repeats):
        r = requests.post(url + "/completion", timeout=600, json={
            "prompt": PROMPT, "n_predict": n_predict, "temperature": 0, "ignore_eos": True,
            "cache_prompt": False}).json()
        best = max(best, r["timings"]["predicted_per_second"])
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-predict", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    port = free_port()
    scripts = os.path.dirname(sys.executable)
    worker = subprocess.Popen([os.path.join(scripts, "llama-rpc-server"), "-p", str(port),
                               "-t", str(args.threads)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(2)
    base = f"{sys.executable} -m webapp.cli -np 1 -c 1024 -t {args.threads}"
    results = {}
    try:
        for name, cmd in (("local", base), ("rpc", f"{base} --rpc 127.0.0.1:{port} -ngl 99")):
            proc, url = start(cmd)
            try:
                results[name] = greedy_tok_s(url, args.n_predict)
            finally:
                stop(proc)
    finally:
        worker.kill()
        worker.wait()
    print(f"{'greedy decode tok/s':>24} {'local':>8} {'rpc':>8} {'rpc/local':>10}")
    print(f"{'':>24} {results['local']:8.1f} {results['rpc']:8.1f} {results['rpc'] / results['local']:10.2f}")


if __name__ == "__main__":
    main()
