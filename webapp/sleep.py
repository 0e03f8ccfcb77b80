"""Sleep mode (``--sleep-idle-seconds N``): free the model after N idle seconds and load it
again for the next request that needs it, as llama-server does.

Idle means: no HTTP request holds the engine, nothing waits or runs in it, for N seconds. A
request holds the engine from its ``state.ready_engine()`` call until its answer is written
(a stream to its last byte; the production server's handler releases it). ``GET /health``,
``/props``, ``/models`` and ``/metrics`` do not call ``ready_engine()``: they neither wake
the model nor reset the timer (llama-server's README, "Sleeping on Idle").

Asleep, ``state.engine`` is None and the Engine is gone: its loop stopped, its context, model
and LoRA adapters freed. ``/health`` answers 200, ``/props`` answers from ``ModelFacts`` with
``is_sleeping`` true, ``/metrics`` shows the numbers as they stood (the throughput gauges
report their last window once, then zero, as llama-server's cached metrics do).

Every transition runs on the hub, one at a time, its blocking part (stopping the loop and
freeing the model; building the engine) on gevent's thread pool so that other greenlets keep
being served. Falling asleep runs in the watcher greenlet; waking runs in a greenlet of its
own, started by the first request that needs the engine; that request and every one arriving
meanwhile wait for it. The new engine gets the old one's LoRA scales (``POST
/lora-adapters``) and its decode counters (``/metrics`` counters never go back); the KV cache
and the slots' cached prompts are lost, as in llama-server. A reload that fails stops the
server with exit status 1 (llama-server aborts).
"""
from __future__ import annotations

import logging
import time

from .state import ERROR, READY, STOPPING

__all__ = ["SleepMode", "HOLD_KEY"]

logger = logging.getLogger(__name__)

HOLD_KEY = "llama.holds_engine"   # set in a request's WSGI environ while it holds the engine
POLL_S = 0.25


