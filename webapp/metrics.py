"""What the engine reports about requests: counters and latency histograms for ``/metrics``,
and each slot's last request for ``/slots``.

``EngineObserver`` is set as ``Engine.observer``; the engine calls ``on_admit``,
``on_token`` and ``on_finish`` on its own thread, between decodes, so each does a few integer
additions and at most one ``bisect`` on plain Python objects. Nothing here touches
prometheus_client on the hot path: ``snapshot()`` (run on the engine thread through
``engine.call`` so that a scrape never sees half an update) copies the numbers, and
``MetricsCollector`` turns a snapshot into Prometheus metric families at scrape time.
HTTP counts (endpoint, status) live in ``HttpCounts``, updated by an ``after_request`` hook
on the hub.

Besides our ``llamacpp:*`` series, the collector serves the gauges the Gateway API Inference
Extension's Endpoint Picker reads from every replica, under vLLM's names, types and labels
(``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``
and its older name ``vllm:gpu_cache_usage_perc``, ``vllm:lora_requests_info``), computed from
the same snapshot as ours (docs/scaling.md).
"""
from __future__ import annotations

import bisect
import os
import time
from collections import defaultdict

from llama_lib.engine import FinishReason, Status

__all__ = ["EngineObserver", "Histogram", "HttpCounts", "MetricsCollector"]

# seconds; queue wait, time to first token and end-to-end latency share one set of bounds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
INTER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """Prometheus-style buckets (``le``: value <= bound) as plain counts; the last is +Inf."""
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def copy(self) -> "Histogram":
        out = Histogram(self.bounds)
        out.counts = list(self.counts)
        out.sum = self.sum
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for bound, n in zip(self.bounds + (float("inf"),), self.counts):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out


