/* The vectorized pieces of the full-vocabulary selections, greedy and top_k
 * (sampling/_candidates.pyx).
 *
 * blockmax64(x, n_blocks, out): out[b] = the largest of x[64 b .. 64 b + 63], ignoring NaN
 * (a block of NaN and -inf alone gives -inf). x86-64: SSE2 everywhere, AVX2 where the CPU
 * has it (checked once); arm64 with GCC: NEON through GCC's vector extensions; elsewhere a
 * plain loop. Every step keeps its accumulator when x is NaN (x > acc is false), so a NaN
 * logit never hides a real one in its block, and no partial maximum is ever NaN.
 *
 * bm_range: the largest of the block maxima and the smallest finite one, in one pass.
 * bm_threshold: a value that at least k of the block maxima reach, and not many more (one
 * histogram pass, no sort).
 * ge_mask64: which of 64 floats reach a threshold, as the bits of one word (SSE2 compares
 * and movemask on x86-64), so a caller visits only those.
 * rank_pairs: each (logit, id) pair's place in the candidate order, by counting (k * k
 * comparisons, vectorized, no data-dependent branch).
 */
#ifndef SAMPLING_BLOCKMAX_H
#define SAMPLING_BLOCKMAX_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static void blockmax64_scalar(const float *x, size_t n_blocks, float *out) {
    size_t b;
    int j;
    for (b = 0; b < n_blocks; b++) {
        float m = -INFINITY;
        for (j = 0; j < 64; j++)
            if (x[64 * b + j] > m)
                m = x[64 * b + j];
        out[b] = m;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
/* x86-64: MAXPS keeps its second operand unless the first is larger, so max(x, acc) is
 * exactly the NaN-ignoring step above, one instruction a vector. 4 lanes (SSE2, every
 * x86-64) and 8 (AVX2 where the CPU has it, picked once at run time). A group of blocks (4
 * or 8) is reduced together: each block to one accumulator vector (two chains, for the
 * load ports), then the group's accumulators fold into one vector of its block maxima by
 * shuffles. Where the logits come from memory both run at the memory's speed; cache-hot
 * rows (small batches) take the AVX2 pass 1.9 us for 49152 logits, the generic-vector
 * version it replaces 4.8 us. */
#include <immintrin.h>
#define BLOCKMAX_VECTORS 1

static void blockmax64_v4(const float *x, size_t n_blocks, float *out) {
    const __m128 lowest = _mm_set1_ps(-INFINITY);
    size_t g;
    int i, j;
    __m128 acc[4];
    for (g = 0; g + 4 <= n_blocks; g += 4) {
        for (i = 0; i < 4; i++) {
            const float *p = x + 64 * (g + i);
            __m128 a = lowest, b = lowest;
            for (j = 0; j < 16; j += 2) {
                a = _mm_max_ps(_mm_loadu_ps(p + 4 * j), a);
                b = _mm_max_ps(_mm_loadu_ps(p + 4 * j + 4), b);
            }
            acc[i] = _mm_max_ps(a, b);
        }
        _MM_TRANSPOSE4_PS(acc[0], acc[1], acc[2], acc[3]);   /* lane i: block i's partials */
        _mm_storeu_ps(out + g, _mm_max_ps(_mm_max_ps(acc[0], acc[1]), _mm_max_ps(acc[2], acc[3])));
    }
    blockmax64_scalar(x + 64 * g, n_blocks - g, out + g);
}

__attribute__((target("avx2")))
static void blockmax64_v8(const float *x, size_t n_blocks, float *out) {
    const __m256 lowest = _mm256_set1_ps(-INFINITY);
    size_t g;
    int i, j;
    __m256 acc[8], t[4], u0, u1;
    for (g = 0; g + 8 <= n_blocks; g += 8) {
        for (i = 0; i < 8; i++) {
            const float *p = x + 64 * (g + i);
            __m256 a = lowest, b = lowest;
            for (j = 0; j < 8; j += 2) {
                a = _mm256_max_ps(_mm256_loadu_ps(p + 8 * j), a);
                b = _mm256_max_ps(_mm256_loadu_ps(p + 8 * j + 8), b);
            }
            acc[i] = _mm256_max_ps(a, b);
        }
        /* t[i] = block i's 4 partials | block i + 4's */
        for (i = 0; i < 4; i++)
            t[i] = _mm256_max_ps(_mm256_permute2f128_ps(acc[i], acc[i + 4], 0x20),
                                 _mm256_permute2f128_ps(acc[i], acc[i + 4], 0x31));
        /* pairs: blocks 0 0 1 1 | 4 4 5 5 and 2 2 3 3 | 6 6 7 7 */
        u0 = _mm256_max_ps(_mm256_shuffle_ps(t[0], t[1], 0x44), _mm256_shuffle_ps(t[0], t[1], 0xEE));
        u1 = _mm256_max_ps(_mm256_shuffle_ps(t[2], t[3], 0x44), _mm256_shuffle_ps(t[2], t[3], 0xEE));
        _mm256_storeu_ps(out + g, _mm256_max_ps(_mm256_shuffle_ps(u0, u1, 0x88),
                                                _mm256_shuffle_ps(u0, u1, 0xDD)));
    }
    blockmax64_scalar(x + 64 * g, n_blocks - g, out + g);
}

static int blockmax_avx2 = -1;      /* -1: not asked yet; the tests may turn it off */

static int blockmax_has_v8(void) {
    if (blockmax_avx2 < 0)
        blockmax_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    return blockmax_avx2;
}

/* tests: 0 runs the SSE2 code even on an AVX2 machine, 1 the AVX2 code where the CPU has
 * it; the previous choice back */
static int blockmax_use_avx2(int on) {
    int was = blockmax_has_v8();
    blockmax_avx2 = on && __builtin_cpu_supports("avx2") ? 1 : 0;
    return was;
}

#elif defined(__GNUC__) && !defined(__clang__) && defined(__aarch64__)
/* arm64: GCC's vector extensions (NEON), 4 blocks a group, each to a 4-lane accumulator,
 * then two folds by halving (maxima of shuffled pairs). */
#define BLOCKMAX_VECTORS 1
typedef float bm_v4f __attribute__((vector_size(16), aligned(4)));
typedef int32_t bm_v4i __attribute__((vector_size(16)));

/* lanes of x where x beats acc (never for NaN), else acc's */
#define BM_MAX(acc, x) ({ bm_v4f x_ = (x), a_ = (acc); bm_v4i t_ = (bm_v4i)(x_ > a_); \
                          (bm_v4f)(((bm_v4i)x_ & t_) | ((bm_v4i)a_ & ~t_)); })
