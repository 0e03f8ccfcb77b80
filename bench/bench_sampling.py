"""Per-token cost of the sampler chain: ours (Cython) against libllama's, same stages.

The logits are the default model's own, one vector per position of a short text (decoded
once up front), so top_k and the cuts see a real distribution. Each token runs the whole
chain over the full vocabulary, draws, and accepts the token (penalty history).

    python -m bench.bench_sampling [-m MODEL] [--tokens 2000] [--repeats 3]

The chain is llama-server's default order with every stage doing work: penalties (last 64,
repeat 1.1), top_k 40, tail-free 0.95, typical 0.95, top_p 0.95, min_p 0.05, temperature
0.8. libllama dropped tail-free, so its chain runs the others. Its time includes laying the
candidates out as llama_token_data records, which any caller of llama_sampler_apply pays;
the cost of that alone is printed too.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import llama_lib
from llama_lib import Batch, Context, ContextParams, Model
from llama_lib.native_sampler import TOKEN_DATA_DTYPE, NativeSampler
from sampling import SamplingParams, make_sampler

TEXT = ("The old lighthouse keeper climbed the spiral stairs every evening, counting the "
        "steps as his father had taught him. At the top he trimmed the wick, polished the "
        "great lens, and watched the ships slide past the rocks in the failing light. Some "
        "nights the fog rolled in so thick that he could not see his own hands, and then he "
        "rang the bell by the hour until the sky turned grey again.")

PARAMS = SamplingParams(
    top_k=40, tfs_z=0.95, typical_p=0.95, top_p=0.95, min_p=0.05, temperature=0.8,
    repeat_penalty=1.1, repeat_last_n=64, seed=1234,
    samplers=("penalties", "top_k", "tfs_z", "typical_p", "top_p", "min_p", "temperature"))


def model_logits(model: Model) -> np.ndarray:
    """One logits vector per token of TEXT, from the model itself."""
    tokens = model.vocab.tokenize(TEXT)
    with Context(model, ContextParams(n_ctx=512, n_batch=512, n_ubatch=512)) as ctx:
        batch = Batch(512)
        batch.add_all_outputs(tokens, 0, 0)
        ctx.decode(batch)
        return np.stack([ctx.logits(i).copy() for i in range(len(tokens))])


def native_chain(n_vocab: int, seed: int) -> NativeSampler:
    return NativeSampler.chain([
        NativeSampler.penalties(64, 1.1, 0.0, 0.0, n_vocab), NativeSampler.top_k(40),
        NativeSampler.typical(0.95, 1), NativeSampler.top_p(0.95, 1),
        NativeSampler.min_p(0.05, 1), NativeSampler.temp(0.8), NativeSampler.dist(seed)])


def time_ours(logits: np.ndarray, n_tokens: int, params: SamplingParams, prompt) -> float:
    sampler = make_sampler(params, logits.shape[1], prompt)
    t0 = time.perf_counter()
    for i in range(n_tokens):
        sampler.accept(sampler.sample(logits[i % len(logits)]))
    return (time.perf_counter() - t0) / n_tokens


def time_native(logits: np.ndarray, n_tokens: int, prompt) -> float:
    chain = native_chain(logits.shape[1], 1234)
    for t in prompt:
        chain.accept(t)
    ids = np.arange(logits.shape[1], dtype=np.int32)
    t0 = time.perf_counter()
    for i in range(n_tokens):
        chain.accept(chain.apply(ids, logits[i % len(logits)]).token)
    elapsed = (time.perf_counter() - t0) / n_tokens
    chain.close()
    return elapsed


def time_layout(logits: np.ndarray, n_tokens: int) -> float:
    """What NativeSampler.apply spends building the records, without libllama."""
    ids = np.arange(logits.shape[1], dtype=np.int32)
    t0 = time.perf_counter()
    for i in range(n_tokens):
        records = np.empty(len(ids), dtype=TOKEN_DATA_DTYPE)
        records["id"] = ids
        records["logit"] = logits[i % len(logits)]
        records["p"] = 0.0
    return (time.perf_counter() - t0) / n_tokens


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model")
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = ap.parse_args(argv)

    llama_lib.load()
    model = Model(args.model or llama_lib.default_model_path())
    try:
        logits = model_logits(model)
        prompt = model.vocab.tokenize(TEXT)[-64:]
    finally:
        model.close()
    n = args.tokens

    def best(fn, *a):
        return min(fn(*a) for _ in range(args.repeats)) * 1e3

    ours = best(time_ours, logits, n, PARAMS, prompt)
    native = best(time_native, logits, n, prompt)
    layout = best(time_layout, logits, n)
    greedy = best(time_ours, logits, n, PARAMS.with_(temperature=0.0, repeat_penalty=1.0), ())
    no_tfs = best(time_ours, logits, n, PARAMS.with_(tfs_z=1.0), prompt)
    print(f"vocabulary {logits.shape[1]}, {n} tokens per run, best of {args.repeats}")
    print(f"default chain, ours (Cython)            {ours:7.4f} ms/token")
    print(f"default chain without tail-free, ours   {no_tfs:7.4f} ms/token")
    print(f"default chain, libllama (no tail-free)  {native:7.4f} ms/token"
          f"   (of which record layout {layout:.4f})")
    print(f"ratio ours / libllama                   {ours / native:7.3f}"
          f"   (without tail-free {no_tfs / native:.3f}; against libllama's sampling alone "
          f"{no_tfs / max(native - layout, 1e-9):.3f})")
    print(f"greedy, ours                            {greedy:7.4f} ms/token")


if __name__ == "__main__":
    main()
