"""The engine: one loop on a real OS thread driving the scheduler over one shared context.

    plan = schedule() -> KV edits -> fill batch -> decode -> sample -> update -> publish

Requests, aborts and control tasks arrive through an inbox (a deque plus a real-lock
signal); results leave through each request's mailbox and the bridge. Nothing here blocks
on a client.
"""
from __future__ import annotations

import collections
import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from .. import _raw
from ..batch import Batch
from ..errors import DecodeError, LlamaError, NoKvSlotError
from .bridge import Mailbox, RealSignal, make_bridge, real_lock, start_real_thread
from .events import FinalEvent, ProgressEvent
from .request import Request, Status
from .scheduler import Plan, QueueFull, Scheduler
from .generation import Generation
from . import media
from .prompt_cache import SlotPromptCache

__all__ = ["Engine", "EngineConfig", "QueueFull", "GenerationExhausted"]

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
    slot_prompt_similarity: float = 0.1   # -sps: how much of a prompt a slot's cache must match
    cache_ram_mib: int = 0            # --cache-ram: host-RAM prompt cache limit (0: off, -1: no limit)
    cache_idle_slots: bool = True     # --cache-idle-slots: save idle slots when a request starts
    # After each decode, wait (at most 20 ms) for the web side to write what the step
    # published. On a CPU that both decodes and serves HTTP this keeps encoding and socket
    # writes from competing with the next decode's spinning threads; when the model runs
    # on an accelerator the wait only delays the next step (the server turns it off).
    wait_for_web: bool = True
    # OS threads that draw the step's tokens (Sampler.sample_rows). One where the cores
    # decode (a helper would compete with libllama's threads); more where the model runs
    # on an accelerator and the cores are free between decodes (the server's choice).
    sample_threads: int = 1
    # Draw on those threads while the engine thread goes on with each token as it comes
    # (its text, event, stop checks): their Python overlaps the draws. For accelerators (the
    # server's choice, with wait_for_web off): on a CPU the cores are libllama's.
    sample_async: bool = False


class GenerationExhausted(Exception):
    """Raised by a request's sampler when no token may come next (its grammar admits none
    that the sampler may draw): the request ends with FINISHED_GRAMMAR, not as a failure.
    sampling.grammar.GrammarExhausted is one."""