#define BM_FOLD(a, b, X, Y) BM_MAX(__builtin_shuffle((a), (b), (bm_v4i)X), \
                                   __builtin_shuffle((a), (b), (bm_v4i)Y))

static void blockmax64_v4(const float *x, size_t n_blocks, float *out) {
    const bm_v4f lowest = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    size_t g, i;
    int j;
    bm_v4f acc[4];
    for (g = 0; g + 4 <= n_blocks; g += 4) {
        for (i = 0; i < 4; i++) {
            const float *p = x + 64 * (g + i);
            bm_v4f a = lowest;
            for (j = 0; j < 16; j++)
                a = BM_MAX(a, *(const bm_v4f *)(p + 4 * j));
            acc[i] = a;
        }
        for (i = 0; i < 2; i++)
            acc[i] = BM_FOLD(acc[2 * i], acc[2 * i + 1], ((bm_v4i){0, 1, 4, 5}), ((bm_v4i){2, 3, 6, 7}));
        *(bm_v4f *)(out + g) = BM_FOLD(acc[0], acc[1], ((bm_v4i){0, 2, 4, 6}), ((bm_v4i){1, 3, 5, 7}));
    }
    blockmax64_scalar(x + 64 * g, n_blocks - g, out + g);
}

static int blockmax_has_v8(void) { return 0; }
#endif

