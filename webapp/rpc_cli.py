"""``llama-rpc-server``: serve this machine's ggml devices to a llama-server over the network.

A worker needs only this package: start it on each machine that lends its memory and
compute, then point the server at them with ``--rpc HOST:PORT,...``. The ggml RPC protocol
has no authentication or encryption: bind it to loopback or a private network only.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="llama-rpc-server",
        description="Serve this machine's ggml devices (CPU or GPUs) to llama-server --rpc.")
    ap.add_argument("-H", "--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    ap.add_argument("-p", "--port", type=int, default=50052, help="port (default: %(default)s)")
    ap.add_argument("-t", "--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="threads for the CPU device (default: %(default)s)")
    ap.add_argument("-d", "--device", help="comma-separated devices to serve (default: every "
                    "GPU, else the CPU)")
    ap.add_argument("-c", "--cache", action="store_true",
                    help="keep a local cache of the tensors the server sends (in --cache-dir)")
    ap.add_argument("--cache-dir", help="the tensor cache folder (default: $LLAMA_CACHE/rpc, "
                    "else $XDG_CACHE_HOME or ~/.cache, /llama.cpp/rpc); implies --cache")
    ap.add_argument("--lib-path", default=os.environ.get("LLAMA_CPP_LIB_PATH"),
                    help="folder holding libllama and libggml (default: llama-cpp-python's build)")
    return ap


def _cache_dir(args) -> str | None:
    if args.cache_dir:
        path = Path(args.cache_dir)
    elif args.cache:
        base = os.environ.get("LLAMA_CACHE") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "llama.cpp")
        path = Path(base) / "rpc"
    else:
        return None
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1:
        print("error: --threads must be >= 1", file=sys.stderr)
        return 2
    import llama_lib
    from llama_lib import backends
    if args.host not in LOOPBACK:
        print(f"WARNING: binding to {args.host}: the ggml RPC protocol has no authentication "
              "or encryption; anyone who can reach this port can use this machine's devices "
              "and read what they hold. Use it on a trusted network only.", file=sys.stderr)
    try:
        llama_lib.load(args.lib_path)
        devices = [d.strip() for d in args.device.split(",")] if args.device else None
        endpoint = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
        cache = _cache_dir(args)
        # the serving loop runs inside ggml: let the default signal handlers end it
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        print(f"llama-rpc-server: serving on {endpoint}"
              + (f", tensor cache in {cache}" if cache else ""), file=sys.stderr, flush=True)
        backends.start_rpc_server(endpoint, cache, args.threads, devices)
    except (llama_lib.LlamaError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
