"""The raw ceiling: the same model decoded greedily in a tight ctypes loop, no server.

One sequence per step, and N sequences per step (one token each), as the engine would batch
them. Prints tokens per second.

    python -m bench.ceiling [-m MODEL] [-t THREADS] [--seqs 8] [--tokens 128]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import llama_lib
from llama_lib import Batch, Context, ContextParams, Model

PROMPT = "Once upon a time, in a land far away, there lived"


def decode_ceiling(model: Model, n_seqs: int, n_tokens: int, threads: int, n_ctx: int = 4096) -> float:
    """Greedy tok/s summed over n_seqs sequences decoded together, one token per step."""
    ctx = Context(model, ContextParams(n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_seq_max=n_seqs,
                                       n_threads=threads, n_threads_batch=threads))
    try:
        prompt = model.vocab.tokenize(PROMPT)
        batch = Batch(max(512, n_seqs))
        for s in range(n_seqs):
            batch.add(prompt, 0, s, True)
        ctx.decode(batch)
        next_tokens = [int(np.argmax(ctx.logits(len(prompt) * (s + 1) - 1))) for s in range(n_seqs)]
        pos = len(prompt)
        t0 = time.perf_counter()
        for _ in range(n_tokens):
            batch.clear()
            for s in range(n_seqs):
                batch.add([next_tokens[s]], pos, s, True)
            ctx.decode(batch)
            next_tokens = [int(np.argmax(ctx.logits(s))) for s in range(n_seqs)]
            pos += 1
        elapsed = time.perf_counter() - t0
        return n_seqs * n_tokens / elapsed
    finally:
        ctx.close()


def measure(model_path: str | None, threads: int, seqs: int, tokens: int) -> dict:
    llama_lib.load()
    model = Model(model_path or llama_lib.default_model_path())
    try:
        return {"ceiling_1seq_tok_s": decode_ceiling(model, 1, tokens, threads),
                f"ceiling_{seqs}seq_tok_s": decode_ceiling(model, seqs, tokens, threads)}
    finally:
        model.close()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--seqs", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args(argv)
    for key, value in measure(args.model, args.threads, args.seqs, args.tokens).items():
        print(f"{key:>24}: {value:8.1f}")


if __name__ == "__main__":
    main()