#if !defined(__x86_64__) || !defined(__GNUC__)
static int blockmax_use_avx2(int on) { (void)on; return 0; }
#endif

#ifdef BLOCKMAX_VECTORS
static void blockmax64(const float *x, size_t n_blocks, float *out) {
#if defined(__x86_64__)
    if (blockmax_has_v8()) {
        blockmax64_v8(x, n_blocks, out);
        return;
    }
#endif
    blockmax64_v4(x, n_blocks, out);
}

/* for the tests: one implementation by lane count (8, 4, 1 = the plain loop); 0 if this
 * machine has no such implementation */
static int blockmax64_lanes(const float *x, size_t n_blocks, float *out, int lanes) {
    if (lanes == 8) {
#if defined(__x86_64__)
        if (!blockmax_has_v8())
            return 0;
        blockmax64_v8(x, n_blocks, out);
        return 1;
#else
        return 0;
#endif
    }
    if (lanes == 4) {
        blockmax64_v4(x, n_blocks, out);
        return 1;
    }
    blockmax64_scalar(x, n_blocks, out);
    return 1;
}
#else
#define blockmax64 blockmax64_scalar
static int blockmax64_lanes(const float *x, size_t n_blocks, float *out, int lanes) {
    if (lanes != 1)
        return 0;
    blockmax64_scalar(x, n_blocks, out);
    return 1;
}
#endif

/* ge_mask64(x, t): bit j set where x[j] >= t, j < 64 (never for NaN) */
#if defined(__SSE2__)
#include <emmintrin.h>
static inline uint64_t ge_mask64_sse2(const float *x, float t) {
    const __m128 tt = _mm_set1_ps(t);
    uint64_t m = 0;
    int i;
    for (i = 0; i < 16; i++)
        m |= (uint64_t)_mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(x + 4 * i), tt)) << (4 * i);
    return m;
}

#if defined(BLOCKMAX_VECTORS) && defined(__x86_64__)
__attribute__((target("avx2")))
static uint64_t ge_mask64_avx2(const float *x, float t) {
    const __m256 tt = _mm256_set1_ps(t);
    uint64_t m = 0;
    int i;
    for (i = 0; i < 8; i++)
        m |= (uint64_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + 8 * i), tt, _CMP_GE_OQ))
             << (8 * i);
    return m;
}

static inline uint64_t ge_mask64(const float *x, float t) {
    return blockmax_has_v8() ? ge_mask64_avx2(x, t) : ge_mask64_sse2(x, t);
}
#else
#define ge_mask64 ge_mask64_sse2
#endif
#else
static inline uint64_t ge_mask64(const float *x, float t) {
    uint64_t m = 0;
    int i;
    for (i = 0; i < 64; i++)
        m |= (uint64_t)(x[i] >= t) << i;
    return m;
}
#endif

static inline int lowest_bit64(uint64_t m) { return __builtin_ctzll(m); }

/* order keys: unsigned integers in the order of the floats they stand for (no NaN) */
static inline uint32_t bm_key(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return (u >> 31) ? ~u : (u | 0x80000000u);
}

