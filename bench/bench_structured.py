"""Structured output: JSON Schema -> GBNF conversion time over the corpus (both converters),
the grammar's own cost per token, and, with a server, constrained vs unconstrained decoding.

    python -m bench.bench_structured                  # also start our server (-np 1) to measure
    python -m bench.bench_structured --url URL        # measure a running server instead
    python -m bench.bench_structured --no-server      # conversion and grammar costs only

Decode speed is the server's own ``timings.predicted_per_second`` (prompt time excluded),
summed over the same prompts with and without ``json_schema``; the target ratio is >= 0.7.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests

from .servers import start

ROOT = Path(__file__).resolve().parent.parent
CORPUS = sorted((ROOT / "tests" / "schemas").glob("*.json"))
DECODE_SCHEMAS = ("person", "order", "weather_report", "recipe", "product_catalog", "event")


def _best(fn, schemas, repeat: int) -> float:
    fn(schemas[0])   # imports and first-call set-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for schema in schemas:
            fn(schema)
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_converters(repeat: int) -> dict:
    from sampling import json_schema
    schemas = [json.loads(p.read_text()) for p in CORPUS]
    n = len(schemas)
    out = {impl: _best(json_schema._converter(impl), schemas, repeat)
           for impl in ("python", "cython")}
    out["check"] = _best(json_schema.check_schema, schemas, repeat)

    def cold(schema):
        json_schema._cached.cache_clear()
        json_schema.schema_to_grammar(schema)
    out["cold"] = _best(cold, schemas, repeat)
    out["cached"] = _best(json_schema.schema_to_grammar, schemas, repeat)
    for key, label in (("python", "convert, interpreted"), ("cython", "convert, Cython"),
                       ("check", "meta-schema check"), ("cold", "schema_to_grammar, first time"),
                       ("cached", "schema_to_grammar, repeated")):
        print(f"{label:31} {out[key] * 1000:7.1f} ms for {n} corpus schemas "
              f"({out[key] / n * 1000:.3f} ms each, best of {repeat})")
    print(f"  Cython converter speed-up: {out['python'] / out['cython']:.1f}x")
    return out


def bench_grammar_calls() -> None:
    """Cost of allows / constrain along one document of a typical schema (no model needed)."""
    import llama_lib
    from sampling.grammar import GrammarConstraint
    from sampling.json_schema import schema_to_grammar
    model = llama_lib.Model(llama_lib.default_model_path(), llama_lib.ModelParams(vocab_only=True))
    vocab = model.vocab
    schema = json.loads((ROOT / "tests" / "schemas" / "order.json").read_text())
    doc = ('{"order_id": "123e4567-e89b-12d3-a456-426614174000", "items": [{"sku": "ABC-1234", '
           '"quantity": 2, "price": 9.5}], "total": 19}')
    logits = np.random.default_rng(0).normal(size=vocab.n_tokens).astype(np.float32)
    tokens = vocab.tokenize(doc, add_special=False, parse_special=False)
    allows, constrain = [], []
    with GrammarConstraint(vocab, schema_to_grammar(schema)) as g:
        for t in tokens:
            t0 = time.perf_counter()
            g.constrain(logits)
            t1 = time.perf_counter()
            g.allows(t)
            allows.append(time.perf_counter() - t1)
            constrain.append(t1 - t0)
            g.accept(t)
    print(f"grammar along a {len(tokens)}-token order document: allows "
          f"{statistics.median(allows) * 1e6:.0f} us, constrain (all {vocab.n_tokens} tokens) "
          f"{statistics.median(constrain) * 1000:.1f} ms (medians)")
    model.close()


def start_server() -> tuple[subprocess.Popen, str]:
    return start(f"{sys.executable} -m webapp.cli -np 1 -c 2048")



def _decode(url: str, body: dict) -> tuple[int, float]:
    r = requests.post(url + "/completion", json=body, timeout=600)
    r.raise_for_status()
    j = r.json()
    timings = j.get("timings") or {}
    n = int(j.get("tokens_predicted", timings.get("predicted_n", 0)))
    ms = float(timings.get("predicted_ms", 0.0))
    return n, ms


def bench_decode(url: str, seeds: int, n_predict: int) -> dict:
    free, plain = [0, 0.0], [0, 0.0]
    for name in DECODE_SCHEMAS:
        schema = json.loads((ROOT / "tests" / "schemas" / f"{name}.json").read_text())
        prompt = f"{schema.get('description', '')}\nJSON:"
        for seed in range(seeds):
            base = {"prompt": prompt, "n_predict": n_predict, "temperature": 0.8, "seed": seed,
                    "cache_prompt": False}
            n, ms = _decode(url, dict(base, json_schema=schema))
            free[0] += n
            free[1] += ms
            n, ms = _decode(url, dict(base, n_predict=max(n, 8), ignore_eos=True))
            plain[0] += n
            plain[1] += ms
    constrained = free[0] / (free[1] / 1000)
    unconstrained = plain[0] / (plain[1] / 1000)
    print(f"decode, {len(DECODE_SCHEMAS)} prompts x {seeds} seeds, one slot:")
    print(f"  unconstrained  {unconstrained:7.1f} tok/s  ({plain[0]} tokens)")
    print(f"  json_schema    {constrained:7.1f} tok/s  ({free[0]} tokens)")
    print(f"  ratio          {constrained / unconstrained:7.2f}  (target >= 0.70)")
    return {"constrained": constrained, "unconstrained": unconstrained}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running server to measure (default: start one)")
    ap.add_argument("--no-server", action="store_true", help="skip the decode comparison")
    ap.add_argument("--repeat", type=int, default=20, help="conversion rounds (best is shown)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per decode prompt")
    ap.add_argument("--n-predict", type=int, default=256)
    args = ap.parse_args(argv)
    bench_converters(args.repeat)
    bench_grammar_calls()
    if args.no_server:
        return
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server()
    try:
        bench_decode(url.rstrip("/"), args.seeds, args.n_predict)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
