# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# Directives: every kernel indexes only inside sizes it checked itself and divides only by
# values it guarded, so Python's bounds and zero-division checks would only slow the
# per-token loop (the twin in _reference.py is where those mistakes would show).
"""The sampler chain: a compiled twin of ``sampling._reference`` (see ``_chain.pxd``).

``Chain(plan)`` runs the stages of a ``sampling.sampler.ChainPlan`` over one sequence's
logits per generated token. Semantics, stage by stage, are those of ``_reference.py``;
only the data layout and the speed tricks differ, and each trick says what it buys.

Arithmetic that decides a cut (softmax sums, cumulative probabilities, entropies) is done
in float32, in set order, exactly as libllama does it: a double sum is more accurate, but
over ~3000 candidates the two differ by ~1e-5, enough to move a top_p cut by a few tokens
and lose agreement with the oracle.
"""
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.math cimport INFINITY, M_LN2 as LN2, expf, fabsf, log, log2f, logf, pow, powf, sqrtf
from libc.stdint cimport INT32_MAX, int32_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove, memset

import numpy as np

__all__ = ["Chain"]

# Above this k, top_k sorts instead of selecting by insertion (the insertion select costs
# about k * ln(n / k) * k / 2 moves; at 1024 that is about the cost of a radix sort).
cdef Py_ssize_t SELECT_MAX = 1024
# top_p over an unsorted set first tries the best 256 (libllama's heuristic): a nucleus
# rarely needs more, and selecting 256 of 49152 costs ~0.1 ms against ~1 ms for a sort.
cdef Py_ssize_t TOP_P_FIRST = 256


# ======================================================================================
# ordering
# ======================================================================================
cdef inline bint before(const cand_t* a, const cand_t* b) noexcept nogil:
    """The one candidate order: higher logit first, lower id first among equals."""
    return a.logit > b.logit or (a.logit == b.logit and a.id < b.id)


cdef union bits32:
    float f
    uint32_t u


cdef inline uint32_t order_key(float logit) noexcept nogil:
    """A key whose ascending order is descending logit order: positive floats' bits flipped
    (largest first), then negative floats' bits as they are (closest to zero first)."""
    cdef bits32 b
    cdef uint32_t sign = (<uint32_t> 1) << 31
    b.f = logit + <float> 0.0       # -0.0 -> +0.0: the comparator treats them as equal
    return b.u if b.u & sign else ~(b.u | sign)


cdef inline float key_logit(uint32_t key) noexcept nogil:
    cdef bits32 b
    cdef uint32_t sign = (<uint32_t> 1) << 31
    b.u = key if key & sign else ~key & (sign - 1)
    return b.f


cdef void radix_sort(cand_t* a, Py_ssize_t n, uint64_t* keys) noexcept nogil:
    # LSD radix sort of (order_key(logit) << 32 | id), 8 bits a pass, passes whose digit is
    # the same everywhere skipped. 49152 candidates: ~1 ms, against ~30 ms for qsort with
    # a comparator call per comparison. keys has capacity 2n.
    cdef Py_ssize_t counts[8][256]
    cdef Py_ssize_t i, d, total, c
    cdef uint64_t k
    cdef uint64_t* src = keys
    cdef uint64_t* dst = keys + n
    cdef uint64_t* tmp
    memset(counts, 0, sizeof(counts))
    for i in range(n):
        k = (<uint64_t> order_key(a[i].logit) << 32) | <uint32_t> a[i].id
        src[i] = k
        for d in range(8):
            counts[d][(k >> (8 * d)) & 255] += 1
    for d in range(8):
        if counts[d][(src[0] >> (8 * d)) & 255] == n:
            continue
        total = 0
        for i in range(256):
            c = counts[d][i]
            counts[d][i] = total
            total += c
        for i in range(n):
            k = src[i]
            dst[counts[d][(k >> (8 * d)) & 255]] = k
            counts[d][(k >> (8 * d)) & 255] += 1
        tmp = src
        src = dst
        dst = tmp
    for i in range(n):
        a[i].id = <int32_t> <uint32_t> src[i]
        a[i].logit = key_logit(<uint32_t> (src[i] >> 32))
        a[i].p = 0.0


cdef void sort_range(cands_t* c, cand_t* a, Py_ssize_t n) noexcept nogil:
    """Sort a[:n] by the candidate order. Keeps id and logit; p is left unspecified."""
    cdef Py_ssize_t i, j
    cdef cand_t item
    if n > 32:
        radix_sort(a, n, c.keys)
        return
    for i in range(1, n):           # small sets (after top_k): insertion beats the passes
        item = a[i]
        j = i
        while j > 0 and before(&item, &a[j - 1]):
            a[j] = a[j - 1]
            j -= 1
        a[j] = item


cdef inline Py_ssize_t insert_top(cand_t* out, Py_ssize_t count, Py_ssize_t k,
                                  int32_t token, float logit) noexcept nogil:
    """Insert into the sorted out[:count] (capacity k), dropping the last when full."""
    cdef Py_ssize_t j = count if count < k else k - 1
    while j > 0 and out[j - 1].logit < logit:   # equal logits keep the earlier (lower id) first
        out[j] = out[j - 1]
        j -= 1
    out[j].id = token
    out[j].logit = logit
    out[j].p = 0.0
    return count + 1 if count < k else k


cdef inline float max2(float a, float b) noexcept nogil:
    return a if a > b else b


cdef inline float block_max(const float* x) noexcept nogil:
    """The largest of x[0:16]: a branch-free tree of maxss, no data-dependent jumps."""
    cdef float a0 = max2(x[0], x[8]), a1 = max2(x[1], x[9]), a2 = max2(x[2], x[10])
    cdef float a3 = max2(x[3], x[11]), a4 = max2(x[4], x[12]), a5 = max2(x[5], x[13])
    cdef float a6 = max2(x[6], x[14]), a7 = max2(x[7], x[15])
    return max2(max2(max2(a0, a4), max2(a1, a5)), max2(max2(a2, a6), max2(a3, a7)))


