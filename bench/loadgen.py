"""Load generator for any llama-server-compatible base URL.

Measures single-stream decode tok/s (server timings and client side), prompt tok/s, time to
first token, aggregate tok/s at several concurrency levels, p50/p99 end-to-end latency, and
the server's RSS when its pid is known. Streaming clients are attached throughout, so the
cost of the HTTP side is part of every figure.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import statistics
import time

import requests

LONG_PROMPT = ("The history of the printing press begins in the fifteenth century, when "
               "movable type changed how knowledge spread across Europe. ") * 12
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how rainbows form.",
    "List some facts about the moon.",
    "Describe a walk through a forest in autumn.",
    "What makes a good cup of tea?",
    "Tell me about the history of bicycles.",
    "Why is the sky blue?",
    "Write a poem about the sea.",
]


def stream_once(url: str, prompt: str, n_predict: int, seed: int = 1, cache_prompt: bool = False,
                temperature: float = 0.8) -> dict:
    """One streamed request; temperature 0.8 runs the server's default sampler chain."""
    body = {"prompt": prompt, "n_predict": n_predict, "stream": True, "ignore_eos": True,
            "temperature": temperature, "seed": seed, "cache_prompt": cache_prompt}
    t0 = time.perf_counter()
    ttft = None
    n_chunks = 0
    final = None
    with requests.post(url + "/completion", json=body, stream=True, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: "):
                continue
            data = json.loads(line[6:])
            if data.get("content") and ttft is None:
                ttft = time.perf_counter() - t0
            n_chunks += 1
            if data.get("stop"):
                final = data
    total = time.perf_counter() - t0
    timings = (final or {}).get("timings", {})
    return {"ttft": ttft or total, "latency": total, "tokens": timings.get("predicted_n", 0),
            "server_decode_tps": timings.get("predicted_per_second", 0.0),
            "server_prompt_tps": timings.get("prompt_per_second", 0.0)}


def single_stream(url: str, n_predict: int, repeats: int = 5) -> dict:
    runs, greedy = [], []
    for i in range(repeats):     # interleaved, so drift in the machine's speed hits both alike
        runs.append(stream_once(url, PROMPTS[i % len(PROMPTS)], n_predict, seed=i))
        greedy.append(stream_once(url, PROMPTS[i % len(PROMPTS)], n_predict, temperature=0))
    client_tps = [r["tokens"] / max(1e-9, r["latency"] - r["ttft"]) for r in runs]
    chain = statistics.median(r["server_decode_tps"] for r in runs)
    plain = statistics.median(r["server_decode_tps"] for r in greedy)
    return {"decode_tok_s": chain,
            "decode_tok_s_client": statistics.median(client_tps),
            "decode_tok_s_greedy": plain,
            "chain/greedy": chain / plain if plain else 0.0,
            "ttft_ms": 1000 * statistics.median(r["ttft"] for r in runs)}


def prompt_speed(url: str, repeats: int = 3) -> dict:
    runs = [stream_once(url, LONG_PROMPT + f" ({i})", 1, cache_prompt=False) for i in range(repeats)]
    return {"prompt_tok_s": statistics.median(r["server_prompt_tps"] for r in runs),
            "ttft_long_prompt_ms": 1000 * statistics.median(r["ttft"] for r in runs)}


def concurrent(url: str, clients: int, n_predict: int, rounds: int = 2) -> dict:
    jobs = [(PROMPTS[i % len(PROMPTS)], i) for i in range(clients * rounds)]
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda j: stream_once(url, j[0], n_predict, seed=j[1]), jobs))
    wall = time.perf_counter() - t0
    lat = sorted(r["latency"] for r in results)
    return {f"agg_tok_s@{clients}": sum(r["tokens"] for r in results) / wall,
            f"p50_ms@{clients}": 1000 * lat[len(lat) // 2],
            f"p99_ms@{clients}": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            f"ttft_ms@{clients}": 1000 * statistics.median(r["ttft"] for r in results)}


def rss_mb(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_all(url: str, n_predict: int, levels=(1, 4, 8), pid: int | None = None) -> dict:
    stream_once(url, "warm up", 8)
    out = {}
    out.update(single_stream(url, n_predict))
    out.update(prompt_speed(url))
    for clients in levels:
        out.update(concurrent(url, clients, n_predict))
    rss = rss_mb(pid)
    if rss is not None:
        out["rss_mb"] = rss
    return out