static inline float bm_key_value(uint32_t key) {
    uint32_t u = (key >> 31) ? (key & 0x7FFFFFFFu) : ~key;
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* *hi = the largest of v[0..n) (n >= 1, no NaN), *lo = the smallest that is above -inf
 * (+inf when none is) */
static void bm_range(const float *v, size_t n, float *hi, float *lo) {
    float h = -INFINITY, l = INFINITY;
    size_t i = 0;
#if defined(__SSE2__)
    const __m128 ninf = _mm_set1_ps(-INFINITY), pinf = _mm_set1_ps(INFINITY);
    __m128 vh[4] = {ninf, ninf, ninf, ninf}, vl[4] = {pinf, pinf, pinf, pinf}, x, banned;
    float t[4];
    int j;
    for (; i + 16 <= n; i += 16)        /* four chains: max and min wait on their inputs */
        for (j = 0; j < 4; j++) {
            x = _mm_loadu_ps(v + i + 4 * j);
            vh[j] = _mm_max_ps(x, vh[j]);
            banned = _mm_cmpeq_ps(x, ninf);                  /* -inf counts as +inf for lo */
            vl[j] = _mm_min_ps(_mm_or_ps(_mm_and_ps(banned, pinf), _mm_andnot_ps(banned, x)), vl[j]);
        }
    _mm_storeu_ps(t, _mm_max_ps(_mm_max_ps(vh[0], vh[1]), _mm_max_ps(vh[2], vh[3])));
    h = fmaxf(fmaxf(t[0], t[1]), fmaxf(t[2], t[3]));
    _mm_storeu_ps(t, _mm_min_ps(_mm_min_ps(vl[0], vl[1]), _mm_min_ps(vl[2], vl[3])));
    l = fminf(fminf(t[0], t[1]), fminf(t[2], t[3]));
#endif
    for (; i < n; i++) {
        if (v[i] > h)
            h = v[i];
        if (v[i] > -INFINITY && v[i] < l)
            l = v[i];
    }
    *hi = h;
    *lo = l;
}

/* A threshold T that at least k of v[0..n) reach (1 <= k <= n, no NaN; hi and lo from
 * bm_range, hi > -inf), close above the k-th largest: the values binned by their order
 * key's distance above lo's (256 bins of a power-of-two width spanning [lo, hi]), T = the
 * lower edge of the bin where the count from the top reaches k. Only that bin's values
 * below the k-th largest reach T as well (a few: the bins are narrow where values are
 * sparse, at the top). -inf when fewer than k values are finite. */
static float bm_threshold(const float *v, size_t n, size_t k, float hi, float lo) {
    uint32_t hist[257];                 /* the last one: -inf */
    uint32_t bins[256];
    uint32_t klo = bm_key(lo), span = bm_key(hi) - klo, key, top;
    int shift = span < 256 ? 0 : 24 - __builtin_clz(span);
    size_t i, j, w, count = 0;
    memset(hist, 0, sizeof hist);
    for (i = 0; i < n; i += w) {        /* bins computed a chunk at a time (vectorized), */
        w = n - i < 256 ? n - i : 256;  /* then counted */
        for (j = 0; j < w; j++) {
            key = bm_key(v[i + j]);
            bins[j] = key >= klo ? (key - klo) >> shift : 256;
        }
        for (j = 0; j < w; j++)
            hist[bins[j]]++;
    }
    for (top = span >> shift;; top--) {
        count += hist[top];
        if (count >= k)
            return bm_key_value(klo + (top << shift));
        if (top == 0)
            return -INFINITY;
    }
}

/* rank[i] = how many pairs come before pair i in the candidate order (logit desc, id asc):
 * a permutation of 0..m-1 for distinct ids. lg and ids hold m values padded with -inf and
 * INT32_MAX up to a multiple of 8 (the padding never counts). */
#define RANK_PAIRS_BODY                                                          \
    size_t i, j, mp = (m + 7) & ~(size_t)7;                                      \
    for (i = 0; i < m; i++) {                                                    \
        const float li = lg[i];                                                  \
        const int32_t ii = ids[i];                                               \
        int32_t r = 0;                                                           \
        for (j = 0; j < mp; j++)                                                 \
            r += (lg[j] > li) | ((lg[j] == li) & (ids[j] < ii));                 \
        rank[i] = r;                                                             \
    }

static void rank_pairs_base(const float *lg, const int32_t *ids, size_t m, int32_t *rank) {
    RANK_PAIRS_BODY
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2")))
static void rank_pairs_avx2(const float *lg, const int32_t *ids, size_t m, int32_t *rank) {
    RANK_PAIRS_BODY
}
#endif

static void rank_pairs(const float *lg, const int32_t *ids, size_t m, int32_t *rank) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (blockmax_has_v8()) {
        rank_pairs_avx2(lg, ids, m, rank);
        return;
    }
#endif
    rank_pairs_base(lg, ids, m, rank);
}

#endif
