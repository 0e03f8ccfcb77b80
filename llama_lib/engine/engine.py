"""The engine: one loop on a real OS thread driving the scheduler over one shared context.

    plan = schedule() -> KV edits -> fill batch -> decode -> sample -> update -> publish

Requests, aborts and control tasks arrive through an inbox (a deque plus a real-lock
signal); results leave through each request's mailbox and the bridge. Nothing here blocks
on a client.
"""
from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass

import numpy as np

from ..batch import Batch
from ..errors import DecodeError, LlamaError
from .bridge import Mailbox, RealSignal, make_bridge, start_real_thread
from .events import FinalEvent, TokenEvent
from .request import Request, Status
from .scheduler import Plan, QueueFull, Scheduler
from .text import IncrementalText, StopStrings, limit_reached

__all__ = ["Engine", "EngineConfig", "QueueFull"]

logger = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    n_slots: int = 1
    n_batch: int = 2048
    cont_batching: bool = True
    context_shift: bool = True
    max_queue: int = 0
    n_predict: int = -1               # server-wide default/limit (-n)
    special: bool = False             # render special tokens in output text
    grp_attn_n: int = 1               # self-extend group factor (1: off)
    grp_attn_w: int = 512             # self-extend window


class _SlotText:
    """Per-slot text state: the incremental decoder, stop strings, the published text."""

    def __init__(self, stops: list[str]):
        self.decoder = IncrementalText()
        self.stops = StopStrings(stops)


