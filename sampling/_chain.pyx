# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# Directives: the owner indexes its buffers and memoryviews only inside sizes it checked
# itself, so Python's bounds and wraparound checks would only slow the per-token path.
"""The sampler chain: a compiled twin of ``sampling._reference``.

``Chain(plan)`` runs the stages of a ``sampling.sampler.ChainPlan`` over one sequence's
logits per generated token. It owns everything the kernels work on and allocates it once
(see ``_chain.pxd``); the work itself is split by meaning:

- ``_candidates``: the candidate set, its order, sorts, selections and softmax;
- ``_stages``: the stage kernels and the finals that pick the token;
- ``_rng.pxd``: the xoshiro256** generator (header-only), one per chain.
"""
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.math cimport INFINITY, expf, log2f
from libc.stdint cimport int32_t, uint64_t

from ._candidates cimport (begin, cand_t, flush_edits, select_top, select_top_cands,
                           softmax_final)
from ._rng cimport rng_seed
from ._stages cimport (FIN_DIST, FIN_GREEDY, FIN_MIROSTAT, FIN_MIROSTAT_V2, ST_DRY,
                       ST_MIN_P, ST_PENALTIES, ST_TAIL_FREE, ST_TEMPERATURE, ST_TOP_K,
                       ST_TOP_N_SIGMA, ST_TOP_P, ST_TYPICAL, ST_XTC, argmax_token, draw, dry,
                       logit_bias, min_p, mirostat, mirostat_v2, penalties, stage_t,
                       tail_free, temperature, top_k, top_n_sigma, top_p, typical, xtc)

import numpy as np

__all__ = ["Chain", "RowsDraw", "sample_rows", "start_rows"]


_STAGE_KINDS = {
    "top_k": ST_TOP_K, "top_p": ST_TOP_P, "min_p": ST_MIN_P, "tail_free": ST_TAIL_FREE,
    "typical": ST_TYPICAL, "temperature": ST_TEMPERATURE, "penalties": ST_PENALTIES,
    "dry": ST_DRY, "xtc": ST_XTC, "top_n_sigma": ST_TOP_N_SIGMA,
}
_FINAL_KINDS = {"dist": FIN_DIST, "greedy": FIN_GREEDY, "mirostat": FIN_MIROSTAT,
                "mirostat_v2": FIN_MIROSTAT_V2}


cdef void core_stages(core_t* k) noexcept nogil:
    cdef Py_ssize_t i
    cdef stage_t* s
    logit_bias(&k.c, k.bias_ids, k.bias_values, k.n_bias)
    for i in range(k.n_stages):
        s = &k.stages[i]
        if s.kind == ST_TOP_K:
            top_k(&k.c, s.k)
        elif s.kind == ST_TOP_P:
            top_p(&k.c, s.p, s.min_keep)
        elif s.kind == ST_MIN_P:
            min_p(&k.c, s.p, s.min_keep)
        elif s.kind == ST_TAIL_FREE:
            tail_free(&k.c, s.p, s.min_keep)
        elif s.kind == ST_TYPICAL:
            typical(&k.c, s.p, s.min_keep)
        elif s.kind == ST_TEMPERATURE:
            temperature(&k.c, s.temp, s.delta, s.exponent)
        elif s.kind == ST_TOP_N_SIGMA:
            top_n_sigma(&k.c, s.p)
        elif s.kind == ST_XTC:
            xtc(&k.c, &k.rng, s.probability, s.p, s.min_keep)
        elif s.kind == ST_PENALTIES:
            penalties(&k.c, &k.h, s)
        elif s.kind == ST_DRY:
            dry(&k.c, &k.h, s)


cdef int32_t core_run(core_t* k, const float* logits) noexcept nogil:
    begin(&k.c, logits)
    core_stages(k)
    if k.final_kind == FIN_GREEDY:
        if not k.c.full:
            softmax_final(&k.c)
        return argmax_token(&k.c)
    if k.final_kind == FIN_MIROSTAT:
        return k.c.data[mirostat(&k.c, &k.rng, k.mu, k.mirostat_m, k.c.n_vocab)].id
    if k.final_kind == FIN_MIROSTAT_V2:
        return k.c.data[mirostat_v2(&k.c, &k.rng, k.mu)].id
    return k.c.data[draw(&k.c, &k.rng)].id


