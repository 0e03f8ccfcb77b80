# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# Directives: every kernel indexes only inside sizes it checked itself and divides only by
# values it guarded, so Python's bounds and zero-division checks would only slow the
# per-token loop (the twin in _reference.py is where those mistakes would show).
"""The stage kernels (see ``_stages.pxd``): each stage of a chain, and the finals that pick
the token. Semantics, stage by stage, are those of ``_reference.py``; only the data layout
and the speed tricks differ, and each trick says what it buys.

Arithmetic that decides a cut (softmax sums, cumulative probabilities, entropies) is done
in float32, in set order, exactly as libllama does it: a double sum is more accurate, but
over ~3000 candidates the two differ by ~1e-5, enough to move a top_p cut by a few tokens
and lose agreement with the oracle.
"""
from libc.math cimport INFINITY, M_LN2 as LN2, expf, fabsf, log, logf, pow, powf, sqrtf
from libc.stdint cimport INT32_MAX, int32_t
from libc.string cimport memcpy, memmove, memset

from ._candidates cimport (argmax_logits, cand_t, cands_t, flush_edits, full_logit,
                           keep_marked, materialize, only_token_zero, select_top_cands,
                           select_top_edited, set_full_logit, softmax, softmax_final,
                           softmax_total, sort_desc, sort_range)
from ._rng cimport rng_t, rng_uniform

# Above this k, top_k sorts instead of selecting by insertion (the insertion select costs
# about k * ln(n / k) * k / 2 moves; at 1024 that is about the cost of a radix sort).
cdef Py_ssize_t SELECT_MAX = 1024
# top_p over an unsorted set first tries the best 256 (libllama's heuristic): a nucleus
# rarely needs more, and selecting 256 of 49152 costs ~0.1 ms against ~1 ms for a sort.
cdef Py_ssize_t TOP_P_FIRST = 256


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
    cdef Py_ssize_t i, best = 0
    cdef cand_t top
    if not c.full:
        for i in range(1, c.size):
            if c.data[i].logit > c.data[best].logit:
                best = i
        return c.data[best].id
    if c.n_edits:
        return top.id if select_top_edited(c, 1, &top) else 0
    return <int32_t> argmax_logits(c.full_logits, c.n_vocab)


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
