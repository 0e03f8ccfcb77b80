"""The scheduler: a model-free state machine with two verbs.

``schedule()`` admits waiting requests into free slots and returns a ``Plan``: which tokens of
which slot go into the next batch, which KV-cache edits must happen first, and which entries
need logits. ``update(plan, sampled)`` records what the decode put into the cache and hands
back the (slot, sampled token) pairs for the engine to judge. ``accept()`` and ``finish()``
apply the engine's verdict. Nothing here knows about ctypes, HTTP or text.

A batch holds, in this order: one token for every generating slot (so streams never stall
behind a long prompt), then prompt chunks while the ``n_batch`` budget lasts (continuous
batching). With continuous batching off, prompts are only scheduled when no slot generates.

Requests with different LoRA adapter sets (``options.lora``) never share a batch: each batch
serves one set, and the sets take turns batch by batch, so all of them keep running.

n_cmpl: a request's children (``Request.parent``, same prompt, submitted with it) are admitted
with it into idle slots of their own. Only the parent's slot evaluates the prompt; when its
last chunk is decoded the children's sequences get a copy of it (``plan.shares``) and every
one of them samples its first token from the parent's logits.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

from .request import Request, Status
from . import media
from .self_extend import GroupAttention
from .slots import Slot, common_prefix

__all__ = ["Scheduler", "Plan", "PlanEntry", "QueueFull"]


class QueueFull(Exception):
    """The waiting queue is at --max-queue."""


@dataclass(slots=True)
class PlanEntry:
    slot: Slot
    tokens: list[int]
    first_pos: int
    wants_logits: bool
    all_outputs: bool = False   # embeddings: every position is an output
    # n_cmpl children whose prompt this entry completes: they sample from its logits too
    followers: list[Slot] = field(default_factory=list)
    # speculative decoding: draft tokens the engine appends after ``tokens`` (a generating
    # slot's last token), every position an output; verified after the decode
    draft: list[int] = field(default_factory=list)


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
    lora: Any = None            # the adapter set of this batch's requests (None: the server's)
    # (src, dst): copy sequence src over dst right after this batch's decode (n_cmpl: a
    # finished prompt evaluation given to the children); filled by update()
    shares: list[tuple[int, int]] = field(default_factory=list)
    # a media chunk's step (engine/media.py): one entry, its tokens the chunk's placeholders
    media: bool = False


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
                 kv_cells: int = 0, keep_bos: bool = False, partial_rm: bool = True,
                 pooled_inputs_per_batch: int = 0):
        """``similarity``: -sps, the fraction of a prompt a slot's cache must share to be
        chosen for it (0: always the least recently used slot). ``kv_cells``: with a unified
        KV cache, the cells every slot draws from (0: each slot owns ``n_ctx_slot``).
        ``keep_bos``: context shift keeps one more token (BOS). ``partial_rm``: the memory
        can drop a range of a sequence (else a cached prefix is reused only whole).
        ``pooled_inputs_per_batch``: at most this many embedding inputs share a batch (0: as
        many as fit)."""
        self.slots = [Slot(i, n_ctx_slot) for i in range(n_slots)]
        self.similarity = similarity
        self.kv_cells = kv_cells
        self.keep_bos = keep_bos
        self.partial_rm = partial_rm
        self.pooled_inputs_per_batch = pooled_inputs_per_batch
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
        self._last_lora: Any = None          # the adapter set of the last batch (sets take turns)
        # (slot, request, prompt) -> None, called before a request starts in a slot whose
        # cache it may reuse: the engine's host-RAM prompt cache may save the slot's prompt
        # and restore a better one (it then sets slot.cache_tokens). None: no prompt cache.
        self.before_start: Any = None
        self._last_batch_media = False       # media steps and ordinary batches alternate
        self._media_turn = 0                 # the slot whose media chunk goes next
        # key -> a media chunk's n_pos - n_tokens, when positions and KV cells differ
        # (M-RoPE projectors: engine/media.py, Positions); None: position = cache index
        self.shift_of: Any = None
        self._shift_memo: dict[int, tuple[list, int, int]] = {}   # slot -> (tokens, upto, shift)

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
            if req.parent is not None and req.parent.status is Status.WAITING:
                kept.append(req)   # admitted together with its parent
                continue
            slot = self._pick_slot(req)
            children = self._children(req)
            others = [s for s in self.slots if s.idle and s is not slot][:len(children)]
            if slot is not None and (len(others) < len(children)
                                     or not self._fits_unified(slot, req, plan)):
                slot = None
            if slot is None:
                kept.append(req)
                if req.options.id_slot < 0:
                    break          # FIFO: nobody overtakes the head for a free slot
                continue
            self._start(slot, req, plan)
            if req.status is Status.PROMPT:
                for child, other in zip(children, others):
                    self.waiting.remove(child)
                    self._follow(other, child, slot, plan)
        kept.extend(self.waiting)
        self.waiting = kept

    def _children(self, req: Request) -> list[Request]:
        """The waiting requests that share ``req``'s prompt evaluation (n_cmpl). With
        self-extend they evaluate their own (a grouped cache is not shared)."""
        if self.group_attn is not None or req.options.embedding:
            return []
        return [r for r in self.waiting if r.parent is req]

    def _start(self, slot: Slot, req: Request, plan: Plan) -> None:
        prompt = req.prompt_tokens
        if prompt and prompt[-1] < 0:      # its last token's logits come from a text token
            req.status = Status.FAILED
            req.error = "the prompt must not end with an image or audio: put some text after it"
            req.error_type = "invalid_request_error"
            plan.finished.append(req)
            return
        if len(prompt) >= self.n_ctx_slot and not req.options.embedding:
            if not req.options.truncate_prompt or media.has_media(prompt):   # never cut an image
                req.status = Status.FAILED
                req.error = f"the prompt ({len(prompt)} tokens) does not fit the context ({self.n_ctx_slot})"
                req.error_type = "exceed_context_size_error"
                plan.finished.append(req)
                return
            prompt = truncate_prompt(prompt, self.n_ctx_slot, req.options.n_keep)
            req.truncated = True
        if self.before_start is not None and req.options.cache_prompt and not req.options.embedding \
                and slot.id not in self._no_reuse and not any(op[1] == slot.id for op in plan.kv_ops):
            self.before_start(slot, req, prompt)
        keep = 0
        if req.options.cache_prompt and not req.options.embedding:
            keep = min(common_prefix(slot.cache_tokens, prompt), len(prompt) - 1)
        elif self.shared_prefix and not req.options.embedding:
            keep = min(common_prefix(slot.cache_tokens, prompt), len(self.shared_prefix), len(prompt) - 1)
        # not reused: stale (see forget_caches), grouped (N tokens share a position), or
        # computed with other LoRA adapters
        if slot.id in self._no_reuse or (self.group_attn and self.group_attn.grouped(slot.id)) \
                or slot.lora != req.options.lora:
            keep = 0
        if not self.partial_rm and keep < slot.n_past:
            keep = 0     # the memory cannot drop a tail: start the sequence over
        keep = media.align_keep(prompt, keep)
        self._no_reuse.discard(slot.id)
        if keep == 0 and self.group_attn:
            self.group_attn.reset(slot.id)
        plan.kv_ops.append(("rm", slot.id, self.pos(slot, keep), -1))
        slot.cache_tokens = slot.cache_tokens[:keep]
        slot.pending = list(prompt[keep:])
        if keep == 0:
            slot.shared = False
        self._occupy(slot, req, prompt, plan)
        req.n_cached = keep

    def _follow(self, slot: Slot, req: Request, leader: Slot, plan: Plan) -> None:
        """Admit an n_cmpl child into ``slot``: it waits for ``leader``'s prompt evaluation
        and then gets a copy of it (see update()), so the whole prompt counts as cached."""
        plan.kv_ops.append(("rm", slot.id, 0, -1))
        self._no_reuse.discard(slot.id)
        slot.cache_tokens = []
        slot.pending = []
        slot.shared = False
        slot.leader = leader.id
        self._occupy(slot, req, leader.last_prompt, plan)
        req.n_cached = len(leader.last_prompt)
        req.truncated = leader.request.truncated

    def _occupy(self, slot: Slot, req: Request, prompt: list[int], plan: Plan) -> None:
        slot.n_prompt = len(prompt)
        slot.last_prompt = list(prompt)
        slot.request = req
        slot.lora = req.options.lora
        slot.t_start = time.perf_counter()
        slot.t_prompt_done = 0.0
        slot.n_prompt_evaluated = 0
        req.slot_id = slot.id
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
        if not self._last_batch_media and self._media_step(plan):
            self._last_batch_media = True
            return plan
        self._last_batch_media = False
        for lora in self._lora_turns():
            plan.lora = lora
            self._fill(plan)
            if plan.entries:
                self._last_lora = lora
                break
        if not plan.entries and self._embedding_batch(plan):
            self._last_batch_embedding = True
        return plan

    def _fill(self, plan: Plan) -> None:
        """The batch of the slots under ``plan.lora``: one token per generating slot, then
        prompt chunks while the budget lasts."""
        budget = self.n_batch
        plain = self.group_attn is None and self.shift_of is None   # position = cache index
        entries = plan.entries
        for slot in self.slots:
            req = slot.request
            if req is None or req.status is not Status.GENERATING or not slot.pending \
                    or req.options.lora != plan.lora:
                continue
            if len(slot.cache_tokens) + 1 > self.n_ctx_slot and not self._shift(slot, plan):
                plan.context_full.append(slot)
                continue
            entries.append(PlanEntry(slot, slot.pending[:1],
                                     len(slot.cache_tokens) if plain else self._position(slot, plan), True))
            budget -= 1
        if plan.entries and not self.cont_batching:
            return
        for slot in self.slots:
            req = slot.request
            if req is None or req.status is not Status.PROMPT or budget <= 0 \
                    or req.options.embedding and not media.has_media(slot.pending) \
                    or slot.leader >= 0 or req.options.lora != plan.lora or not slot.pending or slot.pending[0] < 0:
                continue     # (a media chunk next: it gets a step of its own)
            n = media.text_run(slot.pending, budget)
            first_pos = self._position(slot, plan)
            if self.group_attn:
                n = min(n, self.group_attn.room(slot.id, slot.n_past))
            last = n == len(slot.pending)
            followers = [s for s in self.slots if s.leader == slot.id] if last else []
            plan.entries.append(PlanEntry(slot, slot.pending[:n], first_pos, last, followers=followers))
            budget -= n

    def _media_step(self, plan: Plan) -> bool:
        """The next media chunk of a slot whose prompt is at one (slots take turns), as a plan
        of its own; media steps and ordinary batches alternate, so generation goes on."""
        n = len(self.slots)
        for k in range(n):
            slot = self.slots[(self._media_turn + k) % n]
            req = slot.request
            if req is None or req.status is not Status.PROMPT or not slot.pending \
                    or slot.pending[0] >= 0 or slot.leader >= 0:
                continue
            run = media.media_run(slot.pending)
            plan.entries = [PlanEntry(slot, slot.pending[:run], self.pos(slot), False)]
            plan.media = True
            plan.lora = req.options.lora
            self._media_turn = slot.id + 1
            return True
        return False

    def _lora_turns(self) -> list:
        """The adapter sets of the requests waiting for a decode (in slot order), starting
        after the last batch's, so the sets take turns; the first one with work makes the
        batch. [None] (the server's) when there is nothing to decode."""
        sets: list = []
        for slot in self.slots:
            req = slot.request
            if req is not None and slot.pending \
                    and (not req.options.embedding or media.has_media(slot.pending)) \
                    and req.options.lora not in sets:
                sets.append(req.options.lora)
        if not sets:
            return [None]
        turn = sets.index(self._last_lora) + 1 if self._last_lora in sets else 0
        return sets[turn:] + sets[:turn]

    def _embedding_batch(self, plan: Plan) -> bool:
        """Pooled embeddings need each input whole in one batch, and a batch of their own:
        all waiting inputs that fit ``n_batch``. An input with images or audio goes through
        the prompt batches and media steps up to its last chunk (no outputs), and only its
        last text run comes here. The scheduler alternates such batches with
        generation whenever both have work, so neither starves the other."""
        entries: list[PlanEntry] = []
        total = 0
        for slot in self.slots:
            req = slot.request
            if req is None or req.status is not Status.PROMPT or not req.options.embedding \
                    or media.has_media(slot.pending):
                continue     # (an input with media: evaluated as a prompt up to its last chunk)
            if self.pooled_inputs_per_batch and len(entries) == self.pooled_inputs_per_batch:
                break
            if total + len(slot.pending) <= self.n_batch:
                entries.append(PlanEntry(slot, list(slot.pending), self.pos(slot), True, all_outputs=True))
                total += len(slot.pending)
        if not entries:
            return False
        plan.entries = entries
        plan.embedding = True
        return True

    def _position(self, slot: Slot, plan: Plan) -> int:
        """Where the slot's next tokens go: pos(slot), or with self-extend the grouped
        position (after the groupings that are due, added to the plan's KV edits)."""
        if self.group_attn is None:
            return self.pos(slot)
        self.group_attn.group(slot.id, slot.n_past, plan.kv_ops)
        return self.group_attn.position(slot.id, slot.n_past)

    def pos(self, slot: Slot, k: int | None = None) -> int:
        """The KV position of the slot's cache index ``k`` (default: the next token's,
        n_past). The index itself, unless media chunks under M-RoPE moved it (shift_of).
        Remembered per slot for its current cache list, so a generating slot pays for the
        one new token only."""
        n = slot.n_past if k is None else k
        if self.shift_of is None:
            return n
        tokens = slot.cache_tokens
        memo = self._shift_memo.get(slot.id)
        if memo is not None and memo[0] is tokens and memo[1] <= n:
            shift = memo[2] + media.position_shift(tokens, memo[1], n, self.shift_of)
        else:
            shift = media.position_shift(tokens, 0, n, self.shift_of)
        if n == len(tokens):
            self._shift_memo[slot.id] = (tokens, n, shift)
        return n + shift

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
        if not self.context_shift or (slot.shared and self.kv_cells):
            return False     # cells shared with another sequence (n_cmpl) keep their positions
        if media.has_media(slot.cache_tokens):
            return False     # positions of media chunks are not shifted (see engine/media.py)
        n_keep = slot.n_prompt if req.options.n_keep < 0 else req.options.n_keep
        if self.keep_bos:
            n_keep += 1      # as llama-server: BOS stays in front of what is kept
        n_keep = min(n_keep, self.n_ctx_slot - 4)
        n_left = slot.n_past - n_keep
        n_discard = min(req.options.n_discard or n_left // 2, n_left - 1)
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
                for child in entry.followers:
                    if child.request is None or child.leader != slot.id:
                        continue       # ended meanwhile, or no longer waiting for this prompt
                    child.cache_tokens = list(slot.cache_tokens)
                    child.leader = -1
                    child.t_start = child.t_prompt_done = now     # its prompt took it no time
                    child.shared = slot.shared = True
                    plan.shares.append((slot.id, child.id))
                    out.append((child, sampled.get(child.id)))
        return out

    def accept(self, slot: Slot, token: int, now: float = 0.0) -> None:
        """The sampled token is kept: it is fed to the next batch. ``now``: the step's clock."""
        slot.pending = [token]
        slot.request.status = Status.GENERATING
        slot.request.n_generated += 1
        slot.t_last = now or time.perf_counter()

    def commit_pending(self, slot: Slot) -> None:
        """Speculative decoding: the accepted token was decoded with the drafts, so it is in
        the KV cache already and nothing is pending."""
        slot.cache_tokens.extend(slot.pending)
        slot.pending = []

    def finish(self, slot: Slot, status: Status) -> Request:
        req = slot.request
        req.status = status
        slot.request = None
        slot.pending = []
        slot.leader = -1
        for child in self.slots:
            if child.leader == slot.id:
                # the shared evaluation will not happen: the child evaluates the prompt itself
                child.leader = -1
                child.pending = list(child.last_prompt)
                child.request.n_cached = 0
        self._last_used[slot.id] = time.perf_counter()
        return req
