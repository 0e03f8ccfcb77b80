# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# Directives: every function indexes only inside sizes it checked itself and divides only
# by values it guarded, so Python's bounds and zero-division checks would only slow the
# per-token loop (the twin in _reference.py is where those mistakes would show).
"""The candidate set's plumbing (see ``_candidates.pxd``): the one candidate order and its
sorts and selections, and the moves between a full set and a compact one, softmax
included. The stage kernels (``_stages``) build on these; the owner (``_chain``) starts
each set with ``begin`` and reads the result back."""
from libc.math cimport INFINITY, expf, nextafterf
from libc.stdint cimport INT32_MAX, int32_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

import numpy as np


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


cdef extern from "_blockmax.h" nogil:
    void blockmax64(const float* x, size_t n_blocks, float* out)
    int blockmax64_lanes(const float* x, size_t n_blocks, float* out, int lanes)
    void bm_range(const float* v, size_t n, float* hi, float* lo)
    float bm_threshold(const float* v, size_t n, size_t k, float hi, float lo)
    uint64_t ge_mask64(const float* x, float t)
    int lowest_bit64(uint64_t m)
    void rank_pairs(const float* lg, const int32_t* ids, size_t m, int32_t* rank)
    int blockmax_use_avx2(int on)


cdef enum:
    # block maxima (64 logits each) on the stack: vocabularies up to 64 * BM_CAP tokens;
    # larger ones take the plain scans
    BM_CAP = 8192
    # top_k beyond this takes the plain scan; more candidates than this reaching the
    # threshold are cut to k by a radix select before they are ranked (ranking is quadratic)
    RANK_MAX = 128


cdef Py_ssize_t scan_top(const float* logits, Py_ssize_t n, Py_ssize_t k,
                         cand_t* out) noexcept nogil:
    """One pass with a running floor: large k, small or odd vocabularies, flat logits."""
    cdef Py_ssize_t j, count = 0
    cdef float v, floor = -INFINITY
    for j in range(n):
        v = logits[j]
        if v > floor:           # false for -inf and NaN: they never become candidates
            count = insert_top(out, count, k, <int32_t> j, v)
            if count == k:
                floor = out[k - 1].logit
    return count


cdef Py_ssize_t select_top(const float* logits, Py_ssize_t n, Py_ssize_t k,
                           cand_t* out) noexcept nogil:
    # Logits differ at every step, so every data-dependent branch here is a coin flip; the
    # work is laid out to take few of them (_blockmax.h):
    # 1. one vectorized pass takes the maximum of every block of 64 logits;
    # 2. T: a value at least k block maxima reach, and few more (one histogram pass). The
    #    best k logits are all >= T, and a block whose maximum is below T holds none;
    # 3. the blocks that reach T (found by compare masks over the maxima) give their
    #    logits >= T (compare masks again): about k candidates, in id order;
    # 4. each candidate is placed at its rank, counted against all the others (ties by id).
    # 49152 logits, k = 40, a fresh row each call: ~8 us, nearly all of it the pass over
    # memory, against ~25 us for one scalar pass with a running floor (kept for large k,
    # small vocabularies and flat logits).
    cdef Py_ssize_t b, j, nb = n // 64, m = 0, n_eq, g
    cdef uint64_t bits, blocks
    cdef float T, v, kth, hi, lo
    cdef float bm[BM_CAP]
    cdef float lg[RANK_MAX + 8]
    cdef int32_t ids[RANK_MAX + 8]
    cdef int32_t rank[RANK_MAX]
    if k > n:
        k = n
    if k <= 0:
        return 0
    if nb > BM_CAP or nb < k or k > RANK_MAX:
        return scan_top(logits, n, k, out)
    blockmax64(logits, <size_t> nb, bm)
    bm_range(bm, <size_t> nb, &hi, &lo)
    T = bm_threshold(bm, <size_t> nb, <size_t> k, hi, lo) if hi > -INFINITY else -INFINITY
    if not T > -INFINITY:           # fewer than k blocks hold a finite logit
        return scan_top(logits, n, k, out)
    for g in range(0, nb, 64):      # out holds n records (every caller's buffer does)
        if g + 64 <= nb:
            blocks = ge_mask64(bm + g, T)
        else:
            blocks = 0
            for b in range(g, nb):
                blocks |= (<uint64_t> (bm[b] >= T)) << (b - g)
        while blocks:
            b = g + lowest_bit64(blocks)
            blocks &= blocks - 1
            bits = ge_mask64(logits + 64 * b, T)
            while bits:
                j = 64 * b + lowest_bit64(bits)
                bits &= bits - 1
                out[m].id = <int32_t> j
                out[m].logit = logits[j]
                m += 1
    for j in range(64 * nb, n):
        v = logits[j]
        out[m].id = <int32_t> j
        out[m].logit = v
        m += v >= T
    if m > BM_CAP:                  # a flat stretch of equal logits
        return scan_top(logits, n, k, out)
    if m > RANK_MAX:                # cut to the best k first
        for j in range(m):
            bm[j] = out[j].logit
        kth = kth_largest(bm, m, k)
        n_eq = k
        for j in range(m):
            n_eq -= out[j].logit > kth
        b = 0
        for j in range(m):          # out is in id order: equals to the k-th go lowest id first
            if out[j].logit > kth or (out[j].logit == kth and n_eq > 0):
                n_eq -= out[j].logit == kth
                out[b] = out[j]
                b += 1
        m = k
    for j in range(m):
        lg[j] = out[j].logit
        ids[j] = out[j].id
    for j in range(m, m + 8):
        lg[j] = -INFINITY
        ids[j] = INT32_MAX
    rank_pairs(lg, ids, <size_t> m, rank)
    for j in range(m):              # out[:m] in the candidate order; the first k are the answer
        out[rank[j]].id = ids[j]
        out[rank[j]].logit = lg[j]
        out[rank[j]].p = 0.0
    return k