class EngineObserver:
    """Engine-thread hooks. Only the engine thread mutates this object."""

    def __init__(self):
        self.engine = None
        # seed counters
        self.prompt_tokens = 0           # evaluated, i.e. excluding cached ones
        self.prompt_seconds = 0.0
        self.prompt_tokens_cached = 0
        self.predicted_tokens = 0
        self.predicted_seconds = 0.0
        self.n_tokens_max = 0
        # since the last scrape (the seed's throughput "bucket")
        self.bucket = [0, 0.0, 0, 0.0]   # prompt tokens, prompt s, predicted tokens, predicted s
        # beyond the seed
        self.admitted = 0
        self.finished: dict[str, int] = defaultdict(int)   # finish reason -> requests
        self.cancelled = 0               # aborted by the client (waiting or running)
        self.queue_wait = Histogram(LATENCY_BUCKETS)
        self.ttft = Histogram(LATENCY_BUCKETS)
        self.inter_token = Histogram(INTER_TOKEN_BUCKETS)
        self.e2e = Histogram(LATENCY_BUCKETS)
        self._live: dict[int, list[float]] = {}     # request id -> [t_first_token, t_last_token]
        self.last_request: dict[int, object] = {}   # slot id -> the slot's current/last Request
        self.last_final: dict[int, object] = {}     # slot id -> FinalEvent of its last request

    def bind(self, engine) -> None:
        self.engine = engine
        engine.observer = self

    # --- hooks (engine thread) ---------------------------------------------------------
    def on_admit(self, req) -> None:
        now = time.perf_counter()
        self.admitted += 1
        self.prompt_tokens_cached += req.n_cached
        self.queue_wait.observe(now - req.t_arrival)
        self._live[req.id] = [0.0, 0.0]
        self.last_request[req.slot_id] = req
        self.last_final.pop(req.slot_id, None)

    def on_token(self, req) -> None:
        live = self._live.get(req.id)
        if live is None:
            return
        now = time.perf_counter()
        if live[0] == 0.0:
            live[0] = now
            self.ttft.observe(now - req.t_arrival)
            slot = self.engine.scheduler.slots[req.slot_id] if self.engine is not None else None
            if slot is not None:
                self._add_prompt(slot.n_prompt_evaluated, slot.t_prompt_done - slot.t_start)
        else:
            self.inter_token.observe(now - live[1])
        live[1] = now
        self.predicted_tokens += 1
        self.bucket[2] += 1

    def on_finish(self, req, final) -> None:
        if final.status is Status.ABORTED and not final.error:
            self.cancelled += 1
        live = self._live.pop(req.id, None)
        if live is None:             # never admitted: cancelled or rejected while waiting
            return
        now = time.perf_counter()
        self.finished[FinishReason.openai(final.status) or final.status.value] += 1
        self.e2e.observe(now - req.t_arrival)
        if live[0] == 0.0:           # no token came out: the prompt is counted here
            self._add_prompt(final.n_evaluated, final.timings.get("prompt_ms", 0.0) / 1000)
        elif live[1] > live[0]:
            self.predicted_seconds += live[1] - live[0]
            self.bucket[3] += live[1] - live[0]
        self.n_tokens_max = max(self.n_tokens_max, len(req.prompt_tokens) + req.n_generated)
        if req.slot_id >= 0:
            self.last_final[req.slot_id] = final

    def _add_prompt(self, n: int, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.prompt_tokens += n
        self.prompt_seconds += seconds
        self.bucket[0] += n
        self.bucket[1] += seconds

    # --- scrape (engine thread, through engine.call) -------------------------------------
    def snapshot(self, engine, reset_bucket: bool = True) -> dict:
        sched = engine.scheduler
        n_cache = sum(len(s.cache_tokens) for s in sched.slots)
        bucket = list(self.bucket)
        if reset_bucket:
            self.bucket = [0, 0.0, 0, 0.0]
        return {
            "prompt_tokens": self.prompt_tokens, "prompt_seconds": self.prompt_seconds,
            "prompt_tokens_cached": self.prompt_tokens_cached,
            "predicted_tokens": self.predicted_tokens, "predicted_seconds": self.predicted_seconds,
            "n_decode": engine.n_decode_steps,
            "n_busy_slots": engine.n_busy_slot_steps,
            "n_tokens_max": self.n_tokens_max,
            "prompt_tps": bucket[0] / bucket[1] if bucket[1] > 0 else 0.0,
            "predicted_tps": bucket[2] / bucket[3] if bucket[3] > 0 else 0.0,
            "kv_tokens": n_cache, "kv_ratio": n_cache / engine.ctx.n_ctx if engine.ctx.n_ctx else 0.0,
            "processing": sched.n_processing, "deferred": len(sched.waiting),
            "lora_active": [_adapter_name(a.path) for a, scale in zip(engine.lora_adapters, engine.lora_scales)
                            if scale != 0.0],
            "lora_loaded": len(engine.lora_adapters),
            "admitted": self.admitted, "finished": dict(self.finished), "cancelled": self.cancelled,
            "queue_wait": self.queue_wait.copy(), "ttft": self.ttft.copy(),
            "inter_token": self.inter_token.copy(), "e2e": self.e2e.copy(),
            **_engine_extras(engine),
            **_media_counts(engine),
        }


def _media_counts(engine) -> dict:
    """--mmproj: projector runs, images served from the embedding LRU, encode time."""
    media = getattr(engine, "media", None)
    return {"media_encoded": media.n_encoded if media else 0,
            "media_cache_hits": media.n_cache_hits if media else 0,
            "media_encode_seconds": media.encode_seconds if media else 0.0}


def _engine_extras(engine) -> dict:
    """The prompt cache's and speculative decoding's numbers (zeros when they are off)."""
    cache = getattr(engine, "prompt_cache", None)
    stats = cache.cache.stats() if cache is not None else {}
    return {"prompt_cache_hits": stats.get("prompt_cache_hits", 0),
            "prompt_cache_tokens_restored": stats.get("prompt_cache_tokens_restored", 0),
            "prompt_cache_bytes": stats.get("prompt_cache_bytes", 0),
            "prompt_cache_entries": stats.get("prompt_cache_entries", 0),
            "draft_tokens": getattr(engine, "n_draft_tokens", 0),
            "draft_tokens_accepted": getattr(engine, "n_draft_accepted", 0)}


class HttpCounts:
    """Requests by (endpoint, status); updated on the hub only."""

    def __init__(self):
        self.counts: dict[tuple[str, str], int] = defaultdict(int)

    def add(self, endpoint: str, status: int) -> None:
        self.counts[(endpoint, str(status))] += 1


# name, help, snapshot key: the seed's metrics keep their exact names and help text
_COUNTERS = [
    ("prompt_tokens_total", "Number of prompt tokens processed.", "prompt_tokens"),
    ("prompt_seconds_total", "Prompt process time", "prompt_seconds"),
    ("prompt_tokens_cached_total", "Number of prompt tokens reused from the cache", "prompt_tokens_cached"),
    ("tokens_predicted_total", "Number of generation tokens processed.", "predicted_tokens"),
    ("tokens_predicted_seconds_total", "Predict process time", "predicted_seconds"),
    ("n_decode_total", "Total number of llama_decode() calls", "n_decode"),
    ("requests_admitted_total", "Requests that got a slot", "admitted"),
    ("requests_cancelled_total", "Requests cancelled by their client (disconnect)", "cancelled"),
    ("prompt_cache_hits_total", "Prompts restored from the host-RAM prompt cache (--cache-ram)", "prompt_cache_hits"),
    ("prompt_cache_tokens_restored_total", "Prompt tokens reused from states restored from the host-RAM prompt cache", "prompt_cache_tokens_restored"),
    ("draft_tokens_total", "Speculative decoding: draft tokens proposed for verification", "draft_tokens"),
    ("draft_tokens_accepted_total", "Speculative decoding: draft tokens the target model accepted", "draft_tokens_accepted"),
    ("media_encoded_total", "Images and audio chunks encoded by the multimodal projector (--mmproj)", "media_encoded"),
    ("media_cache_hits_total", "Images and audio chunks whose embeddings came from the host-RAM cache (--mmproj-cache-mib)", "media_cache_hits"),
    ("media_encode_seconds_total", "Time spent encoding images and audio with the projector", "media_encode_seconds"),
]
_GAUGES = [
    ("prompt_tokens_seconds", "Average prompt throughput in tokens/s.", "prompt_tps"),
    ("predicted_tokens_seconds", "Average generation throughput in tokens/s.", "predicted_tps"),
    ("kv_cache_usage_ratio", "KV-cache usage. 1 means 100 percent usage.", "kv_ratio"),
    ("kv_cache_tokens", "KV-cache tokens.", "kv_tokens"),
    ("requests_processing", "Number of request processing.", "processing"),
    ("requests_deferred", "Number of request deferred.", "deferred"),
    ("n_tokens_max", "Largest observed sequence length (prompt + generation)", "n_tokens_max"),
    ("prompt_cache_bytes", "Bytes of host RAM held by the prompt cache", "prompt_cache_bytes"),
    ("prompt_cache_prompts", "Prompts held by the prompt cache", "prompt_cache_entries"),
]
_HISTOGRAMS = [
    ("queue_wait_seconds", "Time from arrival to getting a slot", "queue_wait"),
    ("time_to_first_token_seconds", "Time from arrival to the first generated token", "ttft"),
    ("inter_token_latency_seconds", "Time between consecutive generated tokens of a request", "inter_token"),
    ("request_latency_seconds", "Time from arrival to the end of an admitted request", "e2e"),
]
PREFIX = "llamacpp:"

# vLLM's names, help texts and labels (vllm/v1/metrics/loggers.py), read by the inference
# extension's Endpoint Picker; each takes its value from the snapshot key named last.
VLLM_PREFIX = "vllm:"
_VLLM_GAUGES = [
    ("num_requests_running", "Number of requests in model execution batches.", "processing"),
    ("num_requests_waiting", "Number of requests waiting to be processed.", "deferred"),
    ("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", "kv_ratio"),
    ("gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", "kv_ratio"),
]
_VLLM_LABELS = ["model_name", "engine"]


def _adapter_name(path: str) -> str:
    """An adapter's name in ``vllm:lora_requests_info``: its file name without ``.gguf``
    (commas would split the comma-separated label value, so they become ``_``)."""
    name = os.path.basename(path)
    if name.endswith(".gguf"):
        name = name[:-len(".gguf")]
    return name.replace(",", "_")


class MetricsCollector:
    """A prometheus_client collector over a snapshot function and the HTTP counts."""

    def __init__(self, snapshot_fn, http: HttpCounts, model_name: str = ""):
        self._snapshot_fn = snapshot_fn
        self._http = http
        self._model_name = model_name

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        snap = self._snapshot_fn()
        for name, help_, key in _COUNTERS:
            yield CounterMetricFamily(PREFIX + name, help_, value=snap[key])
        for name, help_, key in _GAUGES:
            yield GaugeMetricFamily(PREFIX + name, help_, value=snap[key])
        busy = GaugeMetricFamily(PREFIX + "n_busy_slots_per_decode",
                                 "Average number of busy slots per llama_decode() call",
                                 value=snap["n_busy_slots"] / max(1, snap["n_decode"]))
        yield busy
        finished = CounterMetricFamily(PREFIX + "requests_finished_total",
                                       "Admitted requests that ended, by finish reason", labels=["reason"])
        for reason, n in sorted(snap["finished"].items()):
            finished.add_metric([reason], n)
        yield finished
        for name, help_, key in _HISTOGRAMS:
            hist = snap[key]
            yield HistogramMetricFamily(PREFIX + name, help_, buckets=hist.cumulative(), sum_value=hist.sum)
        http = CounterMetricFamily(PREFIX + "http_requests_total", "HTTP requests by endpoint and status",
                                   labels=["endpoint", "status"])
        for (endpoint, status), n in sorted(self._http.counts.items()):
            http.add_metric([endpoint, status], n)
        yield http
        yield from self._vllm(snap)

    def _vllm(self, snap: dict):
        """vLLM's gauges for the Endpoint Picker. ``vllm:lora_requests_info`` carries its
        information in labels and, as in vLLM, the time of the reading as its value (the
        picker keeps the series with the latest value). Adapters here are applied to the whole
        context (``POST /lora-adapters``), not chosen per request: every adapter with a
        non-zero scale serves each running (and will serve each waiting) request, and all
        loaded adapters can be active at once, so ``max_lora`` is the number loaded."""
        from prometheus_client.core import GaugeMetricFamily
        labels = [self._model_name, "0"]
        for name, help_, key in _VLLM_GAUGES:
            family = GaugeMetricFamily(VLLM_PREFIX + name, help_, labels=_VLLM_LABELS)
            family.add_metric(labels, snap[key])
            yield family
        adapters = ",".join(snap["lora_active"])
        lora = GaugeMetricFamily(VLLM_PREFIX + "lora_requests_info", "Running stats on lora requests.",
                                 labels=["max_lora", "waiting_lora_adapters", "running_lora_adapters"])
        lora.add_metric([str(snap["lora_loaded"]), adapters if snap["deferred"] else "",
                         adapters if snap["processing"] else ""], time.time())
        yield lora
