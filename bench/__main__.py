"""Benchmark a llama-server-compatible server, optionally against a reference, in one run.

    python -m bench                              # start ours (-t 2 -np 8) and measure it
    python -m bench --url http://host:port       # measure a running server
    python -m bench --ref-cmd "llama-server -m M.gguf -t 2 -np 8 --port {port}"
                                                 # also start a reference and print ratios
    python -m bench --ceiling                    # add the raw ctypes decode ceiling

Servers are started on free loopback ports and stopped afterwards; {port} in a command is
replaced by the port chosen.
"""
from __future__ import annotations

import argparse
import os
import sys


from .loadgen import run_all
from .servers import start, stop


def measure(cmd: str | None, url: str | None, n_predict: int, levels) -> dict:
    if url:
        return run_all(url, n_predict, levels)
    proc, url = start(cmd)
    try:
        return run_all(url, n_predict, levels, pid=proc.pid)
    finally:
        stop(proc)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="llama-server benchmark")
    ap.add_argument("--url", help="measure an already running server")
    ap.add_argument("--cmd", default=f"{sys.executable} -m webapp.cli -t 2 -np 8 -c 8192",
                    help="command that starts our server (default: %(default)s)")
    ap.add_argument("--ref-cmd", help="command that starts a reference server to compare with")
    ap.add_argument("--n-predict", type=int, default=128)
    ap.add_argument("--levels", default="1,4,8", help="concurrency levels")
    ap.add_argument("--ceiling", action="store_true", help="also measure the raw ctypes ceiling")
    ap.add_argument("--threads", type=int, default=2, help="threads for the ceiling")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]

    results = {"ours": measure(args.cmd, args.url, args.n_predict, levels)}
    if args.ref_cmd:
        results["reference"] = measure(args.ref_cmd, None, args.n_predict, levels)
    if args.ceiling:
        from .ceiling import measure as ceiling
        c = ceiling(None, args.threads, max(levels), args.n_predict)
        results["ceiling"] = c
    _print(results, max(levels))


def _print(results: dict, top: int) -> None:
    ours = results["ours"]
    keys = list(ours)
    header = f"{'metric':>22} {'ours':>10}" + (f" {'reference':>10} {'ratio':>7}" if "reference" in results else "")
    print(header)
    for key in keys:
        line = f"{key:>22} {ours[key]:10.2f}" if ours[key] < 10 else f"{key:>22} {ours[key]:10.1f}"
        if "reference" in results and key in results["reference"]:
            ref = results["reference"][key]
            line += f" {ref:10.1f} {ours[key] / ref if ref else float('nan'):7.2f}"
        print(line)
    if "ceiling" in results:
        c = results["ceiling"]
        one, many = c["ceiling_1seq_tok_s"], c[f"ceiling_{top}seq_tok_s"]
        print(f"{'ceiling 1 seq':>22} {one:10.1f}   single-stream/ceiling = {ours['decode_tok_s'] / one:.2f}")
        print(f"{'ceiling ' + str(top) + ' seq':>22} {many:10.1f}   aggregate@{top}/ceiling = "
              f"{ours[f'agg_tok_s@{top}'] / many:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