cdef extern from "_pool.h" nogil:
    ctypedef void (*pool_fn)(void* arg, int part, int n_parts) noexcept nogil
    int pool_parts(int n_parts)
    void pool_run(pool_fn fn, void* arg, int n_parts)
    int pool_start(pool_fn fn, void* arg, int n_parts, int try_only)
    void pool_finish()
    ctypedef struct pool_latch:
        pass
    void latch_init(pool_latch* l)
    void latch_destroy(pool_latch* l)
    void latch_set(pool_latch* l, int32_t* slot, int32_t value)
    bint latch_ready(const int32_t* slot)
    void latch_wait(pool_latch* l, const int32_t* slot)
    long pool_claim(long* counter)


cdef struct rows_job:
    core_t** cores
    const float* table
    Py_ssize_t stride
    const int32_t* rows
    int32_t* out
    Py_ssize_t n


cdef void rows_part(void* arg, int part, int n_parts) noexcept nogil:
    cdef rows_job* job = <rows_job*> arg
    cdef Py_ssize_t i
    for i in range(job.n * part // n_parts, job.n * (part + 1) // n_parts):
        job.out[i] = core_run(job.cores[i], job.table + job.rows[i] * job.stride)


cdef collect_cores(list chains, const float[:, ::1] table, const int32_t[::1] rows,
                   core_t** cores, str caller):
    """cores[i] = the per-token state of chains[i], each chain checked against the table
    and its row (ValueError, TypeError for what is not a Chain)."""
    cdef Py_ssize_t i
    cdef Chain ch
    for i in range(len(chains)):
        ch = <Chain?> chains[i]
        if ch.n_vocab != table.shape[1]:
            raise ValueError(f"expected {ch.n_vocab} logits a row, got {table.shape[1]}")
        if not 0 <= rows[i] < table.shape[0]:
            raise ValueError(f"row {rows[i]} is outside the table")
        if ch.n_probs > 0:
            raise ValueError(f"{caller}: chains with n_probs sample one at a time")
        cores[i] = &ch.k


# below this many rows a second thread costs more to wake than it saves
cdef Py_ssize_t ROWS_PER_THREAD = 8


def sample_rows(list chains not None, const float[:, ::1] table not None,
                const int32_t[::1] rows not None, int32_t[::1] out not None, int n_threads=1):
    """Draw one token for each chain from its row of ``table`` (chains[i] from
    table[rows[i]]) into ``out``, with the GIL released once: the engine's step over every
    generating slot. ``n_threads`` > 1 splits the rows over that many OS threads (_pool.h),
    for machines whose cores are free while the step samples (the model on a GPU). Chains
    with n_probs > 0 are refused (their probabilities are Python lists); a chain appears at
    most once."""
    cdef Py_ssize_t n = len(chains)
    cdef rows_job job
    cdef int parts
    if rows.shape[0] != n or out.shape[0] != n:
        raise ValueError("chains, rows and out differ in length")
    if n == 0:
        return
    job.cores = <core_t**> PyMem_Malloc(n * sizeof(core_t*))
    if not job.cores:
        raise MemoryError()
    try:
        collect_cores(chains, table, rows, job.cores, "sample_rows")
        job.table = &table[0, 0]
        job.stride = table.shape[1]
        job.rows = &rows[0]
        job.out = &out[0]
        job.n = n
        parts = <int> min(<Py_ssize_t> max(1, n_threads), max(1, n // ROWS_PER_THREAD))
        with nogil:
            parts = pool_parts(parts)
            pool_run(rows_part, &job, parts)
    finally:
        PyMem_Free(job.cores)


cdef struct async_rows:
    rows_job job
    pool_latch latch
    long next                   # the first row no thread has claimed (pool_claim)


cdef inline bint draw_next(async_rows* a) noexcept nogil:
    """Claim the next row nobody draws yet and draw it; False when none is left."""
    cdef long i = pool_claim(&a.next)
    if i >= a.job.n:
        return False
    latch_set(&a.latch, &a.job.out[i], core_run(a.job.cores[i], a.job.table + a.job.rows[i] * a.job.stride))
    return True


cdef void async_part(void* arg, int part, int n_parts) noexcept nogil:
    # rows are claimed one at a time, in order, by the workers and the waiting caller
    while draw_next(<async_rows*> arg):
        pass


cdef class RowsDraw:
    """Draws running on worker threads (start_rows): ``token(k)`` is row k's token; if it is
    not drawn yet the caller draws the next unclaimed rows itself (without the GIL) until it
    is, rather than sleep; ``finish()`` waits for the workers and gives the pool back. Until
    then the chains, the table and the rows stay untouched by anyone but the draw (the
    caller may use a chain once its token is in: nobody reads it again)."""
    cdef async_rows a
    cdef core_t** cores
    cdef bint running
    cdef bint latched
    cdef object _keep           # the chains, the table, rows and out: alive while drawn
    cdef readonly object out

    def __dealloc__(self):
        self._finish()
        if self.latched:
            latch_destroy(&self.a.latch)
        PyMem_Free(self.cores)

    cdef _finish(self):
        if self.running:
            with nogil:
                pool_finish()
            self.running = False

    def finish(self) -> None:
        self._finish()

    def token(self, Py_ssize_t k, bint help=True) -> int:
        """Row k's token. ``help``: draw unclaimed rows on this thread while row k is not
        in; False: sleep until it is (another thread needs this core more), unless no
        worker runs."""
        if not 0 <= k < self.a.job.n:
            raise IndexError(f"row {k} is not in this draw")
        cdef const int32_t* slot = &self.a.job.out[k]
        if not self.running:
            help = True
        if not latch_ready(slot):
            with nogil:
                while not latch_ready(slot):
                    if not help or not draw_next(&self.a):   # all claimed: row k is being drawn
                        latch_wait(&self.a.latch, slot)
        return slot[0]


def start_rows(list chains not None, const float[:, ::1] table not None,
               const int32_t[::1] rows not None, int n_threads=1) -> RowsDraw:
    """sample_rows on ``n_threads`` worker threads, returning at once: the caller handles
    the tokens drawn first (``RowsDraw.token``) while the workers draw the rest, and draws
    rows itself whenever it would wait for one. With no worker (``n_threads`` 0, or none
    could start) the caller's token() calls draw them all."""
    cdef Py_ssize_t n = len(chains)
    cdef RowsDraw d = RowsDraw.__new__(RowsDraw)
    cdef int32_t[::1] o
    cdef int started
    if rows.shape[0] != n:
        raise ValueError("chains and rows differ in length")
    d.out = np.full(max(n, 1), -1, dtype=np.int32)
    o = d.out
    d.cores = <core_t**> PyMem_Malloc(max(n, 1) * sizeof(core_t*))
    if not d.cores:
        raise MemoryError()
    collect_cores(chains, table, rows, d.cores, "start_rows")
    d._keep = (chains, table, rows)
    d.a.job.cores = d.cores
    d.a.job.table = &table[0, 0]
    d.a.job.stride = table.shape[1]
    d.a.job.rows = &rows[0] if n else NULL
    d.a.job.out = &o[0]
    d.a.job.n = n
    d.a.next = 0
    latch_init(&d.a.latch)
    d.latched = True
    if n == 0:
        return d
    # Starting takes microseconds: the GIL stays held, unless another job has the pool
    # (released, another thread could go on with the GIL only for the whole of its turn).
    # No worker at all (n_threads 0, or none could start): token() draws every row on the
    # caller's thread.
    if n_threads <= 0:
        return d
    started = pool_start(async_part, &d.a, n_threads, 1)
    if started < 0:
        with nogil:
            started = pool_start(async_part, &d.a, n_threads, 0)
    d.running = started > 0
    return d


cdef class Chain:
    """One request's sampler: the stages of a ChainPlan, its RNG and its token history."""

    def __cinit__(self):
        self.k.stages = NULL
        self.history = NULL
        self.counts = NULL
        self.k.c.work = NULL
        self.k.c.edit_ids = NULL
        self.k.c.edit_values = NULL
        self.k.c.edit_slot = NULL
        self.k.c.edit_mark = NULL
        self.k.c.data = NULL
        self.k.c.scratch = NULL
        self.k.c.keys = NULL
        self.k.h.mark = NULL
        self.k.h.value = NULL
        self.k.h.found = NULL
        self.k.h.z = NULL

    def __init__(self, plan):
        cdef Py_ssize_t i, n = plan.n_vocab
        if n <= 0:
            raise ValueError("n_vocab must be positive")
        if self.k.c.work != NULL:
            raise RuntimeError("a Chain is initialized once")
        self.n_vocab = n
        self.seed = plan.seed
        self.n_probs = plan.n_probs
        self.last_probs = None
        self.last_prob = 0.0
        self.k.c.n_vocab = n
        self.k.c.work = <float*> PyMem_Malloc(n * sizeof(float))
        self.k.c.edit_ids = <int32_t*> PyMem_Malloc(n * sizeof(int32_t))
        self.k.c.edit_values = <float*> PyMem_Malloc(n * sizeof(float))
        self.k.c.edit_slot = <int32_t*> PyMem_Malloc(n * sizeof(int32_t))
        self.k.c.edit_mark = <int32_t*> PyMem_Calloc(n, sizeof(int32_t))
        self.k.c.data = <cand_t*> PyMem_Malloc(n * sizeof(cand_t))
        self.k.c.scratch = <cand_t*> PyMem_Malloc(n * sizeof(cand_t))
        self.k.c.keys = <uint64_t*> PyMem_Malloc(2 * n * sizeof(uint64_t))
        self.k.h.mark = <int32_t*> PyMem_Calloc(n, sizeof(int32_t))
        self.k.h.value = <int32_t*> PyMem_Malloc(n * sizeof(int32_t))
        if not (self.k.c.work and self.k.c.data and self.k.c.scratch and self.k.h.mark and self.k.h.value
                and self.k.c.edit_ids and self.k.c.edit_values and self.k.c.edit_slot
                and self.k.c.edit_mark and self.k.c.keys):
            raise MemoryError()
        self.k.c.full = False
        self.k.c.size = 0
        self.k.c.edit_stamp = 0
        self.k.h.stamp = 0
        rng_seed(&self.k.rng, <uint64_t> (plan.seed & 0xFFFFFFFFFFFFFFFF))

        keep = []
        ids = np.ascontiguousarray(plan.bias_ids, dtype=np.int32)
        values = np.ascontiguousarray(plan.bias_values, dtype=np.float32)
        keep += [ids, values]
        self._set_bias(ids, values)
        self._set_stages(plan.stages, keep)
        self._keep = keep
        self._set_final(plan.final)

        # the penalty counts follow the penalty stages' window; DRY reads the history only
        self.penalty_window = 0
        self.keep_history = False
        for i in range(self.k.n_stages):
            if self.k.stages[i].kind == ST_PENALTIES:
                if self.penalty_window and self.penalty_window != self.k.stages[i].last_n:
                    raise ValueError("penalty stages must share one window")
                self.penalty_window = self.k.stages[i].last_n
            if self.k.stages[i].kind in (ST_PENALTIES, ST_DRY):
                self.keep_history = True
        if self.penalty_window > 0:
            self.counts = <int32_t*> PyMem_Calloc(n, sizeof(int32_t))
            if not self.counts:
                raise MemoryError()
        self.k.h.counts = self.counts
        self.k.h.size = 0
        history = plan.history if self.keep_history else ()
        self._reserve(len(history) + 64)
        for t in history:
            self._push(t)

    def __dealloc__(self):
        PyMem_Free(self.k.stages)
        PyMem_Free(self.history)
        PyMem_Free(self.counts)
        PyMem_Free(self.k.c.work)
        PyMem_Free(self.k.c.edit_ids)
        PyMem_Free(self.k.c.edit_values)
        PyMem_Free(self.k.c.edit_slot)
        PyMem_Free(self.k.c.edit_mark)
        PyMem_Free(self.k.c.data)
        PyMem_Free(self.k.c.scratch)
        PyMem_Free(self.k.c.keys)
        PyMem_Free(self.k.h.mark)
        PyMem_Free(self.k.h.value)
        PyMem_Free(self.k.h.found)
        PyMem_Free(self.k.h.z)

    # --- construction ------------------------------------------------------------------
    cdef _set_bias(self, const int32_t[::1] ids, const float[::1] values):
        self.k.n_bias = ids.shape[0]
        if values.shape[0] != self.k.n_bias:
            raise ValueError("bias_ids and bias_values differ in length")
        for i in range(self.k.n_bias):
            if not 0 <= ids[i] < self.n_vocab:
                raise ValueError(f"logit bias token {ids[i]} is outside the vocabulary")
        self.k.bias_ids = &ids[0] if self.k.n_bias else NULL
        self.k.bias_values = &values[0] if self.k.n_bias else NULL

    cdef _set_stages(self, specs, list keep):
        cdef stage_t* s
        cdef const int32_t[::1] view
        self.k.n_stages = len(specs)
        self.k.stages = <stage_t*> PyMem_Calloc(max(1, self.k.n_stages), sizeof(stage_t))
        if not self.k.stages:
            raise MemoryError()
        for i, spec in enumerate(specs):
            s = &self.k.stages[i]
            kind = _STAGE_KINDS.get(spec.kind)
            if kind is None:
                raise ValueError(f"unknown sampler stage {spec.kind!r}")
            s.kind = kind
            if kind == ST_TOP_K:
                s.k = spec.k
            elif kind in (ST_TOP_P, ST_MIN_P, ST_TYPICAL):
                s.p = spec.p
                s.min_keep = spec.min_keep
            elif kind == ST_TAIL_FREE:
                s.p = spec.z
                s.min_keep = spec.min_keep
            elif kind == ST_TEMPERATURE:
                s.temp, s.delta, s.exponent = spec.temp, spec.delta, spec.exponent
            elif kind == ST_TOP_N_SIGMA:
                s.p = spec.n
            elif kind == ST_XTC:
                s.probability, s.p, s.min_keep = spec.probability, spec.threshold, spec.min_keep
            elif kind == ST_PENALTIES:
                s.last_n = spec.last_n
                s.repeat, s.freq, s.present = spec.repeat, spec.freq, spec.present
                s.skip_token = spec.skip_token
            elif kind == ST_DRY:
                s.multiplier, s.base = spec.multiplier, spec.base
                s.allowed_length, s.last_n = spec.allowed_length, spec.last_n
                table = spec.breakers
                if len(table.head_off) != self.n_vocab + 1:
                    raise ValueError("DRY breakers were built for another vocabulary")
                arrays = [np.ascontiguousarray(a, dtype=np.int32)
                          for a in (table.head_off, table.tail_off, table.tails)]
                keep.extend(arrays)
                view = arrays[0]
                s.head_off = &view[0]
                view = arrays[1]
                s.tail_off = &view[0]
                view = arrays[2]
                s.tails = &view[0] if view.shape[0] else s.tail_off
            if s.kind in (ST_PENALTIES, ST_DRY) and s.last_n <= 0:
                raise ValueError(f"{spec.kind}: last_n must be >= 1")

    cdef _set_final(self, final):
        kind = _FINAL_KINDS.get(final.kind)
        if kind is None:
            raise ValueError(f"unknown final sampler {final.kind!r}")
        self.k.final_kind = kind
        if kind in (FIN_MIROSTAT, FIN_MIROSTAT_V2):
            self.k.tau, self.k.eta = final.tau, final.eta
            self.k.mu = 2.0 * self.k.tau
            self.k.mirostat_m = getattr(final, "m", 100)

    # --- history -----------------------------------------------------------------------
    cdef _reserve(self, Py_ssize_t capacity):
        cdef int32_t* grown
        if capacity <= self.history_capacity:
            return
        for field in range(3):
            if field == 0:
                grown = <int32_t*> PyMem_Realloc(self.history, capacity * sizeof(int32_t))
                if grown:
                    self.history = grown
            elif field == 1:
                grown = <int32_t*> PyMem_Realloc(self.k.h.found, capacity * sizeof(int32_t))
                if grown:
                    self.k.h.found = grown
            else:
                grown = <int32_t*> PyMem_Realloc(self.k.h.z, capacity * sizeof(int32_t))
                if grown:
                    self.k.h.z = grown
            if not grown:
                raise MemoryError()
        self.history_capacity = capacity
        self.k.h.tokens = self.history

    cdef _push(self, int32_t token):
        cdef Py_ssize_t out
        if not 0 <= token < self.n_vocab:
            return
        if self.k.h.size == self.history_capacity:
            self._reserve(2 * self.history_capacity)
        self.history[self.k.h.size] = token
        self.k.h.size += 1
        if self.counts:
            self.counts[token] += 1
            out = self.k.h.size - 1 - self.penalty_window
            if out >= 0:
                self.counts[self.history[out]] -= 1

    def sample(self, const float[::1] logits not None) -> int:
        cdef int32_t token
        if logits.shape[0] != self.n_vocab:
            raise ValueError(f"expected {self.n_vocab} logits, got {logits.shape[0]}")
        with nogil:
            token = core_run(&self.k, &logits[0])
        if self.n_probs > 0:
            self.last_probs = self._top_probs(self.n_probs)
            self.last_prob = self._prob_of(token)
        return token

    def accept(self, int token) -> None:
        cdef Py_ssize_t i
        cdef float surprise
        if self.k.final_kind in (FIN_MIROSTAT, FIN_MIROSTAT_V2) and not self.k.c.full:
            for i in range(self.k.c.size):
                if self.k.c.data[i].id == token:
                    surprise = -log2f(self.k.c.data[i].p)
                    self.k.mu = self.k.mu - self.k.eta * (surprise - self.k.tau)
                    break
        if self.keep_history:
            self._push(token)

    cdef list _top_probs(self, Py_ssize_t n):
        """The n most probable of the set the last draw saw (the full one for greedy)."""
        cdef Py_ssize_t i, m
        cdef float mx
        cdef double total = 0.0
        cdef const float* L
        if self.k.c.full:
            flush_edits(&self.k.c)
            L = self.k.c.full_logits
            m = select_top(L, self.n_vocab, n, self.k.c.scratch)
            if m == 0:
                return []
            mx = self.k.c.scratch[0].logit
            with nogil:
                for i in range(self.n_vocab):
                    if L[i] > -INFINITY:
                        total += expf(L[i] - mx)
            return [(self.k.c.scratch[i].id, <float> (expf(self.k.c.scratch[i].logit - mx) / total))
                    for i in range(m)]
        if self.k.c.sorted:
            return [(self.k.c.data[i].id, self.k.c.data[i].p) for i in range(min(n, self.k.c.size))]
        m = select_top_cands(self.k.c.data, self.k.c.size, n, self.k.c.scratch)
        return [(self.k.c.scratch[i].id, self.k.c.scratch[i].p) for i in range(m)]

    cdef double _prob_of(self, int32_t token) noexcept:
        """The probability of ``token`` in the set the last draw saw (0 if it was cut)."""
        cdef Py_ssize_t i
        cdef float mx = -INFINITY
        cdef double total = 0.0
        cdef const float* L
        if self.k.c.full:
            flush_edits(&self.k.c)
            L = self.k.c.full_logits
            with nogil:
                for i in range(self.n_vocab):
                    if L[i] > mx:
                        mx = L[i]
                if mx > -INFINITY:
                    for i in range(self.n_vocab):
                        if L[i] > -INFINITY:
                            total += expf(L[i] - mx)
            if total <= 0.0 or not L[token] > -INFINITY:
                return 0.0
            return expf(L[token] - mx) / total
        for i in range(self.k.c.size):
            if self.k.c.data[i].id == token:
                return self.k.c.data[i].p
        return 0.0

    # --- inspection (tests, the twin comparison) ---------------------------------------
    @property
    def mirostat_mu(self) -> float:
        return self.k.mu

    def apply(self, const float[::1] logits not None):
        """Run the stages only (no final draw); return the set as (ids, logits, p) arrays.

        p is the softmax of the surviving logits. A set no stage cut comes back as every
        finite token in id order."""
        if logits.shape[0] != self.n_vocab:
            raise ValueError(f"expected {self.n_vocab} logits, got {logits.shape[0]}")
        with nogil:
            begin(&self.k.c, &logits[0])
            core_stages(&self.k)
            softmax_final(&self.k.c)
        return self.candidates()

    def candidates(self):
        """The set the last draw saw, as (ids, logits, p) arrays in the chain's order."""
        cdef Py_ssize_t i
        if self.k.c.full:
            raise ValueError("the last draw saw the whole vocabulary (greedy); nothing to show")
        ids = np.empty(self.k.c.size, dtype=np.int32)
        out_logits = np.empty(self.k.c.size, dtype=np.float32)
        p = np.empty(self.k.c.size, dtype=np.float32)
        cdef int32_t[::1] vi = ids
        cdef float[::1] vl = out_logits, vp = p
        for i in range(self.k.c.size):
            vi[i] = self.k.c.data[i].id
            vl[i] = self.k.c.data[i].logit
            vp[i] = self.k.c.data[i].p
        return ids, out_logits, p
