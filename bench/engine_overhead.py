"""The engine's own cost per step: the real Engine over a context whose decode costs a fixed
time (0 ms: Python alone; 10 ms: a GPU decoding a large batch), with the real vocabulary and
sampler chains, at 1 / 8 / 64 slots.

    python -m bench.engine_overhead                       # bare engine, the table below
    python -m bench.engine_overhead --slots 64 --decode-ms 10 --http   # + 64 streaming clients

Per configuration: steps per second and the Python time per step (wall time minus the
decode time, divided by the steps). ``--http`` also runs the same load through the HTTP layer
(the gevent server and the OpenAI route, 64 streaming ``/v1/completions`` clients on the same
process) and reports its steps per second as a fraction of the bare engine's.

The fake context keeps one (capacity, n_vocab) float32 logits matrix of fixed random rows
(EOS at -inf, so every request runs to its n_predict); ``decode`` sleeps (releasing the GIL,
as llama_decode does) and does no KV bookkeeping.
"""
from __future__ import annotations

import argparse
import json
import time
import numpy as np


def _os_sleep():
    """The OS's sleep, as llama_decode blocks the engine's thread: under gevent's patching
    time.sleep would run a hub of the engine thread's own."""
    try:
        from gevent import monkey
        return monkey.get_original("time", "sleep")
    except ImportError:
        return time.sleep


class TimedContext:
    """A context whose decode takes ``decode_ms`` and whose logits are fixed rows."""

    def __init__(self, n_vocab: int, n_slots: int, n_ctx_slot: int, decode_ms: float, eog, seed: int = 0):
        self.n_vocab = n_vocab
        self.n_seq_max = n_slots
        self.n_ctx = n_ctx_slot * n_slots
        self.n_ctx_seq = n_ctx_slot
        self.n_batch = self.n_ubatch = 2048
        self.kv_unified = False
        self.can_shift = True
        self.pooling = 0
        rng = np.random.default_rng(seed)
        rows = max(n_slots, 64)
        self._logits = rng.standard_normal((rows, n_vocab)).astype(np.float32) * 3
        self._logits[:, list(eog)] = -np.inf
        self.decode_s = decode_ms / 1000
        self._sleep = _os_sleep()
        self.n_decodes = 0
        self._rows = np.zeros(2048, dtype=np.int64)

    def decode(self, batch) -> None:
        if self.decode_s:
            self._sleep(self.decode_s)
        self.n_decodes += 1

    def logits(self, i: int) -> np.ndarray:
        return self._logits[i % len(self._logits)]

    def logits_rows(self, indices) -> tuple[np.ndarray, np.ndarray]:
        return self._logits, np.asarray(indices, dtype=np.int64) % len(self._logits)

    def seq_rm(self, *a) -> bool:
        return True

    def seq_add(self, *a) -> None:
        pass

    def seq_cp(self, *a) -> None:
        pass

    def seq_div(self, *a) -> None:
        pass

    def set_embeddings(self, on) -> None:
        pass

    def clear(self) -> None:
        pass


def load_vocab():
    import llama_lib
    llama_lib.load(None)
    model = llama_lib.Model(llama_lib.default_model_path(), llama_lib.ModelParams(n_gpu_layers=0))
    return model


WAIT_FOR_WEB = True      # EngineConfig.wait_for_web (--no-wait: as on a GPU server)
SAMPLE_THREADS = 1       # EngineConfig.sample_threads (--sample-threads; the server's choice:
                         # 1 on CPU, up to 4 when offloaded)
SAMPLE_ASYNC = False     # EngineConfig.sample_async (--no-wait, unless --sync-draw)


def make_engine(model, n_slots: int, decode_ms: float, n_ctx_slot: int = 1024):
    from llama_lib.engine import Engine, EngineConfig
    from sampling import make_sampler
    vocab = model.vocab
    eog = [t for t in range(vocab.n_tokens) if vocab.is_eog(t)]
    ctx = TimedContext(vocab.n_tokens, n_slots, n_ctx_slot, decode_ms, eog)
    engine = Engine(model, ctx, EngineConfig(n_slots=n_slots, n_batch=2048, wait_for_web=WAIT_FOR_WEB,
                                             sample_threads=SAMPLE_THREADS, sample_async=SAMPLE_ASYNC),
                    make_sampler)
    return engine, ctx


def sampling_params(chain: str):
    from sampling import SamplingParams
    from sampling.params import parse_sampling_params
    body = {"temperature": 0} if chain == "greedy" else {"seed": 1}
    return parse_sampling_params(body, SamplingParams())


def run_bare(model, n_slots: int, decode_ms: float, chain: str, n_predict: int) -> dict:
    """The engine with its production bridge (gevent: the process is patched as the server
    is), each request's events read by a greenlet as a route would, without HTTP."""
    import gevent
    from llama_lib.engine import GenerationOptions, Request
    engine, ctx = make_engine(model, n_slots, decode_ms)
    engine.start()
    try:
        params = sampling_params(chain)
        reqs = [Request(prompt_tokens=list(range(100 + i, 132 + i)), sampling=params,
                        options=GenerationOptions(n_predict=n_predict, cache_prompt=False))
                for i in range(n_slots)]
        for req in reqs:    # as the routes do (webapp/completion.new_request): not on the engine thread
            req.sampler = engine.make_sampler(req.sampling, req.prompt_tokens)
        t0 = time.perf_counter()
        steps0 = engine.n_decode_steps
        engine.submit_many(reqs)
        gevent.joinall([gevent.spawn(_drain, req) for req in reqs], raise_error=True)
        wall = time.perf_counter() - t0
        steps = engine.n_decode_steps - steps0
    finally:
        engine.stop()
    return _figures(wall, steps, decode_ms)