cdef Py_ssize_t select_top(const float* logits, Py_ssize_t n, Py_ssize_t k,
                           cand_t* out) noexcept nogil:
    # One pass with a running floor, 16 logits at a time: a block whose maximum does not
    # beat the k-th best so far is skipped after one branch instead of sixteen. On the
    # 49152 vocab with k=40 (warm cache): ~25 us, against ~100 us with a branch per logit
    # and ~150 us for a partial sort of a materialized set.
    cdef Py_ssize_t i, j, count = 0
    cdef float v, floor = -INFINITY
    if k > n:
        k = n
    if k <= 0:
        return 0
    i = 0
    while i < n:
        if i + 16 <= n and not (block_max(logits + i) > floor):
            i += 16
            continue
        for j in range(i, i + 16 if i + 16 <= n else n):
            v = logits[j]
            if v > floor:           # false for -inf and NaN: they never become candidates
                count = insert_top(out, count, k, <int32_t> j, v)
                if count == k:
                    floor = out[k - 1].logit
        i += 16
    return count


cdef Py_ssize_t select_top_cands(const cand_t* src, Py_ssize_t n, Py_ssize_t k,
                                 cand_t* out) noexcept nogil:
    """select_top over a compact set; candidates keep their p. Ties go to the lower id."""
    cdef Py_ssize_t i, j, count = 0
    cdef cand_t item
    if k > n:
        k = n
    for i in range(n):
        item = src[i]
        if count == k and not before(&item, &out[k - 1]):
            continue
        j = count if count < k else k - 1
        while j > 0 and before(&item, &out[j - 1]):
            out[j] = out[j - 1]
            j -= 1
        out[j] = item
        if count < k:
            count += 1
    return count


# ======================================================================================
# set plumbing
# ======================================================================================
cdef inline void only_token_zero(cands_t* c) noexcept nogil:
    c.data[0].id = 0
    c.data[0].logit = 0.0
    c.data[0].p = 1.0
    c.size = 1
    c.sorted = True
    c.full = False


cdef void begin(cands_t* c, const float* logits) noexcept nogil:
    c.full = True
    c.full_logits = logits
    c.sorted = False
    c.n_edits = 0
    if c.edit_stamp == INT32_MAX:
        memset(c.edit_mark, 0, c.n_vocab * sizeof(int32_t))
        c.edit_stamp = 0
    c.edit_stamp += 1


cdef inline bint edited(const cands_t* c, int32_t token) noexcept nogil:
    return c.edit_mark[token] == c.edit_stamp


cdef float full_logit(const cands_t* c, int32_t token) noexcept nogil:
    if c.n_edits and edited(c, token):
        return c.edit_values[c.edit_slot[token]]
    return c.full_logits[token]


cdef void set_full_logit(cands_t* c, int32_t token, float logit) noexcept nogil:
    # An edit instead of a write: copying 49152 logits to change 64 of them costs more
    # than the rest of the default chain (10-100 us, depending on the buffers' alignment).
    if edited(c, token):
        c.edit_values[c.edit_slot[token]] = logit
        return
    c.edit_mark[token] = c.edit_stamp
    c.edit_slot[token] = <int32_t> c.n_edits
    c.edit_ids[c.n_edits] = token
    c.edit_values[c.n_edits] = logit
    c.n_edits += 1


cdef void flush_edits(cands_t* c) noexcept nogil:
    cdef Py_ssize_t i
    if not c.full or c.n_edits == 0:
        return
    if c.full_logits != c.work:
        memcpy(c.work, c.full_logits, c.n_vocab * sizeof(float))
        c.full_logits = c.work
    for i in range(c.n_edits):
        c.work[c.edit_ids[i]] = c.edit_values[i]
    c.n_edits = 0
    c.edit_stamp += 1       # begin() handles the wrap; one flush per set at most


cdef Py_ssize_t insert_cand(cand_t* out, Py_ssize_t count, Py_ssize_t k,
                            const cand_t* item) noexcept nogil:
    """Insert into the sorted out[:count] (capacity k) by the candidate order."""
    cdef Py_ssize_t j
    if count == k and not before(item, &out[k - 1]):
        return count
    j = count if count < k else k - 1
    while j > 0 and before(item, &out[j - 1]):
        out[j] = out[j - 1]
        j -= 1
    out[j] = item[0]
    return count + 1 if count < k else k


cdef Py_ssize_t select_top_edited(cands_t* c, Py_ssize_t k, cand_t* out) noexcept nogil:
    """select_top over a full set with edits: the best k + n_edits of the engine's logits
    hold the best k unedited tokens; merge the edited ones in at their new logits."""
    cdef Py_ssize_t i, m, count = 0
    cdef cand_t item
    if c.n_edits == 0:
        return select_top(c.full_logits, c.n_vocab, k, out)
    m = select_top(c.full_logits, c.n_vocab, k + c.n_edits, c.scratch)
    for i in range(m):
        if count < k and not edited(c, c.scratch[i].id):
            out[count] = c.scratch[i]
            count += 1
    for i in range(c.n_edits):
        if c.edit_values[i] > -INFINITY:
            item.id = c.edit_ids[i]
            item.logit = c.edit_values[i]
            item.p = 0.0
            count = insert_cand(out, count, k, &item)
    return count


cdef void materialize(cands_t* c) noexcept nogil:
    cdef Py_ssize_t i, m = 0
    cdef float v
    if not c.full:
        return
    flush_edits(c)
    for i in range(c.n_vocab):
        v = c.full_logits[i]
        if v > -INFINITY:
            c.data[m].id = <int32_t> i
            c.data[m].logit = v
            c.data[m].p = 0.0
            m += 1
    if m == 0:
        only_token_zero(c)
        return
    c.size = m
    c.full = False
    c.sorted = m == 1