cdef uint32_t SIGN_BIT = (<uint32_t> 1) << 31


cdef inline uint32_t rising_key(float v) noexcept nogil:
    """A key whose ascending order is ascending value order (no NaN)."""
    cdef bits32 u
    u.f = v
    return ~u.u if u.u >> 31 else u.u | SIGN_BIT


cdef inline float key_value(uint32_t key) noexcept nogil:
    cdef bits32 u
    u.u = key & ~SIGN_BIT if key >> 31 else ~key
    return u.f


cdef float kth_largest(const float* a, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """The k-th largest of a[:n] (1 <= k <= n <= BM_CAP, no NaN): a radix select, a byte
    of the keys a round from the top, each round counting the keys that share the prefix
    so far and walking its bins down from the largest key's."""
    cdef uint32_t keys[BM_CAP]
    cdef uint32_t hist[4][256]     # four interleaved counts: keys sharing a byte do not
    cdef Py_ssize_t i, m = n, w, need = k   # wait on each other's increments
    cdef int shift
    cdef uint32_t key, top = 0, digit, prefix = 0, mask = 0
    for i in range(n):
        key = rising_key(a[i])
        keys[i] = key
        top = key if key > top else top
    for shift in range(24, -8, -8):
        memset(hist, 0, sizeof(hist))
        for i in range(m):
            hist[i & 3][(keys[i] >> shift) & 255] += 1
        digit = (top >> shift) & 255
        while hist[0][digit] + hist[1][digit] + hist[2][digit] + hist[3][digit] < need:
            need -= hist[0][digit] + hist[1][digit] + hist[2][digit] + hist[3][digit]
            digit -= 1
        prefix |= digit << shift
        mask |= (<uint32_t> 255) << shift
        w = 0
        top = 0
        for i in range(m):          # keep the keys in that bin (branch-free)
            key = keys[i]
            keys[w] = key
            w += (key & mask) == prefix
            top = key if (key & mask) == prefix and key > top else top
        m = w
    return key_value(prefix)


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


cdef Py_ssize_t argmax_logits(const float* L, Py_ssize_t n) noexcept nogil:
    """The first best of a full set's logits (lowest index among equals); select_top with
    k = 1, for greedy, without the record. All -inf or NaN: 0."""
    # the block maxima (one vectorized pass) and their largest, then the first block
    # holding it, then its first logit equal to it: ~8 us for 49152 logits from memory,
    # nearly all of it the pass, against ~21 us scalar
    cdef Py_ssize_t b, j, nb = n // 64, best = -1
    cdef float mx = -INFINITY, lo
    cdef float bm[BM_CAP]
    if nb > BM_CAP:
        nb = 0
    if nb:
        blockmax64(L, <size_t> nb, bm)
        bm_range(bm, <size_t> nb, &mx, &lo)
        if mx > -INFINITY:
            b = 0
            while bm[b] != mx:
                b += 1
            for j in range(64 * b, 64 * b + 64):
                if L[j] == mx:
                    best = j
                    break
    for j in range(64 * nb, n):
        if L[j] > mx:
            mx = L[j]
            best = j
    return best if best >= 0 else 0


# ======================================================================================
# set plumbing
# ======================================================================================
cdef void only_token_zero(cands_t* c) noexcept nogil:
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


def _block_maxima(const float[::1] x not None, int lanes=0):
    """The maxima of x's whole blocks of 64 (tests): ``lanes`` 0 as the kernels choose, 8
    (AVX2), 4 (SSE2/NEON) or 1 (the plain loop); None where this machine has no such code."""
    cdef Py_ssize_t nb = x.shape[0] // 64
    out = np.empty(max(1, nb), dtype=np.float32)
    cdef float[::1] o = out
    if nb == 0:
        return out[:0]
    if lanes == 0:
        blockmax64(&x[0], <size_t> nb, &o[0])
    elif not blockmax64_lanes(&x[0], <size_t> nb, &o[0], lanes):
        return None
    return out


def _use_avx2(bint on):
    """Tests: False runs every vectorized selection on its SSE2 code even where the CPU has
    AVX2 (as on a machine without it), True goes back; returns the previous choice."""
    return bool(blockmax_use_avx2(on))