def _drain(req, timeout: float = 600) -> None:
    from llama_lib.engine import FinalEvent
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in req.mailbox.get(0.5):
            if isinstance(ev, FinalEvent):
                return
    raise TimeoutError(f"request {req.id} did not finish")


def _figures(wall: float, steps: int, decode_ms: float) -> dict:
    python_ms = max(0.0, wall * 1000 - steps * decode_ms) / max(1, steps)
    return {"steps": steps, "wall_s": round(wall, 3), "steps_per_s": round(steps / wall, 1),
            "python_ms_per_step": round(python_ms, 3)}


def run_http(model, n_slots: int, decode_ms: float, n_predict: int) -> dict:
    """The same load through the web app: a gevent WSGI server on a free port in this process
    and ``n_slots`` streaming OpenAI clients (greenlets of the same hub, as the server's own
    greenlets would be served by a real client's socket)."""
    import gevent
    import requests
    from gevent.pywsgi import WSGIServer

    from webapp import create_app
    from webapp.cli import parse_settings
    settings = parse_settings(["-np", str(n_slots), "--no-warmup", "--no-webui"], environ={})
    engine, ctx = make_engine(model, n_slots, decode_ms)
    app = create_app(settings, engine)
    engine.start()
    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    url = f"http://127.0.0.1:{server.server_port}/v1/completions"
    body = {"prompt": "hello", "max_tokens": n_predict, "stream": True, "seed": 1,
            "ignore_eos": False}

    def client():
        with requests.post(url, json=body, stream=True, timeout=600) as r:
            for _line in r.iter_lines():
                pass

    try:
        steps0 = engine.n_decode_steps
        t0 = time.perf_counter()
        gevent.joinall([gevent.spawn(client) for _ in range(n_slots)], raise_error=True)
        wall = time.perf_counter() - t0
        steps = engine.n_decode_steps - steps0
    finally:
        server.stop()
        engine.stop()
    return _figures(wall, steps, decode_ms)


def main(argv=None) -> None:
    from gevent import monkey
    if not monkey.is_module_patched("threading"):
        raise SystemExit("run as `python -m bench.engine_overhead` (it patches with gevent first, "
                         "as the server does)")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", default="1,8,64")
    ap.add_argument("--decode-ms", default="0,10")
    ap.add_argument("--chains", default="greedy,default")
    ap.add_argument("--n-predict", type=int, default=200)
    ap.add_argument("--http", action="store_true", help="also run the HTTP layer with streaming clients")
    ap.add_argument("--no-wait", action="store_true",
                    help="as the server runs with the model offloaded (-ngl > 0): the engine does not "
                         "wait for the web side between steps, and draws on worker threads while it "
                         "handles the tokens drawn first")
    ap.add_argument("--sync-draw", action="store_true",
                    help="with --no-wait: draw every token before handling any (the CPU policy's way)")
    ap.add_argument("--sample-threads", type=int, default=None,
                    help="threads drawing each step's tokens (default: 1; with --no-wait, as the "
                         "server does when offloaded: min(4, CPUs))")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    global WAIT_FOR_WEB, SAMPLE_THREADS, SAMPLE_ASYNC
    WAIT_FOR_WEB = not args.no_wait
    SAMPLE_ASYNC = args.no_wait and not args.sync_draw
    from webapp.state import _sample_threads
    SAMPLE_THREADS = (args.sample_threads if args.sample_threads is not None
                      else _sample_threads(offloaded=args.no_wait))
    print(f"wait for the web side: {WAIT_FOR_WEB}, sampling threads: {SAMPLE_THREADS}, "
          f"drawing while handling tokens: {SAMPLE_ASYNC}")
    model = load_vocab()
    rows = []
    for decode_ms in [float(x) for x in args.decode_ms.split(",")]:
        for n_slots in [int(x) for x in args.slots.split(",")]:
            for chain in args.chains.split(","):
                r = run_bare(model, n_slots, decode_ms, chain, args.n_predict)
                rows.append({"mode": "engine", "decode_ms": decode_ms, "slots": n_slots, "chain": chain, **r})
                if not args.json:
                    print(f"engine  decode {decode_ms:4.0f} ms  {n_slots:3d} slots  {chain:8s}  "
                          f"{r['steps_per_s']:8.1f} steps/s  {r['python_ms_per_step']:7.3f} ms Python/step")
            if args.http:
                bare = next(r for r in rows if r["mode"] == "engine" and r["decode_ms"] == decode_ms
                            and r["slots"] == n_slots and r["chain"] == "default")
                r = run_http(model, n_slots, decode_ms, args.n_predict)
                r["of_bare"] = round(r["steps_per_s"] / bare["steps_per_s"], 3)
                rows.append({"mode": "http", "decode_ms": decode_ms, "slots": n_slots, "chain": "default", **r})
                if not args.json:
                    print(f"http    decode {decode_ms:4.0f} ms  {n_slots:3d} slots  default   "
                          f"{r['steps_per_s']:8.1f} steps/s  {r['python_ms_per_step']:7.3f} ms Python/step  "
                          f"({100 * r['of_bare']:.0f}% of the bare engine)")
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    from gevent import monkey
    monkey.patch_all()          # as the server runs: the engine's bridge is the gevent one
    main()