cdef void sort_desc(cands_t* c) noexcept nogil:
    materialize(c)
    if not c.sorted:
        sort_range(c, c.data, c.size)
        c.sorted = True


cdef float softmax_total(cands_t* c, float* mx) noexcept nogil:
    """The max logit and the float sum of expf(logit - max), in set order (libllama's)."""
    cdef Py_ssize_t i
    cdef float total = 0.0
    materialize(c)
    mx[0] = c.data[0].logit
    if not c.sorted:
        for i in range(1, c.size):
            if c.data[i].logit > mx[0]:
                mx[0] = c.data[i].logit
    for i in range(c.size):
        total += expf(c.data[i].logit - mx[0])
    return total


cdef void softmax(cands_t* c) noexcept nogil:
    cdef Py_ssize_t i
    cdef float mx, total = softmax_total(c, &mx)
    for i in range(c.size):
        c.data[i].p = expf(c.data[i].logit - mx) / total


cdef void softmax_final(cands_t* c) noexcept nogil:
    """softmax with a double sum: the probabilities a draw uses and n_probs reports (as
    libllama's dist computes them)."""
    cdef Py_ssize_t i
    cdef float mx, e
    cdef double total = 0.0
    materialize(c)
    mx = c.data[0].logit
    if not c.sorted:
        for i in range(1, c.size):
            if c.data[i].logit > mx:
                mx = c.data[i].logit
    for i in range(c.size):
        e = expf(c.data[i].logit - mx)
        c.data[i].p = e
        total += e
    for i in range(c.size):
        c.data[i].p = <float> (c.data[i].p / total)


cdef void keep_marked(cands_t* c) noexcept nogil:
    """Compact the set to the candidates whose p is -1, in their order."""
    cdef Py_ssize_t i, m = 0
    for i in range(c.size):
        if c.data[i].p == -1.0:
            c.data[m] = c.data[i]
            m += 1
    c.size = m


