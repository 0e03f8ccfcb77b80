"""Workloads for speculative decoding and the host-RAM prompt cache (issue #16), against our
server and optionally a reference llama-server started with the same flags.

    python -m bench.workloads edit  [--ref-bin /tmp/cxx-server/bin/llama-server]
    python -m bench.workloads chat  [--ref-bin ...]

``edit``: a repetitive-edit task (rewrite a ~300-token text with small changes, temperature
0, one stream): generated tokens per second without speculation and with ``--spec-type``
(default ngram-simple), for each server.

``chat``: more conversations than slots (default 8 conversations over 2 slots, 6 turns each,
round robin so that every turn finds its slot taken by another conversation): total prompt
tokens evaluated and mean time to first token with ``--cache-ram`` on and off.

Every server is started with ``-m MODEL -t 2 -c 4096`` plus the workload's flags, on a free
loopback port; the model defaults to ours (SmolLM2-135M-Instruct).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import requests

from .servers import start, stop

TEXT = (
    "The village of Amberfield lies at the foot of the northern hills, where the river bends "
    "twice before it reaches the sea. Every spring the farmers plant barley and oats in the "
    "long fields beside the water, and every autumn the whole village gathers to bring in the "
    "harvest. The old mill still turns on market days, grinding flour for the bakery on the "
    "square. Children walk to the school by the church, and in the evenings the families meet "
    "at the inn to share news from the town. In winter the roads are often closed by snow, so "
    "the villagers keep stores of wood, flour and salted fish. The doctor visits once a week "
    "from the town, riding a grey horse along the valley road. Travellers who come in summer "
    "say that Amberfield is the quietest place they have ever seen, and many of them return "
    "year after year to walk the hills and fish in the river.")
EDIT_INSTRUCTION = ("Rewrite the following text exactly, word for word, but write 'Oakridge' "
                    "instead of 'Amberfield' and 'lake' instead of 'sea'.\n\n")


def chat(url: str, messages: list[dict], max_tokens: int, stream: bool = True) -> dict:
    """One streamed chat completion: its text, time to first token, and the final timings."""
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": stream,
            "cache_prompt": True, "timings_per_token": False}
    t0 = time.perf_counter()
    ttft, text, timings, usage = None, [], {}, {}
    with requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=900) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            data = json.loads(line[6:])
            for choice in data.get("choices", []):
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    text.append(piece)
            timings = data.get("timings") or timings
            usage = data.get("usage") or usage
    return {"text": "".join(text), "ttft": ttft if ttft is not None else time.perf_counter() - t0,
            "timings": timings, "wall": time.perf_counter() - t0}


def run_edit(url: str, max_tokens: int, rounds: int) -> dict:
    messages = [{"role": "user", "content": EDIT_INSTRUCTION + TEXT}]
    best = None
    for _ in range(rounds):
        r = chat(url, messages, max_tokens)
        t = r["timings"]
        tps = t.get("predicted_per_second") or 0.0
        if best is None or tps > best["tok_s"]:
            best = {"tok_s": round(tps, 2), "predicted_n": t.get("predicted_n"),
                    "draft_n": t.get("draft_n", 0), "draft_n_accepted": t.get("draft_n_accepted", 0),
                    "text": r["text"]}
    return best


def run_chat(url: str, n_conv: int, n_turns: int, max_tokens: int) -> dict:
    convs = [[{"role": "system", "content": f"You are assistant number {i}. " + TEXT}] for i in range(n_conv)]
    questions = ["What is the village called?", "What do the farmers plant?", "Who visits weekly?",
                 "What happens in winter?", "Where do families meet?", "Why do travellers return?"]
    prompt_n, ttfts = 0, []
    for turn in range(n_turns):
        for conv in convs:
            conv.append({"role": "user", "content": questions[turn % len(questions)]})
            r = chat(url, conv, max_tokens)
            conv.append({"role": "assistant", "content": r["text"]})
            prompt_n += int(r["timings"].get("prompt_n", 0))
            ttfts.append(r["ttft"])
    return {"prompt_tokens_evaluated": prompt_n, "mean_ttft_ms": round(1000 * statistics.mean(ttfts), 1),
            "requests": len(ttfts)}


def server_cmd(binary: str, model: str, flags: list[str]) -> str:
    return " ".join([binary, "-m", model, "-t", "2", "-c", "4096", *flags])


def measure(cmd: str, fn) -> dict:
    proc, url = start(cmd)
    try:
        return fn(url)
    finally:
        stop(proc)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", choices=("edit", "chat"))
    ap.add_argument("--model", default=None, help="GGUF (default: the default model)")
    ap.add_argument("--ours", default=f"{sys.executable} -m webapp.cli",
                    help="command that starts our server (default: %(default)s)")
    ap.add_argument("--ref-bin", help="a llama-server binary to compare with")
    ap.add_argument("--spec", default="--spec-type ngram-simple --spec-ngram-simple-size-n 4 "
                                      "--spec-ngram-simple-size-m 16",
                    help="edit: the speculative flags (default: %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=0, help="default: 320 (edit), 32 (chat)")
    ap.add_argument("--rounds", type=int, default=2, help="edit: best of this many runs")
    ap.add_argument("--conversations", type=int, default=8)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--turns", type=int, default=6)
    args = ap.parse_args(argv)
    if args.model is None:
        from llama_lib import default_model_path
        args.model = default_model_path()
    servers = {"ours": args.ours}
    if args.ref_bin:
        servers["llama-server"] = args.ref_bin
    results: dict = {}
    if args.workload == "edit":
        n = args.max_tokens or 320
        for name, binary in servers.items():
            for label, flags in (("plain", []), ("spec", args.spec.split())):
                cmd = server_cmd(binary, args.model, ["-np", "1", *flags])
                results[f"{name}/{label}"] = measure(cmd, lambda url: run_edit(url, n, args.rounds))
                r = results[f"{name}/{label}"]
                print(f"{name:13s} {label:5s} {r['tok_s']:8.2f} tok/s  predicted {r['predicted_n']}  "
                      f"drafted {r['draft_n']} accepted {r['draft_n_accepted']}", flush=True)
        for name in servers:
            plain, spec = results[f"{name}/plain"], results[f"{name}/spec"]
            same = plain["text"] == spec["text"]
            print(f"{name}: speculation {spec['tok_s'] / max(plain['tok_s'], 1e-9):.2f}x, same text: {same}")
        if "llama-server" in servers:
            print(f"ours/llama-server with speculation: "
                  f"{results['ours/spec']['tok_s'] / max(results['llama-server/spec']['tok_s'], 1e-9):.2f}x")
    else:
        n = args.max_tokens or 32
        for name, binary in servers.items():
            for label, flags in (("cache-ram on", ["--cache-ram", "1024"]), ("cache-ram off", ["--cache-ram", "0"])):
                cmd = server_cmd(binary, args.model, ["-np", str(args.slots), *flags])
                r = measure(cmd, lambda url: run_chat(url, args.conversations, args.turns, n))
                results[f"{name}/{label}"] = r
                print(f"{name:13s} {label:13s} prompt tokens evaluated {r['prompt_tokens_evaluated']:7d}  "
                      f"mean TTFT {r['mean_ttft_ms']:8.1f} ms  ({r['requests']} requests)", flush=True)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "text"} for k, v in results.items()}))


if __name__ == "__main__":
    main()
