"""A fake libllama context for driving the real ``Engine`` without a model.

``FakeContext`` keeps the KV cache as sets of positions per sequence (so room, removal and
shifts behave as libllama's do), answers ``decode`` with logits that make token ``t`` follow
token ``t - 1`` (a greedy sampler then counts upwards), and lets a test script faults:
``fail_decodes`` (exceptions raised by the next decodes, in order) and ``on_decode`` (called
with each batch before it is decoded).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from llama_lib.engine import Engine, EngineConfig, GenerationOptions, Request
from llama_lib.errors import NoKvSlotError

from .fakes import FakeVocab

N_VOCAB = FakeVocab.n_tokens


class FakeContext:
    def __init__(self, n_ctx: int = 256, n_seq: int = 2, n_batch: int = 64, unified: bool = False):
        self.n_ctx = n_ctx
        self.n_seq_max = n_seq
        self.kv_unified = unified and n_seq > 1
        self.n_ctx_seq = n_ctx if self.kv_unified else n_ctx // n_seq
        self.n_batch = n_batch
        self.n_ubatch = n_batch
        self.can_shift = True
        self.pooling = 1
        self.cells: dict[int, set[int]] = {s: set() for s in range(n_seq)}
        self.fail_decodes: list[BaseException] = []
        self.on_decode = None
        self.n_decodes = 0
        self.embedding_mode = False
        self._logits = np.zeros((0, N_VOCAB), dtype=np.float32)
        self._last_seq_token: dict[int, int] = {}

    # --- decode ----------------------------------------------------------------------
    def decode(self, batch) -> None:
        n = batch.n_tokens
        if self.on_decode is not None:
            self.on_decode(batch)
        if self.fail_decodes:
            raise self.fail_decodes.pop(0)
        used = sum(len(c) for c in self.cells.values())
        if self.kv_unified and used + n > self.n_ctx:
            raise NoKvSlotError("no KV room", code=1, log_tail=[])     # memory left as it was
        seqs, positions = batch.seq[:n].tolist(), batch.pos[:n].tolist()
        for seq, pos in zip(seqs, positions):
            if not self.kv_unified and len(self.cells[seq]) >= self.n_ctx_seq:
                raise NoKvSlotError("no KV room", code=1, log_tail=[])
            assert pos not in self.cells[seq], f"position {pos} of sequence {seq} is taken"
            self.cells[seq].add(pos)
        outputs = np.flatnonzero(batch.logits[:n])
        self._logits = np.full((n, N_VOCAB), -10.0, dtype=np.float32)
        for i in outputs:
            nxt = 1 + (int(batch.tokens[i]) % (N_VOCAB - 2))    # never 0 (EOS)
            self._logits[i, nxt] = 10.0
        self.n_decodes += 1

    def logits(self, i: int) -> np.ndarray:
        return self._logits[i]

    def logits_rows(self, indices) -> tuple[np.ndarray, np.ndarray]:
        return self._logits, np.asarray(indices, dtype=np.int64)

    def embedding(self, i: int) -> np.ndarray:
        return np.ones(4, dtype=np.float32)

    def sequence_embedding(self, seq_id: int) -> np.ndarray:
        return np.full(4, float(len(self.cells[seq_id])), dtype=np.float32)

    def set_embeddings(self, on: bool) -> None:
        self.embedding_mode = on

    # --- KV edits ----------------------------------------------------------------------
    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        lo = 0 if p0 < 0 else p0
        hi = float("inf") if p1 < 0 else p1
        self.cells[seq_id] = {p for p in self.cells[seq_id] if not lo <= p < hi}
        return True

    def seq_add(self, seq_id: int, p0: int, p1: int, delta: int) -> None:
        hi = float("inf") if p1 < 0 else p1
        self.cells[seq_id] = {p + delta if p0 <= p < hi else p for p in self.cells[seq_id]}

    def seq_div(self, seq_id: int, p0: int, p1: int, d: int) -> None:
        raise NotImplementedError

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        self.cells[dst] = set(self.cells[src])

    def set_lora(self, adapters, scales) -> None:
        """Record the adapter set of the batches that follow (the engine changes it per batch)."""
        self.lora = list(zip(adapters, scales))

    def clear(self) -> None:
        for seq in self.cells:
            self.cells[seq] = set()


class GreedySampler:
    seed = 0
    last_probs = None

    def sample(self, logits) -> int:
        return int(np.argmax(logits))

    def accept(self, token: int) -> None:
        pass


def greedy_factory(params, n_vocab, prompt_tokens, vocab, n_ctx=0):
    return GreedySampler()


def make_engine(ctx: FakeContext | None = None, **config) -> Engine:
    ctx = ctx or FakeContext()
    model = SimpleNamespace(vocab=FakeVocab(), chat_template=lambda name=None: None,
                            description=lambda: "fake", n_ctx_train=ctx.n_ctx, n_params=1,
                            size=1, n_embd=4)
    cfg = EngineConfig(n_slots=ctx.n_seq_max, n_batch=ctx.n_batch, **config)
    engine = Engine(model, ctx, cfg, greedy_factory)
    engine.start()
    return engine


def gen_request(n_prompt: int = 5, n_predict: int = 8, first: int = 10, **opts) -> Request:
    opts.setdefault("cache_prompt", False)
    return Request(prompt_tokens=list(range(first, first + n_prompt)),
                   options=GenerationOptions(n_predict=n_predict, **opts))


def wait_final(req: Request, timeout: float = 10.0):
    """Read a request's mailbox until its final event; (token events, final event)."""
    import time
    from llama_lib.engine import FinalEvent
    tokens = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in req.mailbox.get(0.2):
            if isinstance(ev, FinalEvent):
                return tokens, ev
            tokens.append(ev)
    raise AssertionError(f"request {req.id} got no final event within {timeout}s")


def wait_for(predicate, timeout: float = 5.0) -> bool:
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False



def sched_step(sched, token: int = 7):
    """One schedule/update round of a bare Scheduler where every entry that wants logits
    samples ``token``: (plan, results)."""
    plan = sched.schedule()
    results = sched.update(plan, {e.slot.id: token for e in plan.entries if e.wants_logits})
    for slot, tok in results:
        if tok is not None:
            sched.accept(slot, tok)
    return plan, results