class Engine:
    """The loop and its thread-safe API.

    Failure belongs to the request that caused it: each slot's sample/accept/publish step
    runs inside a boundary that ends that request (FAILED, ``server_error``) and leaves the
    others running. If the loop itself ever stops on an error, ``failure`` says why, every
    request in flight and every later ``submit`` gets an immediate ``unavailable_error``,
    and ``on_failure(reason)`` (set by the server) is called once from the engine thread."""

    def __init__(self, model, context, config: EngineConfig, sampler_factory, bridge=None,
                 observer=None, speculator=None):
        """``sampler_factory(params, n_vocab, prompt_tokens, vocab, n_ctx=)`` builds a request's
        sampler (``sampling.make_sampler`` in the server; the engine never imports sampling).
        ``speculator``: a ``speculative.Speculator`` (--spec-type), or None."""
        self.model = model
        self.ctx = context
        self.vocab = model.vocab
        self.config = config
        self.n_ctx_slot = context.n_ctx_seq if context.n_ctx_seq else context.n_ctx // config.n_slots
        group_attn = (config.grp_attn_n, config.grp_attn_w) if config.grp_attn_n > 1 else None
        if group_attn and not context.can_shift:
            raise ValueError("self-extend needs a KV cache whose positions can be edited; this model's cannot")
        # as llama-server: self-extend replaces context shift
        unified = getattr(context, "kv_unified", False)
        self.scheduler = Scheduler(config.n_slots, self.n_ctx_slot, min(config.n_batch, context.n_batch),
                                   cont_batching=config.cont_batching,
                                   context_shift=config.context_shift and context.can_shift and not group_attn,
                                   max_queue=config.max_queue, group_attn=group_attn,
                                   similarity=config.slot_prompt_similarity,
                                   kv_cells=context.n_ctx if unified else 0,
                                   keep_bos=bool(getattr(model.vocab, "add_bos", False)),
                                   partial_rm=context.can_shift,
                                   pooled_inputs_per_batch=_pooled_inputs_per_batch(context))
        self.prompt_cache = None          # prompt_cache.SlotPromptCache (--cache-ram)
        if config.cache_ram_mib != 0 and context.can_shift and not group_attn:
            self.prompt_cache = SlotPromptCache(context, config.cache_ram_mib,
                                                idle_slots=config.cache_idle_slots)
            self.scheduler.before_start = self.prompt_cache.before_start
        # speculative decoding needs a memory that drops rejected positions, and plain positions
        self.speculator = speculator if context.can_shift and not group_attn else None
        if speculator is not None and self.speculator is None:
            logger.warning("speculative decoding is off: this model's memory cannot drop positions, or self-extend is on")
        self._draft_stats: dict[int, list[int]] = {}    # slot id -> [drafted, accepted] of its request
        self.n_draft_tokens = 0           # /metrics
        self.n_draft_accepted = 0
        self.lora_adapters: list = []     # LoraAdapter objects loaded with the model (--lora)
        self.lora_scales: list[float] = []
        self._lora_applied: tuple[float, ...] = ()   # the scales the context holds now
        self.sampler_factory = sampler_factory
        self.bridge = bridge or make_bridge()
        self.observer = observer          # metrics hooks: on_admit/on_token/on_finish
        self.media: media.MediaEvaluator | None = None   # set when a projector is loaded (--mmproj)
        self._batch = Batch(max(self.scheduler.n_batch, config.n_slots))
        self._inbox: collections.deque = collections.deque()
        self._inbox_reqs = 0              # requests in the inbox (guarded by _lock)
        self._lock = real_lock()          # submit vs. the loop stopping
        self._wake = RealSignal()
        self._stopped = RealSignal()
        self._running = False
        self._failure: str | None = None  # why the loop stopped, if it stopped on an error
        self.on_failure = None            # called once with the reason (engine thread)
        # A test aid: LLAMA_SERVER_FAILPOINT=engine-loop makes the loop raise on its first
        # decode step, so the tests can check what the server does when the loop dies.
        self._failpoint = os.environ.get("LLAMA_SERVER_FAILPOINT", "")
        self._gens: dict[int, Generation] = {}     # slot id -> its request's per-token state
        self._embedding_mode = False
        self._eog = np.array([t for t in range(self.vocab.n_tokens) if self.vocab.is_eog(t)],
                             dtype=np.int64)
        self._touched: list = []          # mailboxes given token events this step (put_quiet)
        self._now = 0.0                   # the step's clock, read once per step
        self.n_waiting = 0                # read by /health and /metrics from other threads
        self.n_processing = 0
        self.n_decode_steps = 0
        self.n_busy_slot_steps = 0        # sum over decodes of the slots in the batch (/metrics)

    # --- thread-safe API (any thread) --------------------------------------------------
    def make_sampler(self, params, prompt_tokens, ignore_eos: bool = False):
        """The sampler for one request, built by the caller before submission (DRY tables,
        grammar parsing). Raises what the factory raises (e.g. GrammarError).
        ``ignore_eos``: end-of-generation tokens get a -inf bias, fixed here once instead of
        a mask over the logits at every token."""
        if self.media is not None:      # media placeholders are no tokens to penalise
            prompt_tokens = media.text_tokens(prompt_tokens)
        if ignore_eos and len(self._eog) and params is not None:
            params = params.with_(logit_bias=tuple(params.logit_bias)
                                  + tuple((int(t), -math.inf) for t in self._eog))
        return self.sampler_factory(params, self.vocab.n_tokens, prompt_tokens, self.vocab,
                                    n_ctx=self.n_ctx_slot)

    def submit(self, req: Request) -> Request:
        return self.submit_many([req])[0]

    def submit_many(self, reqs: list[Request]) -> list[Request]:
        """Submit requests the loop must see together, so that one schedule() can put them
        in one batch (several embedding inputs, one decode). Raises QueueFull (nothing
        submitted) when they would wait beyond --max-queue. A stopped engine answers each at
        once with an ``unavailable_error`` final event."""
        for req in reqs:
            if req.mailbox is None:
                req.mailbox = Mailbox(self.bridge)
        with self._lock:
            if self._running:
                cap = self.config.max_queue
                if cap and self.n_waiting + self._inbox_reqs + len(reqs) > cap + self.scheduler.n_idle:
                    raise QueueFull()
                self._inbox_reqs += len(reqs)
                # one deque.extend of a list: the engine thread drains none of them or all
                self._inbox.extend([("req", req) for req in reqs])
                self._wake.set()
                return reqs
        reason = self.failure or "the server is shutting down"
        for req in reqs:
            self._end(req, Status.ABORTED, reason, "unavailable_error")
        self.bridge.flush()
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
        with self._lock:
            if not self._running:
                return
            self._running = False
        self._wake.set()
        self._stopped.wait(timeout)

    @property
    def running(self) -> bool:
        return self._running

    @property
    def failure(self) -> str | None:
        """Why the engine cannot serve: its loop stopped on an error, or ggml aborted (an
        RPC worker died mid-decode: the loop is stuck in that decode for good)."""
        from ..backends import fatal_error
        return self._failure or fatal_error()

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
                self._now = time.perf_counter()
                self._step(plan)
                if self._touched:
                    self.bridge.mark_many(self._touched)
                    self._touched = []
                self._publish_counts()
                self.bridge.flush()
                if self.config.wait_for_web:
                    self.bridge.wait_drained(0.02)
        except BaseException as exc:  # the loop must never die silently
            logger.exception("engine loop crashed")
            self._failure = f"the engine stopped after an internal error ({type(exc).__name__}: {exc})"
        finally:
            with self._lock:
                self._running = False     # from here on submit() answers at once
            if self.failure:
                self._fail_all(self.failure, Status.FAILED, "server_error")
            self._fail_all("the server is shutting down", Status.ABORTED, "unavailable_error")
            self._publish_counts()
            self.bridge.flush()
            self._stopped.set()
            if self.failure and self.on_failure is not None:
                try:
                    self.on_failure(self.failure)
                except Exception:
                    logger.exception("on_failure callback failed")

    def _drain_inbox(self) -> None:
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "req":
                with self._lock:
                    self._inbox_reqs -= 1
                try:
                    self.scheduler.add(item)
                except QueueFull:
                    self._end(item, Status.FAILED, "the request queue is full", "unavailable_error")
            elif kind == "abort":
                req = self.scheduler.abort(item)
                if req is not None:
                    self._gens.pop(req.slot_id, None)
                    self._finish_event(req)
            elif kind == "call":
                fn, box = item
                try:
                    box.put(("ok", fn(self)))
                except Exception as exc:   # reported to the caller, never kills the loop
                    box.put(("error", exc))

    def _on_plan(self, plan: Plan) -> None:
        for req in plan.admitted:
            slot = self.scheduler.slots[req.slot_id]
            if self.observer:
                self.observer.on_admit(req)
            try:
                sampler = req.sampler
                if sampler is None and not req.options.embedding:
                    sampler = self.make_sampler(req.sampling, req.prompt_tokens,
                                                req.options.ignore_eos)
                self._report_progress(slot)
                self._gens[slot.id] = Generation(req, sampler, self.vocab,
                                                 n_predict_cap=self.config.n_predict,
                                                 special=self.config.special or req.options.special)
                if self.speculator is not None and not req.options.embedding:
                    self._draft_stats[slot.id] = [0, 0]
                    if not getattr(req, "media", None):
                        self.speculator.begin(slot.id, slot.last_prompt)
            except Exception as exc:
                self._fail_slot(slot, exc)
        if plan.admitted and self.prompt_cache is not None and self.prompt_cache.idle_slots:
            self.prompt_cache.save_idle(self.scheduler.slots, clear=self.scheduler.kv_cells > 0)
        for req in plan.finished:
            self._gens.pop(req.slot_id, None)
            self._finish_event(req)
        for slot in plan.context_full:
            self._finish(slot, Status.FINISHED_CONTEXT)
        if any(e.slot.request is None for e in plan.entries):
            plan.entries = [e for e in plan.entries if e.slot.request is not None]

    def _apply_kv_ops(self, plan: Plan) -> None:
        for op in plan.kv_ops:
            if op[0] == "rm":
                _, seq, p0, p1 = op
                if not self.ctx.seq_rm(seq, p0, p1):
                    # The scheduler only asks for partial removals the memory supports
                    # (partial_rm); if libllama still refuses, the slot's cache is unknown.
                    raise LlamaError(f"could not remove positions {p0}..{p1} of sequence {seq}")
            elif op[0] == "shift":
                _, seq, n_keep, n_discard, n_past = op
                self.ctx.seq_rm(seq, n_keep, n_keep + n_discard)
                self.ctx.seq_add(seq, n_keep + n_discard, n_past, -n_discard)
            elif op[0] == "add":
                self.ctx.seq_add(*op[1:])
            else:   # "div"
                self.ctx.seq_div(*op[1:])

    def _fill(self, plan: Plan) -> dict[int, int]:
        """Lay the plan's entries into the batch; the batch index of each entry's last token.
        The generating slots' single tokens (the scheduler puts them first) go in with one
        vectorised write: 64 per-entry writes cost about 0.15 ms a step."""
        batch = self._batch
        batch.clear()
        index: dict[int, int] = {}
        n_single = 0
        for entry in plan.entries:
            if len(entry.tokens) != 1 or entry.draft or entry.all_outputs or not entry.wants_logits:
                break
            n_single += 1
        if n_single > 1:
            singles = plan.entries[:n_single]
            first = batch.add_singles([e.tokens[0] for e in singles], [e.first_pos for e in singles],
                                      [e.slot.id for e in singles])
            for k, entry in enumerate(singles):
                index[entry.slot.id] = first + k
        else:
            n_single = 0
        for entry in plan.entries[n_single:]:
            if entry.draft:     # the logits of the slot's own token, its drafts' after it
                index[entry.slot.id] = batch.add_all_outputs(
                    entry.tokens + entry.draft, entry.first_pos, entry.slot.id) - len(entry.draft)
            elif entry.all_outputs:
                index[entry.slot.id] = batch.add_all_outputs(entry.tokens, entry.first_pos, entry.slot.id)
            else:
                index[entry.slot.id] = batch.add(entry.tokens, entry.first_pos, entry.slot.id,
                                                 entry.wants_logits)
        return index

    def _decode(self, plan: Plan) -> dict[int, int] | None:
        """Decode the plan's batch. When libllama finds no KV room (it returns 1 and restores
        the memory), room is made (see _make_room) and the smaller batch is tried again, so
        no request fails for lack of room it was admitted with. None: nothing left to decode."""
        for _ in range(2 * len(self.scheduler.slots) + 4):
            if not plan.entries:
                return None
            index = self._fill(plan)
            try:
                self.ctx.decode(self._batch)
                return index
            except NoKvSlotError as exc:
                if not self._make_room(plan):
                    raise DecodeError(f"no room in the KV cache: {exc.describe()}") from exc
        raise DecodeError("no room in the KV cache after repeated attempts")

    def _make_room(self, plan: Plan) -> bool:
        """One step towards a batch that fits the KV cache (most useful first): put prompt
        chunks back for a later step; drop idle slots' cached prompts; shift the context of
        the generating slot that holds the most cells (or, without context shift, end it as
        FINISHED_CONTEXT). False when nothing is left to try."""
        if any(e.draft for e in plan.entries):
            for e in plan.entries:
                e.draft = []
            return True
        prompts = [e for e in plan.entries if len(e.tokens) > 1 or e.slot.request.status is Status.PROMPT]
        if prompts and len(prompts) < len(plan.entries):
            plan.entries = [e for e in plan.entries if e not in prompts]
            return True
        if self.scheduler.drop_idle_caches(self.ctx.seq_rm):
            return True
        if prompts:
            # only prompt chunks: one at a time, then half of it (an embedding input stays whole)
            if len(prompts) > 1:
                plan.entries = plan.entries[:1]
                return True
            entry = prompts[0]
            if len(entry.tokens) > 1 and not entry.all_outputs:
                entry.tokens = entry.tokens[:len(entry.tokens) // 2]
                entry.wants_logits = False
                return True
            return False
        gen = [e for e in plan.entries if e.slot.request is not None]
        if not gen:
            return False
        entry = max(gen, key=lambda e: e.slot.n_past)
        slot = entry.slot
        ops: list = []
        if self.scheduler.shift_now(slot, ops):
            for op in ops:
                _, seq, n_keep, n_discard, n_past = op
                self.ctx.seq_rm(seq, n_keep, n_keep + n_discard)
                self.ctx.seq_add(seq, n_keep + n_discard, n_past, -n_discard)
            entry.first_pos = self.scheduler.pos(slot)
            return True
        plan.entries.remove(entry)
        self._finish(slot, Status.FINISHED_CONTEXT)
        return True

    def _step(self, plan: Plan) -> None:
        if self._failpoint == "engine-loop":
            raise RuntimeError("failpoint engine-loop")
        self._apply_kv_ops(plan)
        if plan.embedding != self._embedding_mode:
            self.ctx.set_embeddings(plan.embedding)
            self._embedding_mode = plan.embedding
        self._use_lora(plan.lora)
        if plan.media:
            self._media_step(plan)
            return
        if self.speculator is not None and not plan.embedding:
            self._add_drafts(plan)
        try:
            index = self._decode(plan)
        except DecodeError as exc:
            self._fail_plan(plan, exc)
            return
        if index is None:
            return
        self.n_decode_steps += 1
        self.n_busy_slot_steps += len(plan.entries)
        sampled: dict[int, int] = {}
        embeddings: dict[int, list] = {}
        ended: dict[int, BaseException] = {}
        batch: list = []        # (slot, batch index): drawn together by _sample_batch
        alone: list = []        # (slot, batch index): drawn one by one (grammar, n_probs)
        gens = self._gens
        prompts = False         # any entry of a slot still on its prompt (progress reports)
        for entry in plan.entries:
            slot, req = entry.slot, entry.slot.request
            if req is not None and req.status is Status.PROMPT:
                prompts = True
            if not entry.wants_logits:
                continue
            try:
                if req.options.embedding:
                    embeddings[slot.id] = self._collect_embedding(entry, index[slot.id])
                elif req.options.n_predict != 0:
                    (batch if gens[slot.id].batchable else alone).append((slot, index[slot.id]))
            except Exception as exc:     # this request's failure, not the batch's
                ended[slot.id] = exc
            for child in entry.followers:   # n_cmpl: the same logits, each its own sampler
                if child.request is not None and child.request.options.n_predict != 0:
                    (batch if gens[child.id].batchable else alone).append((child, index[slot.id]))
        draw = self._sample_batch(batch, sampled, ended) if batch else None
        try:
            for slot, i in alone:
                try:
                    sampled[slot.id] = self._sample(slot, i)
                except Exception as exc:     # this request's failure, not the batch's
                    ended[slot.id] = exc
            self._commit(plan, sampled, embeddings, ended, index, prompts, draw, batch)
        finally:
            if draw is not None:
                draw.finish()

    def _commit(self, plan: Plan, sampled: dict, embeddings: dict, ended: dict, index: dict,
                prompts: bool, draw, batch: list) -> None:
        """After the step's draws: the scheduler's update, progress reports, then each
        slot's token (or its end). ``draw``: the batch still being drawn on worker threads
        (sample_async), its tokens taken one by one as they come."""
        results = self.scheduler.update(plan, sampled)
        drafted = ({e.slot.id: (e.draft, index[e.slot.id]) for e in plan.entries if e.draft}
                   if self.speculator is not None else {})
        for src, dst in plan.shares:
            self.ctx.seq_rm(dst, -1, -1)
            self.ctx.seq_cp(src, dst, -1, -1)
        if prompts:
            for entry in plan.entries:          # only slots still on their prompt may report
                if entry.slot.request is not None and entry.slot.request.status is Status.PROMPT:
                    self._report_progress(entry.slot)
            for child in (c for e in plan.entries for c in e.followers):
                self._report_progress(child)
        special = bool(ended or embeddings or drafted)   # else: tokens, or nothing to sample
        drawn = {slot.id: k for k, (slot, _) in enumerate(batch)} if draw is not None else None
        bridge = self.bridge
        for slot, token in results:
            if drawn is not None and token is None and slot.id in drawn:
                # while the web side has the last step's output to write, leave it the core
                # rather than draw rows here: it holds the GIL the engine needs next
                token = draw.token(drawn[slot.id], not bridge.web_busy)
            try:
                if not special and token is not None:
                    self._on_token(slot, token)
                elif slot.id in ended:
                    exc = ended[slot.id]
                    if isinstance(exc, GenerationExhausted):
                        self._finish(slot, Status.FINISHED_GRAMMAR)
                    else:
                        self._fail_slot(slot, exc)
                elif slot.id in embeddings:
                    self._finish(slot, Status.FINISHED_LIMIT, embeddings=embeddings[slot.id])
                elif token is None:
                    self._finish(slot, Status.FINISHED_LIMIT)
                elif slot.id in drafted:
                    self._verify(slot, token, *drafted[slot.id])
                else:
                    self._on_token(slot, token)
            except Exception as exc:
                if slot.request is not None:
                    self._fail_slot(slot, exc)
                else:
                    raise

    def _media_step(self, plan: Plan) -> None:
        """Evaluate one media chunk into its slot's sequence (engine/media.py). No KV room:
        idle slots' caches go first, then the request fails alone."""
        entry = plan.entries[0]
        slot = entry.slot
        try:
            chunk = slot.request.media[media.media_key(entry.tokens[0])]
            for attempt in range(2):
                try:
                    next_pos = self.media.evaluate(self.ctx, chunk, entry.first_pos, slot.id,
                                                   self.scheduler.n_batch)
                    break
                except NoKvSlotError:
                    if attempt or not self.scheduler.drop_idle_caches(self.ctx.seq_rm):
                        raise
        except Exception as exc:
            self._fail_slot(slot, exc)
            return
        self.scheduler.update(plan, {})
        if self.scheduler.pos(slot) != next_pos:     # the scheduler's positions are wrong
            self._fail_slot(slot, LlamaError(
                f"internal error: the {chunk.kind} ends at position {next_pos}, the scheduler "
                f"expected {self.scheduler.pos(slot)}"))
            return
        self._report_progress(slot)

    def _add_drafts(self, plan: Plan) -> None:
        """Ask the speculator for draft tokens for every generating slot, within the slot's
        context, its token limit and the batch's room (``entry.draft``). A proposer that
        fails is reset and this step decodes without drafts."""
        room = self.scheduler.n_batch - sum(len(e.tokens) for e in plan.entries)
        wants: dict[int, tuple[list[int], int]] = {}
        entries = {}
        for entry in plan.entries:
            slot, req = entry.slot, entry.slot.request
            if room <= 0:
                break
            if req is None or req.status is not Status.GENERATING or len(entry.tokens) != 1 \
                    or entry.all_outputs or slot.id not in self._gens or getattr(req, "media", None):
                continue
            n = min(self.speculator.n_max, room, self.n_ctx_slot - entry.first_pos - 1)
            limit = self._gens[slot.id].n_predict
            if limit >= 0:      # the token after the last draft comes for free
                n = min(n, limit - req.n_generated - 1)
            if n <= 0:
                continue
            wants[slot.id] = (slot.cache_tokens + entry.tokens, n)
            entries[slot.id] = entry
            room -= n
        if not wants:
            return
        try:
            drafts = self.speculator.propose(wants)
        except Exception:
            logger.exception("speculative drafting failed; decoding without drafts")
            self.speculator.reset()
            return
        for seq, draft in drafts.items():
            entries[seq].draft = list(draft)

    def _verify(self, slot, token: int, draft: list[int], i0: int) -> None:
        """Keep ``token`` (sampled at batch index ``i0``, the slot's own position), then while
        it equals the next draft token (already decoded after it) sample the next position
        with the request's sampler; the first token that differs, or the one after the last
        draft, stays pending. The rejected positions leave the KV cache."""
        stats = self._draft_stats.setdefault(slot.id, [0, 0])
        stats[0] += len(draft)            # counted first: a request may end inside the loop
        self.n_draft_tokens += len(draft)
        accepted = 0
        try:
            self._on_token(slot, token)
            while accepted < len(draft) and token == draft[accepted] and slot.request is not None \
                    and slot.request.status is Status.GENERATING:
                self.scheduler.commit_pending(slot)      # decoded in this batch already
                accepted += 1
                stats[1] += 1
                self.n_draft_accepted += 1
                try:
                    token = self._sample(slot, i0 + accepted)
                except GenerationExhausted:
                    self._finish(slot, Status.FINISHED_GRAMMAR)
                    break
                self._on_token(slot, token)
        finally:
            self.ctx.seq_rm(slot.id, self.scheduler.pos(slot), -1)
            self.speculator.accepted(slot.id, len(draft), accepted)

    def _sample(self, slot, i: int) -> int:
        return self._gens[slot.id].sample(self.ctx.logits(i))

    def _sample_batch(self, batch: list, sampled: dict, ended: dict):
        """Draw for every (slot, batch index) of ``batch`` in one call over the step's logits
        table (their samplers are batchable): into ``sampled``, or with sample_async started
        on worker threads and returned (Sampler.start_rows: the caller takes the tokens and
        finishes it). If that call fails, each slot is drawn alone, so a failure stays with
        its own request."""
        gens = self._gens
        try:
            table, rows = self.ctx.logits_rows([i for _, i in batch])
            samplers = [gens[slot.id].sampler for slot, _ in batch]
            if self.config.sample_async:
                return samplers[0].start_rows(samplers, table, rows, self.config.sample_threads)
            tokens = samplers[0].sample_rows(samplers, table, rows, self.config.sample_threads)
        except Exception:
            logger.exception("batch sampling failed; drawing slot by slot")
            for slot, i in batch:
                try:
                    sampled[slot.id] = self._sample(slot, i)
                except Exception as exc:
                    ended[slot.id] = exc
            return None
        for (slot, _), token in zip(batch, tokens):
            sampled[slot.id] = token
        return None

    def _report_progress(self, slot) -> None:
        """return_progress (streams): where the slot's prompt evaluation stands, at admission
        and after each decode of one of its chunks (the last one has processed == total).
        An n_cmpl child reports once, when the shared evaluation is copied to it."""
        req = slot.request
        if req is None or req.status is not Status.PROMPT or slot.leader >= 0 \
                or not (req.options.return_progress and req.options.stream):
            return
        timings = self._timings(slot) if req.options.timings_per_token else None
        req.mailbox.put(ProgressEvent(slot.n_prompt, req.n_cached, slot.n_past,
                                      int((time.perf_counter() - slot.t_start) * 1000), timings))

    def _collect_embedding(self, entry, last: int) -> list:
        if self.ctx.pooling == 0:   # LLAMA_POOLING_TYPE_NONE: one vector per token
            first = last - len(entry.tokens) + 1
            return [self.ctx.embedding(i).tolist() for i in range(first, last + 1)]
        return self.ctx.sequence_embedding(entry.slot.id).tolist()

    def _on_token(self, slot, token: int) -> None:
        gen = self._gens[slot.id]
        req = slot.request
        if gen.ends_at(token):
            self._finish(slot, Status.FINISHED_EOS)
            return
        now = self._now
        self.scheduler.accept(slot, token, now)
        if not gen.t_started:
            gen.t_started = slot.t_prompt_done or now
        event, status = gen.take(token, now)
        if req.options.timings_per_token:
            event.timings = self._timings(slot)
        req.mailbox.put_quiet(event)
        self._touched.append(req.mailbox)
        if self.observer:
            self.observer.on_token(req)
        if status is not None:
            self._finish(slot, status)

    def _finish(self, slot, status: Status, embeddings=None) -> None:
        gen = self._gens.pop(slot.id)
        timings = self._timings(slot)
        event = gen.final_event(status, slot, timings, embeddings)
        req = self.scheduler.finish(slot, status)
        req.mailbox.put(event)
        if self.observer:
            self.observer.on_finish(req, event)

    def _end(self, req: Request, status: Status, error: str, error_type: str) -> None:
        """End a request that never reached (or left) a slot, with its error and kind."""
        req.status, req.error, req.error_type = status, error, error_type
        self._finish_event(req)

    def _finish_event(self, req: Request) -> None:
        """A request that ended outside _finish (aborted, failed at admission or in its slot,
        refused): its final event carries the error and the error's kind."""
        event = FinalEvent(req.status, n_predicted=req.n_generated, truncated=req.truncated,
                           error=req.error, error_type=req.error_type or "server_error",
                           slot_id=req.slot_id)
        req.mailbox.put(event)
        if self.observer:
            self.observer.on_finish(req, event)

    def _fail_slot(self, slot, exc: BaseException) -> None:
        """End the slot's request on an internal error; the other slots go on."""
        logger.error("request in slot %d failed: %s: %s", slot.id, type(exc).__name__, exc,
                     exc_info=not isinstance(exc, LlamaError))
        req = self.scheduler.finish(slot, Status.FAILED)
        self._gens.pop(slot.id, None)
        req.error = f"internal error while generating: {exc}"
        req.error_type = "server_error"
        self._finish_event(req)

    def _timings(self, slot) -> dict:
        now = time.perf_counter()
        t_prompt_done = slot.t_prompt_done or now
        prompt_n = slot.n_prompt_evaluated
        # nothing evaluated (yet, or an n_cmpl child that was given its prompt): no prompt time
        prompt_ms = (t_prompt_done - slot.t_start) * 1000 if prompt_n else 0.0
        predicted_n = slot.request.n_generated if slot.request else 0
        predicted_ms = max(0.0, ((slot.t_last or t_prompt_done) - t_prompt_done) * 1000) if predicted_n else 0.0
        return {
            "prompt_n": prompt_n,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
            "prompt_per_second": 1000 * prompt_n / prompt_ms if prompt_ms > 0 else 0.0,
            "predicted_n": predicted_n,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / predicted_n if predicted_n else 0.0,
            "predicted_per_second": 1000 * predicted_n / predicted_ms if predicted_ms > 0 else 0.0,
            **self._draft_timings(slot),
        }

    def _draft_timings(self, slot) -> dict:
        """As llama-server: draft_n / draft_n_accepted once the request has drafted."""
        stats = self._draft_stats.get(slot.id)
        if not stats or not stats[0]:
            return {}
        return {"draft_n": stats[0], "draft_n_accepted": stats[1]}

    def _fail_plan(self, plan: Plan, exc: LlamaError) -> None:
        logger.error("decode failed: %s", exc.describe())
        for entry in plan.entries:
            slot = entry.slot
            if slot.request is None:
                continue
            self.ctx.seq_rm(slot.id, -1, -1)
            slot.cache_tokens = []
            req = self.scheduler.finish(slot, Status.FAILED)
            self._gens.pop(slot.id, None)
            req.error = f"decode failed: {exc.describe()}"
            req.error_type = "server_error"
            self._finish_event(req)

    def _fail_all(self, message: str, status: Status, error_type: str) -> None:
        for slot in self.scheduler.slots:
            if slot.request is not None:
                req = self.scheduler.finish(slot, status)
                self._gens.pop(slot.id, None)
                self._end(req, status, message, error_type)
        while self.scheduler.waiting:
            self._end(self.scheduler.waiting.popleft(), status, message, error_type)
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "req":
                with self._lock:
                    self._inbox_reqs -= 1
                self._end(item, status, message, error_type)
            elif kind == "call":
                item[1].put(("error", RuntimeError(message)))

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
        self._use_lora(None)
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
            slot.lora = None
            slot.shared = False
        return len(idle)

    def set_lora(self, scales: list[float]) -> None:
        """Make these the server's scales for ``self.lora_adapters`` (one per adapter; 0 leaves
        it out of the graph). Cached prompts were computed with the old weights, so no slot
        reuses its cache afterwards; requests already running without a ``lora`` of their
        own go on with the new scales."""
        if len(scales) != len(self.lora_adapters):
            raise ValueError(f"{len(scales)} scales for {len(self.lora_adapters)} adapters")
        self._apply_lora(tuple(float(s) for s in scales))
        self.lora_scales = [float(s) for s in scales]
        self.scheduler.forget_caches()
        if self.prompt_cache is not None:
            self.prompt_cache.cache.clear()

    def _use_lora(self, request_scales) -> None:
        """Give the context the adapter scales of the batch about to be decoded: a request's
        own (``options.lora``), or the server's (None)."""
        if not self.lora_adapters:
            return
        scales = tuple(self.lora_scales) if request_scales is None else tuple(request_scales)
        if scales != self._lora_applied:
            self._apply_lora(scales)

    def _apply_lora(self, scales: tuple[float, ...]) -> None:
        active = [(a, s) for a, s in zip(self.lora_adapters, scales) if s != 0.0]
        self.ctx.set_lora([a for a, _ in active], [s for _, s in active])
        self._lora_applied = scales


def _pooled_inputs_per_batch(context) -> int:
    """Rank pooling (reranking): one input per batch. libllama (0c1e570) copies sequence i's
    scores from offset ``n_cls_out * i`` of the pooled output, which is right only when a
    classifier head (``cls.output``) narrowed each row to n_cls_out values; for a model
    without one (a plain causal LM used as a reranker) every sequence after the first would
    get another value of the first one's vector. Other poolings: as many as fit."""
    return 1 if getattr(context, "pooling", None) == _raw.LLAMA_POOLING_TYPE_RANK else 0
