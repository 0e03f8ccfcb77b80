"""The scheduler: a model-free state machine with two verbs.

``schedule()`` admits waiting requests into free slots and returns a ``Plan``: which tokens of
which slot go into the next batch, which KV-cache edits must happen first, and which entries
need logits. ``update(plan, sampled)`` records what the decode put into the cache and hands
back the (slot, sampled token) pairs for the engine to judge. ``accept()`` and ``finish()``
apply the engine's verdict. Nothing here knows about ctypes, HTTP or text.

A batch holds, in this order: one token for every generating slot (so streams never stall
behind a long prompt), then prompt chunks while the ``n_batch`` budget lasts (continuous
batching). With continuous batching off, prompts are only scheduled when no slot generates.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from .request import Request, Status
from .self_extend import GroupAttention
from .slots import Slot, common_prefix

__all__ = ["Scheduler", "Plan", "PlanEntry", "QueueFull"]


class QueueFull(Exception):
    """The waiting queue is at --max-queue."""


@dataclass
class PlanEntry:
    slot: Slot
    tokens: list[int]
    first_pos: int
    wants_logits: bool
    all_outputs: bool = False   # embeddings: every position is an output


@dataclass
class Plan:
    entries: list[PlanEntry] = field(default_factory=list)
    # ("rm", seq, p0, p1) | ("shift", seq, keep, discard, n_past) | self-extend's
    # ("add", seq, p0, p1, delta) and ("div", seq, p0, p1, d); applied in order before the batch
    kv_ops: list[tuple] = field(default_factory=list)
    admitted: list[Request] = field(default_factory=list)
    finished: list[Request] = field(default_factory=list)    # failed at admission
    context_full: list[Slot] = field(default_factory=list)   # out of room, no shift: the engine ends them
    embedding: bool = False


def truncate_prompt(tokens: list[int], n_ctx: int, n_keep: int) -> list[int]:
    """The seed's rule: keep n_keep tokens, then drop whole blocks of half the remaining room."""
    n_keep = min(max(n_keep, 0), n_ctx - 4)
    n_left = n_ctx - n_keep
    block = max(1, n_left // 2)
    erased_blocks = (len(tokens) - n_keep - block) // block
    return tokens[:n_keep] + tokens[n_keep + erased_blocks * block:]


class Scheduler:
    def __init__(self, n_slots: int, n_ctx_slot: int, n_batch: int, *, cont_batching: bool = True,
                 context_shift: bool = True, max_queue: int = 0,
                 group_attn: tuple[int, int] | None = None, similarity: float = 0.1,
                 kv_cells: int = 0, keep_bos: bool = False, partial_rm: bool = True):
        """``similarity``: -sps, the fraction of a prompt a slot's cache must share to be
        chosen for it (0: always the least recently used slot). ``kv_cells``: with a unified
        KV cache, the cells every slot draws from (0: each slot owns ``n_ctx_slot``).
        ``keep_bos``: context shift keeps one more token (BOS). ``partial_rm``: the memory
        can drop a range of a sequence (else a cached prefix is reused only whole)."""
        self.slots = [Slot(i, n_ctx_slot) for i in range(n_slots)]
        self.similarity = similarity
        self.kv_cells = kv_cells
        self.keep_bos = keep_bos
        self.partial_rm = partial_rm
        self._last_batch_embedding = False   # embeddings and generation take turns
        self.n_ctx_slot = n_ctx_slot
        self.n_batch = n_batch
        self.cont_batching = cont_batching
        self.context_shift = context_shift
        self.max_queue = max_queue
        self.waiting: collections.deque[Request] = collections.deque()
        self._last_used = [0.0] * n_slots
        self.shared_prefix: list[int] = []   # the system prompt: kept even without cache_prompt
        self.group_attn = GroupAttention(*group_attn) if group_attn else None   # self-extend
        self._no_reuse: set[int] = set()     # slots whose cache must not serve as a prefix

    # --- queue ------------------------------------------------------------------------
    def add(self, req: Request) -> None:
        if self.max_queue and len(self.waiting) >= self.max_queue:
            raise QueueFull()
        req.status = Status.WAITING
        self.waiting.append(req)

    def abort(self, req_id: int) -> Request | None:
        for req in self.waiting:
            if req.id == req_id:
                self.waiting.remove(req)
                req.status = Status.ABORTED
                return req
        for slot in self.slots:
            if slot.request is not None and slot.request.id == req_id:
                return self.finish(slot, Status.ABORTED)
        return None

    @property
    def n_processing(self) -> int:
        return sum(1 for s in self.slots if not s.idle)

    @property
    def n_idle(self) -> int:
        return len(self.slots) - self.n_processing

    # --- admission --------------------------------------------------------------------
    def _pick_slot(self, req: Request) -> Slot | None:
        """The pinned ``id_slot``; else, as llama-server, the idle slot whose cache shares the
        largest fraction of the prompt when that fraction exceeds ``similarity``; else the
        least recently used idle slot."""
        if req.options.id_slot >= 0:
            slot = self.slots[req.options.id_slot] if req.options.id_slot < len(self.slots) else None
            return slot if slot is not None and slot.idle else None
        idle = [s for s in self.slots if s.idle]
        if not idle:
            return None
        prompt = req.prompt_tokens
        if self.similarity > 0 and req.options.cache_prompt and not req.options.embedding and prompt:
            best, best_sim = None, 0.0
            for s in idle:
                if not s.cache_tokens:
                    continue
                sim = common_prefix(s.cache_tokens, prompt) / len(prompt)
                if sim > best_sim and sim > self.similarity:
                    best, best_sim = s, sim
            if best is not None:
                return best
        return min(idle, key=lambda s: self._last_used[s.id])

    def _fits_unified(self, slot: Slot, req: Request, plan: Plan) -> bool:
        """With a unified KV cache: whether the prompt fits the cells the busy slots leave,
        after dropping idle slots' cached prompts (least recently used first) if needed."""
        if not self.kv_cells:
            return True
        busy = sum(s.n_past + len(s.pending) for s in self.slots if not s.idle)
        need = len(req.prompt_tokens) + 1
        if busy + need > self.kv_cells and busy > 0:
            return False            # waits until a busy slot finishes
        cached = sum(s.n_past for s in self.slots if s.idle and s is not slot)
        room = self.kv_cells - busy - slot.n_past - cached
        for other in sorted((s for s in self.slots if s.idle and s is not slot and s.cache_tokens),
                            key=lambda s: self._last_used[s.id]):
            if room >= need:
                break
            plan.kv_ops.append(("rm", other.id, 0, -1))
            room += other.n_past
            other.cache_tokens = []
        return True

    def drop_idle_caches(self, seq_rm) -> bool:
        """Free the KV cells of every idle slot's cached prompt (applied now through
        ``seq_rm``); whether any were freed."""
        freed = False
        for slot in self.slots:
            if slot.idle and slot.cache_tokens:
                seq_rm(slot.id, -1, -1)
                slot.cache_tokens = []
                freed = True
        return freed

    def _admit(self, plan: Plan) -> None:
        kept: collections.deque[Request] = collections.deque()
        while self.waiting:
            req = self.waiting.popleft()
            slot = self._pick_slot(req)
            if slot is not None and not self._fits_unified(slot, req, plan):
                slot = None
            if slot is None:
                kept.append(req)
                if req.options.id_slot < 0:
                    break          # FIFO: nobody overtakes the head for a free slot
                continue
            self._start(slot, req, plan)
        kept.extend(self.waiting)
        self.waiting = kept

    def _start(self, slot: Slot, req: Request, plan: Plan) -> None:
        prompt = req.prompt_tokens
        if len(prompt) >= self.n_ctx_slot and not req.options.embedding:
            if not req.options.truncate_prompt:
                req.status = Status.FAILED
                req.error = f"the prompt ({len(prompt)} tokens) does not fit the context ({self.n_ctx_slot})"
                req.error_type = "exceed_context_size_error"
                plan.finished.append(req)
                return
            prompt = truncate_prompt(prompt, self.n_ctx_slot, req.options.n_keep)
            req.truncated = True
        keep = 0
        if req.options.cache_prompt and not req.options.embedding:
            keep = min(common_prefix(slot.cache_tokens, prompt), len(prompt) - 1)
        elif self.shared_prefix and not req.options.embedding:
            keep = min(common_prefix(slot.cache_tokens, prompt), len(self.shared_prefix), len(prompt) - 1)
        if slot.id in self._no_reuse or (self.group_attn and self.group_attn.grouped(slot.id)):
            keep = 0     # stale (see forget_caches), or grouped: N tokens share a position
        if not self.partial_rm and keep < slot.n_past:
            keep = 0     # the memory cannot drop a tail: start the sequence over
        self._no_reuse.discard(slot.id)
        if keep == 0 and self.group_attn:
            self.group_attn.reset(slot.id)
        plan.kv_ops.append(("rm", slot.id, keep, -1))
        slot.cache_tokens = slot.cache_tokens[:keep]
        slot.pending = list(prompt[keep:])
        slot.n_prompt = len(prompt)
        slot.last_prompt = list(prompt)
        slot.request = req
        slot.t_start = time.perf_counter()
        slot.t_prompt_done = 0.0
        slot.n_prompt_evaluated = 0
        req.slot_id = slot.id
        req.n_cached = keep
        req.status = Status.PROMPT
        plan.admitted.append(req)

    # --- planning ---------------------------------------------------------------------
    def schedule(self) -> Plan:
        plan = Plan()
        self._admit(plan)
        if not self._last_batch_embedding and self._embedding_batch(plan):
            self._last_batch_embedding = True
            return plan
        self._last_batch_embedding = False
        budget = self.n_batch
        for slot in self.slots:
            req = slot.request
            if req is None or req.status is not Status.GENERATING or not slot.pending:
                continue
            if slot.n_past + 1 > self.n_ctx_slot and not self._shift(slot, plan):
                plan.context_full.append(slot)
                continue
            plan.entries.append(PlanEntry(slot, slot.pending[:1], self._position(slot, plan), True))
            budget -= 1
        if plan.entries and not self.cont_batching:
            return plan
        for slot in self.slots:
            req = slot.request
            if req is None or req.status is not Status.PROMPT or budget <= 0 or req.options.embedding:
                continue
            n = min(len(slot.pending), budget)
            first_pos = self._position(slot, plan)
            if self.group_attn:
                n = min(n, self.group_attn.room(slot.id, slot.n_past))
            plan.entries.append(PlanEntry(slot, slot.pending[:n], first_pos, n == len(slot.pending)))
            budget -= n
        if not plan.entries and self._embedding_batch(plan):
            self._last_batch_embedding = True
        return plan

    def _embedding_batch(self, plan: Plan) -> bool:
        """Pooled embeddings need each input whole in one batch, and a batch of their own:
        all waiting inputs that fit ``n_batch``. The scheduler alternates such batches with
        generation whenever both have work, so neither starves the other."""
        entries: list[PlanEntry] = []
        total = 0
        for slot in self.slots:
            req = slot.request
            if req is None or req.status is not Status.PROMPT or not req.options.embedding:
                continue
            if total + len(slot.pending) <= self.n_batch:
                entries.append(PlanEntry(slot, list(slot.pending), slot.n_past, True, all_outputs=True))
                total += len(slot.pending)
        if not entries:
            return False
        plan.entries = entries
        plan.embedding = True
        return True

    def _position(self, slot: Slot, plan: Plan) -> int:
        """Where the slot's next tokens go: n_past, or with self-extend the grouped position
        (after the groupings that are due, added to the plan's KV edits)."""
        if self.group_attn is None:
            return slot.n_past
        self.group_attn.group(slot.id, slot.n_past, plan.kv_ops)
        return self.group_attn.position(slot.id, slot.n_past)

    def forget_caches(self) -> None:
        """No slot reuses its cached tokens as a prefix any more (e.g. the LoRA scales
        changed, so the cached keys and values were computed with other weights)."""
        self._no_reuse.update(s.id for s in self.slots)

    def shift_now(self, slot: Slot, ops: list) -> bool:
        """Context shift outside planning (the engine making KV room): the edit goes to
        ``ops`` for the caller to apply at once."""
        plan = Plan()
        if not self._shift(slot, plan):
            return False
        ops.extend(plan.kv_ops)
        return True

    def _shift(self, slot: Slot, plan: Plan) -> bool:
        """Context shift: drop half of the tokens after n_keep, as the seed's server did."""
        req = slot.request
        if not self.context_shift:
            return False
        n_keep = slot.n_prompt if req.options.n_keep < 0 else req.options.n_keep
        if self.keep_bos:
            n_keep += 1      # as llama-server: BOS stays in front of what is kept
        n_keep = min(n_keep, self.n_ctx_slot - 4)
        n_discard = (slot.n_past - n_keep) // 2
        if n_discard <= 0:
            return False
        plan.kv_ops.append(("shift", slot.id, n_keep, n_discard, slot.n_past))
        slot.cache_tokens = slot.cache_tokens[:n_keep] + slot.cache_tokens[n_keep + n_discard:]
        req.truncated = True
        return True

    # --- results ----------------------------------------------------------------------
    def update(self, plan: Plan, sampled: dict[int, int]) -> list[tuple[Slot, int | None]]:
        """Commit the decoded tokens; return (slot, token) for each entry that produced logits
        (token None when the engine chose not to sample, e.g. n_predict 0 or embeddings)."""
        out = []
        now = time.perf_counter()
        for entry in plan.entries:
            slot = entry.slot
            if slot.request is None:
                continue
            slot.cache_tokens.extend(entry.tokens)
            del slot.pending[:len(entry.tokens)]
            if slot.request.status is Status.PROMPT:
                slot.n_prompt_evaluated += len(entry.tokens)
            if entry.wants_logits:
                if slot.request.status is Status.PROMPT:
                    slot.t_prompt_done = now
                out.append((slot, sampled.get(slot.id)))
        return out

    def accept(self, slot: Slot, token: int) -> None:
        """The sampled token is kept: it is fed to the next batch."""
        slot.pending = [token]
        slot.request.status = Status.GENERATING
        slot.request.n_generated += 1
        slot.t_last = time.perf_counter()

    def finish(self, slot: Slot, status: Status) -> Request:
        req = slot.request
        req.status = status
        slot.request = None
        slot.pending = []
        self._last_used[slot.id] = time.perf_counter()
        return req