# ======================================================================================
# stages
# ======================================================================================
cdef void top_k(cands_t* c, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t m
    if k <= 0:
        return
    if c.full and k <= SELECT_MAX:
        m = select_top_edited(c, k, c.data)
        if m == 0:
            only_token_zero(c)
            return
        c.size = m
        c.full = False
        c.sorted = True
        return
    materialize(c)
    if not c.sorted:
        if k < c.size and k <= SELECT_MAX:
            m = select_top_cands(c.data, c.size, k, c.scratch)
            memcpy(c.data, c.scratch, m * sizeof(cand_t))
            c.size = m
        else:
            sort_range(c, c.data, c.size)
        c.sorted = True
    if k < c.size:
        c.size = k


cdef void top_p(cands_t* c, double p, Py_ssize_t min_keep) noexcept nogil:
    cdef Py_ssize_t i, m, last
    cdef float cum = 0.0, fp = <float> p, mx, total
    if p >= 1.0:
        return
    total = softmax_total(c, &mx)    # over the whole current set, before any cut
    for i in range(c.size):
        c.data[i].p = expf(c.data[i].logit - mx) / total
    if not c.sorted and c.size > TOP_P_FIRST:
        m = select_top_cands(c.data, c.size, TOP_P_FIRST, c.scratch)
        for i in range(m):
            cum += c.scratch[i].p
            if cum >= fp and i + 1 >= min_keep:
                memcpy(c.data, c.scratch, (i + 1) * sizeof(cand_t))
                c.size = i + 1
                c.sorted = True
                return
        cum = 0.0
    if not c.sorted:
        sort_range(c, c.data, c.size)
        c.sorted = True
        for i in range(c.size):
            c.data[i].p = expf(c.data[i].logit - mx) / total
    last = c.size
    for i in range(c.size):
        cum += c.data[i].p
        if cum >= fp and i + 1 >= min_keep:
            last = i + 1
            break
    c.size = last


cdef void min_p(cands_t* c, double p, Py_ssize_t min_keep) noexcept nogil:
    cdef Py_ssize_t i, count = 0
    cdef float mx = -INFINITY, floor
    cdef const float* L
    if p <= 0.0:
        return
    if c.full:
        flush_edits(c)
        L = c.full_logits
        for i in range(c.n_vocab):
            if L[i] > mx:
                mx = L[i]
        if mx == -INFINITY:
            materialize(c)
            return
        floor = mx + logf(<float> p)
        for i in range(c.n_vocab):
            if L[i] >= floor:
                count += 1
        if count >= min_keep:
            count = 0
            for i in range(c.n_vocab):
                if L[i] >= floor:
                    c.data[count].id = <int32_t> i
                    c.data[count].logit = L[i]
                    c.data[count].p = 0.0
                    count += 1
            c.size = count
            c.full = False
            c.sorted = False
            return
        materialize(c)
    if not c.sorted:
        mx = c.data[0].logit
        for i in range(1, c.size):
            if c.data[i].logit > mx:
                mx = c.data[i].logit
        floor = mx + logf(<float> p)
        for i in range(c.size):
            if c.data[i].logit >= floor:
                count += 1
        if count >= min_keep:
            count = 0
            for i in range(c.size):
                if c.data[i].logit >= floor:
                    c.data[count] = c.data[i]
                    count += 1
            c.size = count
            return
        sort_range(c, c.data, c.size)
        c.sorted = True
    floor = c.data[0].logit + logf(<float> p)
    i = 1
    while i < c.size and (c.data[i].logit >= floor or i < min_keep):
        i += 1
    c.size = i


cdef void tail_free(cands_t* c, double z, Py_ssize_t min_keep) noexcept nogil:
    # tail-free sampling (removed from libllama in 2024; this follows its last version)
    cdef Py_ssize_t i, n2, last
    cdef float d1a, d1b, total = 0.0, cum = 0.0, fz = <float> z
    cdef cand_t* d2 = c.scratch      # second derivatives in scratch[i].p
    if z >= 1.0:
        return
    materialize(c)
    if c.size <= 2:
        return
    sort_desc(c)
    softmax(c)
    n2 = c.size - 2
    for i in range(n2):
        d1a = c.data[i].p - c.data[i + 1].p
        d1b = c.data[i + 1].p - c.data[i + 2].p
        d2[i].p = fabsf(d1a - d1b)
        total += d2[i].p
    for i in range(n2):
        d2[i].p = d2[i].p / total if total > <float> 1e-6 else <float> 1.0 / <float> n2
    if min_keep < 1:
        min_keep = 1
    last = c.size
    for i in range(n2):
        cum += d2[i].p
        if cum > fz and i >= min_keep:
            last = i
            break
    c.size = last


cdef void typical(cands_t* c, double p, Py_ssize_t min_keep) noexcept nogil:
    cdef Py_ssize_t i, last
    cdef float entropy = 0.0, cum = 0.0, q, fp = <float> p
    if p >= 1.0:
        return
    sort_desc(c)
    softmax(c)
    for i in range(c.size):
        q = c.data[i].p
        if q > 0.0:
            entropy += -q * logf(q)
    # Order positions by |-log p - H| ascending, ties by position: in scratch as (position,
    # -score) so the one comparator (logit desc, id asc) gives exactly that order.
    for i in range(c.size):
        q = c.data[i].p
        c.scratch[i].id = <int32_t> i
        c.scratch[i].logit = -fabsf(-logf(q) - entropy) if q > 0.0 else -INFINITY
    sort_range(c, c.scratch, c.size)
    last = c.size
    for i in range(c.size):
        cum += c.data[c.scratch[i].id].p
        if cum > fp and (min_keep == 0 or i >= min_keep - 1):
            last = i + 1
            break
    for i in range(last):
        c.data[c.scratch[i].id].p = -1.0
    keep_marked(c)                   # survivors stay in logit order


cdef void scale_logits(cands_t* c, float temp) noexcept nogil:
    cdef Py_ssize_t i, best = 0
    materialize(c)
    if temp <= 0.0:                  # zero temperature: only the first best logit survives
        for i in range(1, c.size):
            if c.data[i].logit > c.data[best].logit:
                best = i
        c.data[0] = c.data[best]
        c.size = 1
        c.sorted = True
        return
    for i in range(c.size):
        c.data[i].logit = c.data[i].logit / temp


cdef void temperature(cands_t* c, double temp, double delta, double exponent) noexcept nogil:
    cdef Py_ssize_t i
    cdef float entropy = 0.0, q, max_entropy, lo, hi, one = 1.0
    cdef float ft = <float> temp, fd = <float> delta
    if delta <= 0.0:
        scale_logits(c, ft)
        return
    materialize(c)
    if c.size <= 1:
        return
    max_entropy = -logf(one / <float> c.size)
    sort_desc(c)
    softmax(c)
    for i in range(c.size):
        q = c.data[i].p
        if q > 0.0:
            entropy -= q * logf(q)
    lo = ft - fd if ft - fd > 0.0 else 0.0
    hi = ft + fd
    scale_logits(c, lo + (hi - lo) * powf(entropy / max_entropy, <float> exponent))


cdef void top_n_sigma(cands_t* c, double n) noexcept nogil:
    # float sums in set order, the square added in double as libllama's pow() does
    cdef Py_ssize_t i, count = 0, valid = 0
    cdef float total = 0.0, mean, acc = 0.0, floor, mx = -INFINITY, v, d
    cdef const float* L
    if n <= 0.0:
        return
    if c.full:
        flush_edits(c)
        L = c.full_logits
        for i in range(c.n_vocab):
            v = L[i]
            if v > -INFINITY:
                valid += 1
                total += v
                if v > mx:
                    mx = v
        if valid == 0:
            materialize(c)
            return
        mean = total / <float> valid
        for i in range(c.n_vocab):
            v = L[i]
            if v > -INFINITY:
                d = v - mean
                acc = <float> (<double> acc + <double> d * <double> d)
        floor = mx - (<float> n) * sqrtf(acc / <float> valid)
        for i in range(c.n_vocab):
            v = L[i]
            if v > -INFINITY and v >= floor:
                c.data[count].id = <int32_t> i
                c.data[count].logit = v
                c.data[count].p = 0.0
                count += 1
        c.size = count
        c.full = False
        c.sorted = False
        return
    if c.size <= 1:
        return
    for i in range(c.size):
        v = c.data[i].logit
        total += v
        if v > mx:
            mx = v
    mean = total / <float> c.size
    for i in range(c.size):
        d = c.data[i].logit - mean
        acc = <float> (<double> acc + <double> d * <double> d)
    floor = mx - (<float> n) * sqrtf(acc / <float> c.size)
    for i in range(c.size):
        if c.data[i].logit >= floor:
            c.data[count] = c.data[i]
            count += 1
    c.size = count


cdef void xtc(cands_t* c, rng_t* rng, double probability, double threshold,
              Py_ssize_t min_keep) noexcept nogil:
    cdef Py_ssize_t i, size, pos_last = 0
    if probability <= 0.0 or threshold > 0.5:
        return
    size = c.n_vocab if c.full else c.size
    if size < 2:
        return
    if rng_uniform(rng) > probability:
        return
    sort_desc(c)
    softmax(c)
    for i in range(c.size):
        if c.data[i].p >= <float> threshold:
            pos_last = i
        else:
            break
    if c.size - pos_last >= min_keep and pos_last > 0:
        memmove(c.data, c.data + pos_last, (c.size - pos_last) * sizeof(cand_t))
        c.size -= pos_last


cdef inline void next_stamp(cands_t* c, history_t* h) noexcept nogil:
    if h.stamp == INT32_MAX:
        memset(h.mark, 0, c.n_vocab * sizeof(int32_t))
        h.stamp = 0
    h.stamp += 1


cdef inline float penalize(float logit, int32_t count, const stage_t* s) noexcept nogil:
    # multiply negative logits rather than divide them, so a penalty always lowers a logit
    if logit <= 0.0:
        logit = logit * s.repeat
    else:
        logit = logit / s.repeat
    return logit - (<float> count * s.freq + (<float> 1.0 if count > 0 else <float> 0.0) * s.present)


cdef void penalties(cands_t* c, history_t* h, const stage_t* s) noexcept nogil:
    cdef Py_ssize_t i, start
    cdef int32_t t, count
    if c.full:
        next_stamp(c, h)
        start = h.size - s.last_n if h.size > s.last_n else 0
        for i in range(start, h.size):
            t = h.tokens[i]
            if t == s.skip_token or h.mark[t] == h.stamp:
                continue
            h.mark[t] = h.stamp
            set_full_logit(c, t, penalize(full_logit(c, t), h.counts[t], s))
        return
    for i in range(c.size):
        t = c.data[i].id
        count = h.counts[t]
        if count > 0 and t != s.skip_token:
            c.data[i].logit = penalize(c.data[i].logit, count, s)
    c.sorted = False


cdef inline bint single_token_breaker(const stage_t* s, int32_t t) noexcept nogil:
    cdef int32_t e
    for e in range(s.head_off[t], s.head_off[t + 1]):
        if s.tail_off[e + 1] == s.tail_off[e]:
            return True
    return False


cdef Py_ssize_t dry_repeat_limit(history_t* h, const stage_t* s, Py_ssize_t n) noexcept nogil:
    """How far back a repeat may reach: up to the most recent sequence breaker, or n."""
    cdef Py_ssize_t i, o, length, longest
    cdef const int32_t* back = h.tokens + h.size - 1     # back[-i]: i tokens before the last
    cdef int32_t t, e
    cdef bint match
    for i in range(n):
        t = back[-i]
        if s.head_off[t] == s.head_off[t + 1]:
            continue
        longest = -1
        for e in range(s.head_off[t], s.head_off[t + 1]):
            length = s.tail_off[e + 1] - s.tail_off[e]
            if length > longest and length <= i:
                match = True
                for o in range(length):
                    if s.tails[s.tail_off[e] + o] != back[-(i - o - 1)]:
                        match = False
                        break
                if match:
                    longest = length
        if longest >= 0:
            return i - longest
    return n


cdef inline float dry_penalty(const stage_t* s, int32_t length, int max_exponent) noexcept nogil:
    cdef int exponent = length - <int> s.allowed_length
    if max_exponent > 0 and exponent > max_exponent:
        exponent = max_exponent
    return <float> (s.multiplier * pow(<double> s.base, exponent))


cdef void dry(cands_t* c, history_t* h, const stage_t* s) noexcept nogil:
    # DRY ("don't repeat yourself", from koboldcpp): a token that would extend a sequence
    # already seen in the window loses multiplier * base^(length - allowed_length).
    cdef Py_ssize_t n, i, k, lo = 0, hi = 0, zk, limit, n_found = 0, length
    cdef const int32_t* back = h.tokens + h.size - 1
    cdef int32_t t
    cdef int max_exponent = 0
    cdef float penalty
    n = h.size if h.size < s.last_n else s.last_n
    if n <= s.allowed_length:
        return
    limit = dry_repeat_limit(h, s, n)
    if limit < s.allowed_length:
        return
    # Z-function of the reversed window: z[k] = how many of the latest tokens also end
    # k tokens earlier (linear time, the Z-box [lo, hi) saves re-comparing).
    for k in range(1, n):
        zk = 0
        if k < hi:
            zk = hi - k if hi - k < h.z[k - lo] else h.z[k - lo]
        while k + zk < n and back[-zk] == back[-(k + zk)]:
            zk += 1
        h.z[k] = <int32_t> zk
        if k + zk > hi:
            lo = k
            hi = k + zk
    # the token that followed each earlier occurrence would extend the repeat
    next_stamp(c, h)
    for k in range(1, n):
        length = h.z[k] if h.z[k] < limit else limit
        if length < s.allowed_length:
            continue
        t = back[-(k - 1)]
        if h.mark[t] != h.stamp:
            h.mark[t] = h.stamp
            h.value[t] = <int32_t> length
            h.found[n_found] = t
            n_found += 1
        elif h.value[t] < length:
            h.value[t] = <int32_t> length
    if s.base > 1.000001:
        max_exponent = <int> (88.7228391 / log(s.base))
    if c.full:
        for i in range(n_found):
            t = h.found[i]
            if not single_token_breaker(s, t):
                set_full_logit(c, t, full_logit(c, t) - dry_penalty(s, h.value[t], max_exponent))
        return
    for i in range(c.size):
        t = c.data[i].id
        if h.mark[t] == h.stamp and not single_token_breaker(s, t):
            c.data[i].logit = c.data[i].logit - dry_penalty(s, h.value[t], max_exponent)
    c.sorted = False


cdef void logit_bias(cands_t* c, const int32_t* ids, const float* values,
                     Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if n == 0 or not c.full:
        return
    for i in range(n):
        set_full_logit(c, ids[i], full_logit(c, ids[i]) + values[i])


# ======================================================================================
# finals
# ======================================================================================
cdef Py_ssize_t draw(cands_t* c, rng_t* rng) noexcept nogil:
    cdef Py_ssize_t i
    cdef double r, cum = 0.0
    softmax_final(c)
    r = rng_uniform(rng)
    for i in range(c.size):
        cum += c.data[i].p
        if cum >= r and c.data[i].p > 0.0:
            return i
    return c.size - 1


cdef int32_t argmax_token(cands_t* c) noexcept nogil:
    """The first best token (lowest id among equal logits)."""
    cdef Py_ssize_t i, j, best = 0
    cdef const float* L = c.full_logits
    cdef float mx, bm
    cdef cand_t top
    if not c.full:
        for i in range(1, c.size):
            if c.data[i].logit > c.data[best].logit:
                best = i
        return c.data[best].id
    if c.n_edits:
        return top.id if select_top_edited(c, 1, &top) else 0
    # blocks of 16 through block_max; only a block that raises the best is scanned:
    # measured 21 us against 34 us with one compare-and-branch per logit
    mx = L[0]
    i = 0
    while i + 16 <= c.n_vocab:
        bm = block_max(L + i)
        if bm > mx:
            mx = bm
            for j in range(i, i + 16):
                if L[j] == bm:
                    best = j
                    break
        i += 16
    for j in range(i, c.n_vocab):
        if L[j] > mx:
            mx = L[j]
            best = j
    return <int32_t> best


cdef Py_ssize_t mirostat(cands_t* c, rng_t* rng, float mu, Py_ssize_t m,
                         Py_ssize_t n_vocab) noexcept nogil:
    # Mirostat 1: estimate the Zipf exponent s from the m most probable tokens, keep the
    # top k that makes the expected surprise mu. Only the top m are sorted (libllama sorts
    # the whole vocabulary); log(p_i / p_i+1) is taken as l_i - l_i+1. float arithmetic on
    # purpose: int(k) is a sensitive cut and libllama computes it in float.
    cdef Py_ssize_t i, count
    cdef float t_i, b_i, sum_ti_bi = 0.0, sum_ti_sq = 0.0, s_hat, eps, k
    cdef float one = 1.0, two = 2.0
    cdef cand_t* top = c.data
    materialize(c)
    if c.size == 1:
        return draw(c, rng)
    count = c.size if c.size < m else m
    if not c.sorted:
        count = select_top_cands(c.data, c.size, count, c.scratch)
        top = c.scratch
    for i in range(count - 1):
        t_i = logf(<float> (i + 2) / <float> (i + 1))
        b_i = top[i].logit - top[i + 1].logit
        sum_ti_bi += t_i * b_i
        sum_ti_sq += t_i * t_i
    s_hat = sum_ti_bi / sum_ti_sq
    eps = s_hat - one
    k = powf((eps * powf(two, mu)) / (one - powf(<float> n_vocab, -eps)), one / s_hat)
    top_k(c, 1 if not (k >= 1.0) else (c.size if k >= c.size else <Py_ssize_t> k))
    return draw(c, rng)


cdef Py_ssize_t mirostat_v2(cands_t* c, rng_t* rng, float mu) noexcept nogil:
    # Mirostat 2: keep the tokens whose surprise -log2 p is at most mu (the best one if
    # none). p >= 2^-mu is a logit floor, so this is one filter pass and a sort of the
    # few survivors, not a sort of the vocabulary.
    cdef Py_ssize_t i, count = 0, best = 0
    cdef float mx = -INFINITY, e
    cdef double total = 0.0, floor
    materialize(c)
    for i in range(c.size):
        if c.data[i].logit > mx:
            mx = c.data[i].logit
            best = i
    for i in range(c.size):
        e = expf(c.data[i].logit - mx)
        total += e
    floor = mx + log(total) - mu * LN2
    for i in range(c.size):
        if c.data[i].logit >= floor:
            c.data[count] = c.data[i]
            count += 1
    if count == 0:
        c.data[0] = c.data[best]
        count = 1
    c.size = count
    sort_desc(c)
    return draw(c, rng)


# ======================================================================================
# rng: xoshiro256** (Blackman & Vigna), the same stream as _reference.Xoshiro256
# ======================================================================================
cdef inline uint64_t rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef void rng_seed(rng_t* r, uint64_t seed) noexcept nogil:
    cdef uint64_t z
    cdef int i
    for i in range(4):               # splitmix64
        seed += <uint64_t> 0x9E3779B97F4A7C15
        z = seed
        z = (z ^ (z >> 30)) * <uint64_t> 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * <uint64_t> 0x94D049BB133111EB
        r.s[i] = z ^ (z >> 31)


cdef double rng_uniform(rng_t* r) noexcept nogil:
    cdef uint64_t result = rotl(r.s[1] * 5, 7) * 9
    cdef uint64_t t = r.s[1] << 17
    r.s[2] ^= r.s[0]
    r.s[3] ^= r.s[1]
    r.s[1] ^= r.s[2]
    r.s[0] ^= r.s[3]
    r.s[2] ^= t
    r.s[3] = rotl(r.s[3], 45)
    return <double> (result >> 11) * (1.0 / 9007199254740992.0)


# ======================================================================================
# the owner
# ======================================================================================
_STAGE_KINDS = {
    "top_k": ST_TOP_K, "top_p": ST_TOP_P, "min_p": ST_MIN_P, "tail_free": ST_TAIL_FREE,
    "typical": ST_TYPICAL, "temperature": ST_TEMPERATURE, "penalties": ST_PENALTIES,
    "dry": ST_DRY, "xtc": ST_XTC, "top_n_sigma": ST_TOP_N_SIGMA,
}
_FINAL_KINDS = {"dist": FIN_DIST, "greedy": FIN_GREEDY, "mirostat": FIN_MIROSTAT,
                "mirostat_v2": FIN_MIROSTAT_V2}


cdef class Chain:
    """One request's sampler: the stages of a ChainPlan, its RNG and its token history."""
    cdef cands_t c
    cdef rng_t rng
    cdef history_t h
    cdef stage_t* stages
    cdef Py_ssize_t n_stages
    cdef int final_kind
    cdef float mu, tau, eta
    cdef Py_ssize_t mirostat_m
    cdef const int32_t* bias_ids
    cdef const float* bias_values
    cdef Py_ssize_t n_bias
    cdef int32_t* history           # owned; h.tokens points here
    cdef int32_t* counts            # owned; h.counts points here (NULL without penalties)
    cdef Py_ssize_t history_capacity
    cdef Py_ssize_t penalty_window
    cdef bint keep_history
    cdef object _keep                # arrays the stage table points into
    cdef readonly Py_ssize_t n_vocab
    cdef readonly object seed
    cdef readonly int n_probs
    cdef readonly object last_probs

    def __cinit__(self):
        self.stages = NULL
        self.history = NULL
        self.counts = NULL
        self.c.work = NULL
        self.c.edit_ids = NULL
        self.c.edit_values = NULL
        self.c.edit_slot = NULL
        self.c.edit_mark = NULL
        self.c.data = NULL
        self.c.scratch = NULL
        self.c.keys = NULL
        self.h.mark = NULL
        self.h.value = NULL
        self.h.found = NULL
        self.h.z = NULL

    def __init__(self, plan):
        cdef Py_ssize_t i, n = plan.n_vocab
        if n <= 0:
            raise ValueError("n_vocab must be positive")
        if self.c.work != NULL:
            raise RuntimeError("a Chain is initialized once")
        self.n_vocab = n
        self.seed = plan.seed
        self.n_probs = plan.n_probs
        self.last_probs = None
        self.c.n_vocab = n
        self.c.work = <float*> PyMem_Malloc(n * sizeof(float))
        self.c.edit_ids = <int32_t*> PyMem_Malloc(n * sizeof(int32_t))
        self.c.edit_values = <float*> PyMem_Malloc(n * sizeof(float))
        self.c.edit_slot = <int32_t*> PyMem_Malloc(n * sizeof(int32_t))
        self.c.edit_mark = <int32_t*> PyMem_Calloc(n, sizeof(int32_t))
        self.c.data = <cand_t*> PyMem_Malloc(n * sizeof(cand_t))
        self.c.scratch = <cand_t*> PyMem_Malloc(n * sizeof(cand_t))
        self.c.keys = <uint64_t*> PyMem_Malloc(2 * n * sizeof(uint64_t))
        self.h.mark = <int32_t*> PyMem_Calloc(n, sizeof(int32_t))
        self.h.value = <int32_t*> PyMem_Malloc(n * sizeof(int32_t))
        if not (self.c.work and self.c.data and self.c.scratch and self.h.mark and self.h.value
                and self.c.edit_ids and self.c.edit_values and self.c.edit_slot
                and self.c.edit_mark and self.c.keys):
            raise MemoryError()
        self.c.full = False
        self.c.size = 0
        self.c.edit_stamp = 0
        self.h.stamp = 0
        rng_seed(&self.rng, <uint64_t> (plan.seed & 0xFFFFFFFFFFFFFFFF))

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
        for i in range(self.n_stages):
            if self.stages[i].kind == ST_PENALTIES:
                if self.penalty_window and self.penalty_window != self.stages[i].last_n:
                    raise ValueError("penalty stages must share one window")
                self.penalty_window = self.stages[i].last_n
            if self.stages[i].kind in (ST_PENALTIES, ST_DRY):
                self.keep_history = True
        if self.penalty_window > 0:
            self.counts = <int32_t*> PyMem_Calloc(n, sizeof(int32_t))
            if not self.counts:
                raise MemoryError()
        self.h.counts = self.counts
        self.h.size = 0
        history = plan.history if self.keep_history else ()
        self._reserve(len(history) + 64)
        for t in history:
            self._push(t)

    def __dealloc__(self):
        PyMem_Free(self.stages)
        PyMem_Free(self.history)
        PyMem_Free(self.counts)
        PyMem_Free(self.c.work)
        PyMem_Free(self.c.edit_ids)
        PyMem_Free(self.c.edit_values)
        PyMem_Free(self.c.edit_slot)
        PyMem_Free(self.c.edit_mark)
        PyMem_Free(self.c.data)
        PyMem_Free(self.c.scratch)
        PyMem_Free(self.c.keys)
        PyMem_Free(self.h.mark)
        PyMem_Free(self.h.value)
        PyMem_Free(self.h.found)
        PyMem_Free(self.h.z)

    # --- construction ------------------------------------------------------------------
    cdef _set_bias(self, const int32_t[::1] ids, const float[::1] values):
        self.n_bias = ids.shape[0]
        if values.shape[0] != self.n_bias:
            raise ValueError("bias_ids and bias_values differ in length")
        for i in range(self.n_bias):
            if not 0 <= ids[i] < self.n_vocab:
                raise ValueError(f"logit bias token {ids[i]} is outside the vocabulary")
        self.bias_ids = &ids[0] if self.n_bias else NULL
        self.bias_values = &values[0] if self.n_bias else NULL

    cdef _set_stages(self, specs, list keep):
        cdef stage_t* s
        cdef const int32_t[::1] view
        self.n_stages = len(specs)
        self.stages = <stage_t*> PyMem_Calloc(max(1, self.n_stages), sizeof(stage_t))
        if not self.stages:
            raise MemoryError()
        for i, spec in enumerate(specs):
            s = &self.stages[i]
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
        self.final_kind = kind
        if kind in (FIN_MIROSTAT, FIN_MIROSTAT_V2):
            self.tau, self.eta = final.tau, final.eta
            self.mu = 2.0 * self.tau
            self.mirostat_m = getattr(final, "m", 100)

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
                grown = <int32_t*> PyMem_Realloc(self.h.found, capacity * sizeof(int32_t))
                if grown:
                    self.h.found = grown
            else:
                grown = <int32_t*> PyMem_Realloc(self.h.z, capacity * sizeof(int32_t))
                if grown:
                    self.h.z = grown
            if not grown:
                raise MemoryError()
        self.history_capacity = capacity
        self.h.tokens = self.history

    cdef _push(self, int32_t token):
        cdef Py_ssize_t out
        if not 0 <= token < self.n_vocab:
            return
        if self.h.size == self.history_capacity:
            self._reserve(2 * self.history_capacity)
        self.history[self.h.size] = token
        self.h.size += 1
        if self.counts:
            self.counts[token] += 1
            out = self.h.size - 1 - self.penalty_window
            if out >= 0:
                self.counts[self.history[out]] -= 1

    # --- per token ---------------------------------------------------------------------
    cdef void run_stages(self) noexcept nogil:
        cdef Py_ssize_t i
        cdef stage_t* s
        logit_bias(&self.c, self.bias_ids, self.bias_values, self.n_bias)
        for i in range(self.n_stages):
            s = &self.stages[i]
            if s.kind == ST_TOP_K:
                top_k(&self.c, s.k)
            elif s.kind == ST_TOP_P:
                top_p(&self.c, s.p, s.min_keep)
            elif s.kind == ST_MIN_P:
                min_p(&self.c, s.p, s.min_keep)
            elif s.kind == ST_TAIL_FREE:
                tail_free(&self.c, s.p, s.min_keep)
            elif s.kind == ST_TYPICAL:
                typical(&self.c, s.p, s.min_keep)
            elif s.kind == ST_TEMPERATURE:
                temperature(&self.c, s.temp, s.delta, s.exponent)
            elif s.kind == ST_TOP_N_SIGMA:
                top_n_sigma(&self.c, s.p)
            elif s.kind == ST_XTC:
                xtc(&self.c, &self.rng, s.probability, s.p, s.min_keep)
            elif s.kind == ST_PENALTIES:
                penalties(&self.c, &self.h, s)
            elif s.kind == ST_DRY:
                dry(&self.c, &self.h, s)

    cdef int32_t run(self, const float* logits) noexcept nogil:
        begin(&self.c, logits)
        self.run_stages()
        if self.final_kind == FIN_GREEDY:
            if not self.c.full:
                softmax_final(&self.c)
            return argmax_token(&self.c)
        if self.final_kind == FIN_MIROSTAT:
            return self.c.data[mirostat(&self.c, &self.rng, self.mu, self.mirostat_m,
                                        self.n_vocab)].id
        if self.final_kind == FIN_MIROSTAT_V2:
            return self.c.data[mirostat_v2(&self.c, &self.rng, self.mu)].id
        return self.c.data[draw(&self.c, &self.rng)].id

    def sample(self, const float[::1] logits not None) -> int:
        cdef int32_t token
        if logits.shape[0] != self.n_vocab:
            raise ValueError(f"expected {self.n_vocab} logits, got {logits.shape[0]}")
        with nogil:
            token = self.run(&logits[0])
        if self.n_probs > 0:
            self.last_probs = self._top_probs(self.n_probs)
        return token

    def accept(self, int token) -> None:
        cdef Py_ssize_t i
        cdef float surprise
        if self.final_kind in (FIN_MIROSTAT, FIN_MIROSTAT_V2) and not self.c.full:
            for i in range(self.c.size):
                if self.c.data[i].id == token:
                    surprise = -log2f(self.c.data[i].p)
                    self.mu = self.mu - self.eta * (surprise - self.tau)
                    break
        if self.keep_history:
            self._push(token)

    cdef list _top_probs(self, Py_ssize_t n):
        """The n most probable of the set the last draw saw (the full one for greedy)."""
        cdef Py_ssize_t i, m
        cdef float mx
        cdef double total = 0.0
        cdef const float* L
        if self.c.full:
            flush_edits(&self.c)
            L = self.c.full_logits
            m = select_top(L, self.n_vocab, n, self.c.scratch)
            if m == 0:
                return []
            mx = self.c.scratch[0].logit
            with nogil:
                for i in range(self.n_vocab):
                    if L[i] > -INFINITY:
                        total += expf(L[i] - mx)
            return [(self.c.scratch[i].id, <float> (expf(self.c.scratch[i].logit - mx) / total))
                    for i in range(m)]
        if self.c.sorted:
            return [(self.c.data[i].id, self.c.data[i].p) for i in range(min(n, self.c.size))]
        m = select_top_cands(self.c.data, self.c.size, n, self.c.scratch)
        return [(self.c.scratch[i].id, self.c.scratch[i].p) for i in range(m)]

    # --- inspection (tests, the twin comparison) ---------------------------------------
    @property
    def mirostat_mu(self) -> float:
        return self.mu

    def apply(self, const float[::1] logits not None):
        """Run the stages only (no final draw); return the set as (ids, logits, p) arrays.

        p is the softmax of the surviving logits. A set no stage cut comes back as every
        finite token in id order."""
        if logits.shape[0] != self.n_vocab:
            raise ValueError(f"expected {self.n_vocab} logits, got {logits.shape[0]}")
        with nogil:
            begin(&self.c, &logits[0])
            self.run_stages()
            softmax_final(&self.c)
        return self.candidates()

    def candidates(self):
        """The set the last draw saw, as (ids, logits, p) arrays in the chain's order."""
        cdef Py_ssize_t i
        if self.c.full:
            raise ValueError("the last draw saw the whole vocabulary (greedy); nothing to show")
        ids = np.empty(self.c.size, dtype=np.int32)
        out_logits = np.empty(self.c.size, dtype=np.float32)
        p = np.empty(self.c.size, dtype=np.float32)
        cdef int32_t[::1] vi = ids
        cdef float[::1] vl = out_logits, vp = p
        for i in range(self.c.size):
            vi[i] = self.c.data[i].id
            vl[i] = self.c.data[i].logit
            vp[i] = self.c.data[i].p
        return ids, out_logits, p