class Engine:
    def __init__(self, model, context, config: EngineConfig, sampler_factory=None, bridge=None,
                 observer=None):
        from sampling import make_sampler
        self.model = model
        self.ctx = context
        self.vocab = model.vocab
        self.config = config
        self.n_ctx_slot = context.n_ctx_seq if context.n_ctx_seq else context.n_ctx // config.n_slots
        group_attn = (config.grp_attn_n, config.grp_attn_w) if config.grp_attn_n > 1 else None
        if group_attn and not context.can_shift:
            raise ValueError("self-extend needs a KV cache whose positions can be edited; this model's cannot")
        # as llama-server: self-extend replaces context shift
        self.scheduler = Scheduler(config.n_slots, self.n_ctx_slot, min(config.n_batch, context.n_batch),
                                   cont_batching=config.cont_batching,
                                   context_shift=config.context_shift and context.can_shift and not group_attn,
                                   max_queue=config.max_queue, group_attn=group_attn)
        self.lora_adapters: list = []     # LoraAdapter objects loaded with the model (--lora)
        self.lora_scales: list[float] = []
        self.sampler_factory = sampler_factory or make_sampler
        self.bridge = bridge or make_bridge()
        self.observer = observer          # metrics hooks: on_admit/on_token/on_finish
        self._batch = Batch(max(self.scheduler.n_batch, config.n_slots))
        self._inbox: collections.deque = collections.deque()
        self._wake = RealSignal()
        self._stopped = RealSignal()
        self._running = False
        self._texts: dict[int, _SlotText] = {}
        self._embedding_mode = False
        self._eog = np.array([t for t in range(self.vocab.n_tokens) if self.vocab.is_eog(t)],
                             dtype=np.int64)
        self.n_waiting = 0                # read by /health and /metrics from other threads
        self.n_processing = 0
        self.n_decode_steps = 0
        self.n_busy_slot_steps = 0        # sum over decodes of the slots in the batch (/metrics)

    # --- thread-safe API (any thread) --------------------------------------------------
    def submit(self, req: Request) -> Request:
        cap = self.config.max_queue
        if cap and self.n_waiting + sum(1 for k, _ in self._inbox if k == "req") >= cap \
                and self.scheduler.n_idle == 0:
            raise QueueFull()
        req.mailbox = Mailbox(self.bridge)
        if not self._running:       # stopped (shutdown): answer at once instead of never
            req.status, req.error = Status.ABORTED, "the server is shutting down"
            req.mailbox.put(FinalEvent(Status.ABORTED, error=req.error, error_type="unavailable_error"))
            self.bridge.flush()
            return req
        self._inbox.append(("req", req))
        self._wake.set()
        return req

    def submit_many(self, reqs: list[Request]) -> list[Request]:
        """Submit requests the loop must see together, so that one schedule() can put them
        in one batch (several embedding inputs, one decode). One ``deque.extend`` of a list
        is a single C call under the GIL: the engine thread drains none of them or all."""
        if len(reqs) <= 1 or not self._running:
            return [self.submit(req) for req in reqs]
        cap = self.config.max_queue
        if cap and self.n_waiting + len(reqs) + sum(1 for k, _ in self._inbox if k == "req") > cap \
                and self.scheduler.n_idle < len(reqs):
            raise QueueFull()
        for req in reqs:
            req.mailbox = Mailbox(self.bridge)
        self._inbox.extend([("req", req) for req in reqs])
        self._wake.set()
        return reqs

    def abort(self, req_id: int) -> None:
        self._inbox.append(("abort", req_id))
        self._wake.set()

    def call(self, fn):
        """Run fn(engine) on the engine thread between decodes; returns a mailbox that gets
        ("ok", result) or ("error", exception)."""
        box = Mailbox(self.bridge)
        self._inbox.append(("call", (fn, box)))
        self._wake.set()
        return box

    def start(self) -> None:
        self._running = True
        start_real_thread(self._run)

    def stop(self, timeout: float = 10.0) -> None:
        if not self._running:
            return
        self._running = False
        self._wake.set()
        self._stopped.wait(timeout)

    # --- the loop (engine thread) ------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._running:
                self._drain_inbox()
                plan = self.scheduler.schedule()
                self._on_plan(plan)
                if not plan.entries:
                    self._publish_counts()
                    self.bridge.flush()
                    if not self._inbox:
                        self._wake.wait(0.5)
                    continue
                self._step(plan)
                self._publish_counts()
                self.bridge.flush()
                self.bridge.wait_drained(0.02)
        except BaseException:  # the loop must never die silently
            logger.exception("engine loop crashed")
            self._fail_all("the engine stopped after an internal error")
            raise
        finally:
            self._fail_all("the server is shutting down", status=Status.ABORTED)
            self.bridge.flush()
            self._stopped.set()

    def _drain_inbox(self) -> None:
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "req":
                try:
                    self.scheduler.add(item)
                except QueueFull:
                    item.status = Status.FAILED
                    item.mailbox.put(FinalEvent(Status.FAILED, error="the request queue is full",
                                                error_type="unavailable_error"))
            elif kind == "abort":
                req = self.scheduler.abort(item)
                if req is not None:
                    self._texts.pop(req.slot_id, None)
                    self._finish_event(req, None)
            elif kind == "call":
                fn, box = item
                try:
                    box.put(("ok", fn(self)))
                except Exception as exc:   # reported to the caller, never kills the loop
                    box.put(("error", exc))

    def _on_plan(self, plan: Plan) -> None:
        for req in plan.admitted:
            slot = self.scheduler.slots[req.slot_id]
            if not req.options.embedding:
                slot.sampler = self.sampler_factory(req.sampling, self.vocab.n_tokens,
                                                    req.prompt_tokens, self.vocab, n_ctx=self.n_ctx_slot)
            self._texts[slot.id] = _SlotText(req.options.stop)
            if self.observer:
                self.observer.on_admit(req)
        for req in plan.finished:
            self._texts.pop(req.slot_id, None)
            self._finish_event(req, None)
        for slot in plan.context_full:
            self._finish(slot, Status.FINISHED_CONTEXT)

    def _apply_kv_ops(self, plan: Plan) -> None:
        for op in plan.kv_ops:
            if op[0] == "rm":
                _, seq, p0, p1 = op
                if not self.ctx.seq_rm(seq, p0, p1):
                    self.ctx.seq_rm(seq, -1, -1)     # partial removal unsupported: start over
                    slot = self.scheduler.slots[seq]
                    slot.pending = slot.cache_tokens[:] + slot.pending
                    slot.cache_tokens = []
            elif op[0] == "shift":
                _, seq, n_keep, n_discard, n_past = op
                self.ctx.seq_rm(seq, n_keep, n_keep + n_discard)
                self.ctx.seq_add(seq, n_keep + n_discard, n_past, -n_discard)
            elif op[0] == "add":
                self.ctx.seq_add(*op[1:])
            else:   # "div"
                self.ctx.seq_div(*op[1:])

    def _step(self, plan: Plan) -> None:
        self._apply_kv_ops(plan)
        if plan.embedding != self._embedding_mode:
            self.ctx.set_embeddings(plan.embedding)
            self._embedding_mode = plan.embedding
        batch = self._batch
        batch.clear()
        index: dict[int, int] = {}
        for entry in plan.entries:
            if entry.all_outputs:
                index[entry.slot.id] = batch.add_all_outputs(entry.tokens, entry.first_pos, entry.slot.id)
            else:
                index[entry.slot.id] = batch.add(entry.tokens, entry.first_pos, entry.slot.id,
                                                 entry.wants_logits)
        try:
            self.ctx.decode(batch)
        except DecodeError as exc:
            self._fail_plan(plan, exc)
            return
        self.n_decode_steps += 1
        self.n_busy_slot_steps += len(plan.entries)
        sampled: dict[int, int] = {}
        embeddings: dict[int, list] = {}
        for entry in plan.entries:
            if not entry.wants_logits:
                continue
            slot, req = entry.slot, entry.slot.request
            if req.options.embedding:
                embeddings[slot.id] = self._collect_embedding(entry, index[slot.id])
            elif req.options.n_predict != 0:
                sampled[slot.id] = self._sample(slot, index[slot.id])
        for slot, token in self.scheduler.update(plan, sampled):
            if slot.id in embeddings:
                self._finish(slot, Status.FINISHED_LIMIT, embeddings=embeddings[slot.id])
            elif token is None:
                self._finish(slot, Status.FINISHED_LIMIT)
            else:
                self._on_token(slot, token)

    def _sample(self, slot, i: int) -> int:
        logits = self.ctx.logits(i)
        if slot.request.options.ignore_eos and len(self._eog):
            logits = logits.copy()
            logits[self._eog] = -np.inf
        return slot.sampler.sample(logits)

    def _collect_embedding(self, entry, last: int) -> list:
        if self.ctx.pooling == 0:   # LLAMA_POOLING_TYPE_NONE: one vector per token
            first = last - len(entry.tokens) + 1
            return [self.ctx.embedding(i).tolist() for i in range(first, last + 1)]
        return self.ctx.sequence_embedding(entry.slot.id).tolist()

    def _on_token(self, slot, token: int) -> None:
        req = slot.request
        if self.vocab.is_eog(token) and not req.options.ignore_eos:
            self._finish(slot, Status.FINISHED_EOS)
            return
        self.scheduler.accept(slot, token)
        slot.sampler.accept(token)
        text = self._texts[slot.id]
        delta = text.decoder.push(self.vocab.piece(token, self.config.special))
        delta = text.stops.feed(delta)
        probs = slot.sampler.last_probs if req.sampling is not None and req.sampling.n_probs else None
        req.mailbox.put(TokenEvent(delta, token, probs))
        if self.observer:
            self.observer.on_token(req)
        n_predict = req.options.n_predict
        if n_predict < 0 or (self.config.n_predict >= 0 and n_predict > self.config.n_predict):
            n_predict = self.config.n_predict
        if text.stops.matched is not None:
            self._finish(slot, Status.FINISHED_STOP)
        elif limit_reached(req.n_generated, n_predict):
            self._finish(slot, Status.FINISHED_LIMIT)
        elif req.options.t_max_predict_ms > 0 and "\n" in delta and \
                (time.perf_counter() - slot.t_prompt_done) * 1000 > req.options.t_max_predict_ms:
            self._finish(slot, Status.FINISHED_LIMIT)

    def _finish(self, slot, status: Status, embeddings=None) -> None:
        text = self._texts.pop(slot.id, None)
        tail = ""
        stopping_word = ""
        if text is not None:
            if text.stops.matched is not None:
                stopping_word = text.stops.matched
            else:
                tail = text.stops.feed(text.decoder.flush()) + text.stops.flush()
        timings = self._timings(slot)
        seed = getattr(slot.sampler, "seed", None)
        n_prompt, n_evaluated = slot.n_prompt, slot.n_prompt_evaluated
        req = self.scheduler.finish(slot, status)
        event = FinalEvent(status, tail, stopping_word, n_prompt, req.n_cached, n_evaluated,
                           req.n_generated, req.truncated, timings, embeddings=embeddings,
                           slot_id=slot.id, seed=seed)
        req.mailbox.put(event)
        if self.observer:
            self.observer.on_finish(req, event)

    def _finish_event(self, req: Request, slot) -> None:
        """A request that ended outside _finish (aborted, failed at admission, context full)."""
        error_type = "exceed_context_size_error" if req.status is Status.FAILED else "server_error"
        event = FinalEvent(req.status, n_predicted=req.n_generated, truncated=req.truncated,
                           error=req.error, error_type=error_type, slot_id=req.slot_id)
        req.mailbox.put(event)
        if self.observer:
            self.observer.on_finish(req, event)

    def _timings(self, slot) -> dict:
        now = time.perf_counter()
        t_prompt_done = slot.t_prompt_done or now
        prompt_ms = (t_prompt_done - slot.t_start) * 1000
        predicted_n = slot.request.n_generated if slot.request else 0
        predicted_ms = max(0.0, ((slot.t_last or t_prompt_done) - t_prompt_done) * 1000) if predicted_n else 0.0
        prompt_n = slot.n_prompt_evaluated
        return {
            "prompt_n": prompt_n,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
            "prompt_per_second": 1000 * prompt_n / prompt_ms if prompt_ms > 0 else 0.0,
            "predicted_n": predicted_n,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / predicted_n if predicted_n else 0.0,
            "predicted_per_second": 1000 * predicted_n / predicted_ms if predicted_ms > 0 else 0.0,
        }

    def _fail_plan(self, plan: Plan, exc: LlamaError) -> None:
        logger.error("decode failed: %s", exc.describe())
        for entry in plan.entries:
            slot = entry.slot
            if slot.request is None:
                continue
            self.ctx.seq_rm(slot.id, -1, -1)
            slot.cache_tokens = []
            req = self.scheduler.finish(slot, Status.FAILED)
            self._texts.pop(slot.id, None)
            req.error = f"decode failed: {exc.describe()}"
            self._finish_event(req, None)

    def _fail_all(self, message: str, status: Status = Status.FAILED) -> None:
        for slot in self.scheduler.slots:
            if slot.request is not None:
                req = self.scheduler.finish(slot, status)
                req.error = message
                self._finish_event(req, None)
        while self.scheduler.waiting:
            req = self.scheduler.waiting.popleft()
            req.status = status
            req.error = message
            self._finish_event(req, None)
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "req":
                item.status = status
                item.error = message
                self._finish_event(item, None)

    def _publish_counts(self) -> None:
        self.n_waiting = len(self.scheduler.waiting)
        self.n_processing = self.scheduler.n_processing

    # --- control tasks (engine thread, via call()) -------------------------------------
    def share_prefix(self, tokens: list[int]) -> int:
        """Make ``tokens`` (the system prompt) the prefix every request keeps, evaluate it
        once, and give it to every idle slot; returns the number of slots seeded.

        All but the last token go into one idle slot's sequence, which is copied to the
        other idle slots (``seq_cp``; across per-slot KV streams libllama copies the whole
        stream, applied at the next decode). The last token is then decoded into every
        seeded slot in one batch, which also applies those pending copies before anything
        (e.g. a slot save) can read them. Busy slots keep their cache; their next request
        finds the prefix through ordinary prefix caching."""
        self.scheduler.shared_prefix = list(tokens)
        idle = [s for s in self.scheduler.slots if s.idle]
        if not tokens or not idle:
            return 0
        if self._embedding_mode:
            self.ctx.set_embeddings(False)
            self._embedding_mode = False
        for slot in idle:
            self.ctx.seq_rm(slot.id, -1, -1)
            slot.cache_tokens = []
        src, head, last = idle[0], tokens[:-1], tokens[-1]
        batch, step = self._batch, self.scheduler.n_batch
        try:
            for i in range(0, len(head), step):
                batch.clear()
                batch.add(head[i:i + step], i, src.id, False)
                self.ctx.decode(batch)
            if head:
                for slot in idle[1:]:
                    self.ctx.seq_cp(src.id, slot.id, -1, -1)
            batch.clear()
            for slot in idle:
                batch.add([last], len(head), slot.id, False)
            self.ctx.decode(batch)
        except LlamaError:
            for slot in idle:
                self.ctx.seq_rm(slot.id, -1, -1)
            raise
        for slot in idle:
            slot.cache_tokens = list(tokens)
        return len(idle)

    def set_lora(self, scales: list[float]) -> None:
        """Apply ``self.lora_adapters`` with these scales (one per adapter; 0 leaves it out of
        the graph). Cached prompts were computed with the old weights, so no slot reuses its
        cache afterwards; requests already running go on with the new scales."""
        if len(scales) != len(self.lora_adapters):
            raise ValueError(f"{len(scales)} scales for {len(self.lora_adapters)} adapters")
        active = [(a, s) for a, s in zip(self.lora_adapters, scales) if s != 0.0]
        self.ctx.set_lora([a for a, _ in active], [s for _, s in active])
        self.lora_scales = [float(s) for s in scales]
        self.scheduler.forget_caches()