class SleepMode:
    """Owned by the production server (webapp/server.py); ``state.sleep`` points to it."""

    def __init__(self, state, idle_seconds: int, on_failure):
        self.state = state
        self.idle_seconds = idle_seconds
        self.asleep = False
        self.failure: str | None = None   # why a reload failed (the server then exits 1)
        self._on_failure = on_failure
        self._holds = 0
        self._last_active = time.monotonic()
        self._transition = None           # gevent Event, set when the transition under way ends
        self._frozen: dict | None = None  # /metrics numbers at the moment of falling asleep
        self._carry: dict = {}            # what the next engine inherits from the last one

    # --- the request side (hub) ------------------------------------------------------------
    def wake(self) -> None:
        """Hold the engine for the current request; if the model sleeps, load it and wait."""
        self._hold()
        self._last_active = time.monotonic()
        import gevent
        while True:
            if self._transition is not None:
                self._transition.wait()
                continue
            if not self.asleep or self.failure or self.state.status == STOPPING:
                return         # ready_engine() then answers for a failure or a shutdown
            self._begin()
            gevent.spawn(self._wake_up)

    def _hold(self) -> None:
        from flask import has_request_context, request
        if not has_request_context():
            return
        environ = request.environ
        if not environ.get(HOLD_KEY):
            environ[HOLD_KEY] = True
            self._holds += 1

    def release(self, environ) -> None:
        """The request's answer is written (the server's handler calls this for every one)."""
        if environ is not None and environ.pop(HOLD_KEY, False):
            self._holds -= 1
            self._last_active = time.monotonic()

    def metrics_snapshot(self) -> dict:
        """/metrics' numbers, without waking the model."""
        from .completion import call_engine
        observer = self.state.observer
        while self._transition is not None:   # never ask an engine that is being stopped
            self._transition.wait()
        self.state.check_ready()
        if not self.asleep:
            return call_engine(self.state.engine, lambda e: observer.snapshot(e))
        # no engine thread now: the observer is ours to read and reset
        bucket, observer.bucket = observer.bucket, [0, 0.0, 0, 0.0]
        return dict(self._frozen,
                    prompt_tps=bucket[0] / bucket[1] if bucket[1] > 0 else 0.0,
                    predicted_tps=bucket[2] / bucket[3] if bucket[3] > 0 else 0.0)

    # --- the watcher (a greenlet of the server) ----------------------------------------------
    def watch(self) -> None:
        import gevent
        while self.state.status != STOPPING:
            gevent.sleep(POLL_S)
            if self.asleep or self._transition is not None:
                continue
            engine = self.state.engine
            now = time.monotonic()
            if self.state.status != READY or engine is None or engine.failure \
                    or self._holds or engine.n_processing or engine.n_waiting:
                self._last_active = now
            elif now - self._last_active >= self.idle_seconds:
                self._fall_asleep(engine)

    def _begin(self) -> None:
        import gevent.event
        self._transition = gevent.event.Event()

    def _end(self) -> None:
        done, self._transition = self._transition, None
        done.set()

    def _fall_asleep(self, engine) -> None:
        import gevent
        from .completion import call_engine
        state, observer = self.state, self.state.observer
        self._begin()
        try:
            try:
                state.model_facts()    # kept for /props and /models while asleep
                frozen = call_engine(engine, lambda e: observer.snapshot(e, reset_bucket=False))
            except Exception as exc:   # the engine is not answering: stay awake, try later
                logger.warning("not going to sleep: %s", exc)
                self._last_active = time.monotonic()
                return
            # the model is unloaded: nothing cached, running or waiting
            self._frozen = dict(frozen, kv_tokens=0, kv_ratio=0.0, processing=0, deferred=0)
            self._carry = {"lora_scales": list(engine.lora_scales),
                           "n_decode_steps": engine.n_decode_steps,
                           "n_busy_slot_steps": engine.n_busy_slot_steps}
            logger.info("sleeping after %d s idle: unloading the model", self.idle_seconds)
            state.engine = None
            self.asleep = True
            observer.engine = None
            gevent.get_hub().threadpool.spawn(_unload, engine).get()
            logger.info("asleep: the model is unloaded")
        finally:
            self._end()

    def _wake_up(self) -> None:
        import gevent
        from .state import build_engine
        state = self.state
        logger.info("waking up: loading the model")
        t0 = time.monotonic()
        pool, engine = gevent.get_hub().threadpool, None
        try:
            engine = pool.spawn(build_engine, state.settings, state.bridge).get()
            self._inherit(engine)
        except Exception as exc:
            if engine is not None:
                pool.spawn(_unload, engine).get()
            self.failure = f"failed to reload the model after sleeping: {exc}"
            logger.error("%s", self.failure)
            state.error, state.status = self.failure, ERROR
            self._end()
            self._on_failure(self.failure)
            return
        if state.status == STOPPING:   # shut down while loading: nobody will use it
            pool.spawn(_unload, engine).get()
            self._end()
            return
        state.install(engine)
        self.asleep = False
        self._frozen = None
        self._last_active = time.monotonic()
        logger.info("awake: the model is loaded again (%.1f s)", time.monotonic() - t0)
        self._end()

    def _inherit(self, engine) -> None:
        carry = self._carry
        engine.n_decode_steps = carry.get("n_decode_steps", 0)
        engine.n_busy_slot_steps = carry.get("n_busy_slot_steps", 0)
        scales = carry.get("lora_scales")
        if scales is not None and scales != engine.lora_scales:
            from .completion import call_engine
            call_engine(engine, lambda e: e.set_lora(scales))


def _unload(engine) -> None:
    """Stop the loop, then free the context and the model (which frees its adapters):
    children before parents. On a pool thread."""
    engine.stop(10)
    if getattr(engine, "media", None) is not None:      # the projector refers to the model
        engine.media.mtmd.close()
    if getattr(engine, "speculator", None) is not None:  # a draft model's context and weights
        engine.speculator.close()
    engine.ctx.close()
    engine.model.close()
    # glibc keeps freed memory otherwise: RSS asleep crept from 90 to 150 MB over 14
    # sleep/wake cycles without this, and stayed at 78-80 MB with it
    from llama_lib import malloc_trim
    malloc_trim()
