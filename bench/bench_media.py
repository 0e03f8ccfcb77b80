"""Images in the engine: the time to encode one, and what image traffic costs the other slots.

    python -m bench.bench_media [--mmproj FILE] [--threads 2] [--n-predict 128]

Starts our server with a projector (default: the tests' tiny random one, 32x32 images of 16
tokens, written to a temporary folder) and no embedding cache, so every image is encoded.
Reports:
- encode: the projector's mean time per image (``/metrics`` media_encode_seconds_total over
  media_encoded_total), and the mean latency of a one-token request with a new image;
- the decode speed (tokens/s, from each response's timings) of two text requests alone,
  then of the same two while two other clients send a new image every request, and as a
  control while they send text prompts of the same length (prompt evaluation costs the
  same; the difference is what the images themselves cost).
"""
from __future__ import annotations

import argparse
import base64
import os
import re
import sys
import tempfile
import threading
import time

import requests

from .servers import start, stop


def _metric(url: str, name: str) -> float:
    found = re.search(rf"^llamacpp:{name} (\S+)$", requests.get(url + "/metrics", timeout=30).text, re.M)
    return float(found.group(1)) if found else 0.0


def _image(i: int) -> str:
    from tests.mmproj import png
    data = png(32, 32, lambda x, y: ((x * 7 + i) % 256, (y * 5 + 3 * i) % 256, (i * 11) % 256))
    return base64.b64encode(data).decode()


def _image_request(url: str, marker: str, i: int) -> float:
    t0 = time.perf_counter()
    r = requests.post(url + "/completion", timeout=120, json={
        "prompt": {"prompt_string": f"Picture {i}: {marker} Caption:", "multimodal_data": [_image(i)]},
        "n_predict": 1, "cache_prompt": False})
    r.raise_for_status()
    return time.perf_counter() - t0


def _text_request(url: str, marker: str, i: int) -> float:
    """The image request's twin: as many prompt tokens, all text (the control)."""
    t0 = time.perf_counter()
    r = requests.post(url + "/completion", timeout=120, json={
        "prompt": f"Picture {i}:" + " red" * 16 + " Caption:", "n_predict": 1, "cache_prompt": False})
    r.raise_for_status()
    return time.perf_counter() - t0


def _text_speeds(url: str, n_predict: int, n: int = 2) -> list[float]:
    speeds: list[float] = [0.0] * n

    def one(k):
        r = requests.post(url + "/completion", timeout=600, json={
            "prompt": f"Story {k}: once upon a time", "n_predict": n_predict, "ignore_eos": True})
        speeds[k] = r.json()["timings"]["predicted_per_second"]

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return speeds


def run(url: str, n_predict: int) -> dict:
    marker = requests.get(url + "/props", timeout=30).json()["media_marker"]
    latencies = [_image_request(url, marker, 1000 + i) for i in range(8)]
    encode = _metric(url, "media_encode_seconds_total") / max(1.0, _metric(url, "media_encoded_total"))
    alone = _text_speeds(url, n_predict)
    busy, sent = _under_load(url, marker, n_predict, _image_request)
    control, sent_text = _under_load(url, marker, n_predict, _text_request)
    return {"encode_ms": encode * 1000, "image_request_ms": 1000 * sum(latencies) / len(latencies),
            "text_tps_alone": alone, "text_tps_with_images": busy, "images_during": sent,
            "text_tps_with_text": control, "texts_during": sent_text}


def _under_load(url: str, marker: str, n_predict: int, request) -> tuple[list[float], int]:
    """The two text requests' speeds while two other clients send ``request``s back to back."""
    stop_flag = threading.Event()
    sent = [0]

    def client(offset):
        i = offset
        while not stop_flag.is_set():
            request(url, marker, i)
            sent[0] += 1
            i += 2

    clients = [threading.Thread(target=client, args=(k,)) for k in range(2)]
    for c in clients:
        c.start()
    speeds = _text_speeds(url, n_predict)
    stop_flag.set()
    for c in clients:
        c.join()
    return speeds, sent[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mmproj", help="projector file (default: the tests' tiny one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-predict", type=int, default=128)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        mmproj = args.mmproj
        if mmproj is None:
            from tests.mmproj import vision_projector
            mmproj = vision_projector(os.path.join(tmp, "mmproj-tiny.gguf"))
        cmd = (f"{sys.executable} -m webapp.cli -t {args.threads} -np 4 -c 4096 --metrics "
               f"--mmproj {mmproj} --mmproj-cache-mib 0 --port {{port}}")
        proc, url = start(cmd)
        try:
            out = run(url, args.n_predict)
        finally:
            stop(proc)
    print(f"encode one image:            {out['encode_ms']:.2f} ms (projector)")
    print(f"one-token image request:     {out['image_request_ms']:.1f} ms")
    print(f"2 text requests alone:       {', '.join(f'{s:.1f}' for s in out['text_tps_alone'])} tok/s")
    print(f"  with image traffic:        {', '.join(f'{s:.1f}' for s in out['text_tps_with_images'])} tok/s"
          f" ({out['images_during']} one-token image requests meanwhile)")
    print(f"  with text traffic (control): {', '.join(f'{s:.1f}' for s in out['text_tps_with_text'])} tok/s"
          f" ({out['texts_during']} one-token text requests of the same length meanwhile)")


if __name__ == "__main__":
    main()
