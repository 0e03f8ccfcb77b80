/* Block maxima of a float array, vectorized: the one full-vocabulary pass of greedy and
 * top_k (sampling/_candidates.pyx).
 *
 * blockmax64(x, n_blocks, out): out[b] = the largest of x[64 b .. 64 b + 63], ignoring NaN
 * (a block of NaN and -inf alone gives -inf).
 *
 * With GCC, written with its vector extensions: 4-lane vectors (SSE2 on any x86-64, NEON on
 * arm64) and, on CPUs with AVX2 (checked once), 8-lane ones. A group of blocks (4 or 8) is
 * reduced together: each block to one accumulator vector, then the accumulators fold into
 * one vector of the group's block maxima by halving (maxima of shuffled pairs) instead of
 * a serial lane-by-lane reduction per block. AVX-512 would add nothing: the pass is bound
 * by memory. Elsewhere (other compilers) a plain loop.
 *
 * ge_mask64: which of 64 logits reach a threshold, as the bits of one word (SSE2
 * compares and movemask on x86-64), so a caller visits only those.
 *
 * The compare-and-blend keeps the accumulator when x is NaN (x > acc is false), so a NaN
 * logit never hides a real one in its block, and no partial maximum is ever NaN.
 */
#ifndef SAMPLING_BLOCKMAX_H
#define SAMPLING_BLOCKMAX_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

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

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__aarch64__))
/* Vectors of one native register: 4 lanes (SSE2 / NEON) everywhere, 8 lanes (AVX2) where
 * the CPU has it, picked once at run time. The folds then use single-register or
 * register-pair shuffles only: wider generic vectors made GCC scalarize them (5x slower). */
typedef float bm_v4f __attribute__((vector_size(16), aligned(4)));
typedef int32_t bm_v4i __attribute__((vector_size(16)));
typedef float bm_v8f __attribute__((vector_size(32), aligned(4)));
typedef int32_t bm_v8i __attribute__((vector_size(32)));

/* lanes of x where x beats acc (never for NaN), else acc's */
#define BM_MAX(VF, VI, acc, x) ({ VF x_ = (x), a_ = (acc); VI t_ = (VI)(x_ > a_); \
                                  (VF)(((VI)x_ & t_) | ((VI)a_ & ~t_)); })
/* one halving step: lanes of a and b in groups of 2h hold h partials of one block each;
 * the result's groups of h hold the maxima, a's blocks first */
#define BM_FOLD(VF, VI, a, b, X, Y) BM_MAX(VF, VI, __builtin_shuffle((a), (b), (VI)X), \
                                           __builtin_shuffle((a), (b), (VI)Y))

/* 4 blocks a group: each to a 4-lane accumulator (16 loads), then two folds */
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
                a = BM_MAX(bm_v4f, bm_v4i, a, *(const bm_v4f *)(p + 4 * j));
            acc[i] = a;
        }
        for (i = 0; i < 2; i++)
            acc[i] = BM_FOLD(bm_v4f, bm_v4i, acc[2 * i], acc[2 * i + 1],
                             ((bm_v4i){0, 1, 4, 5}), ((bm_v4i){2, 3, 6, 7}));
        *(bm_v4f *)(out + g) = BM_FOLD(bm_v4f, bm_v4i, acc[0], acc[1],
                                       ((bm_v4i){0, 2, 4, 6}), ((bm_v4i){1, 3, 5, 7}));
    }
    blockmax64_scalar(x + 64 * g, n_blocks - g, out + g);
}

#if defined(__x86_64__)
/* 8 blocks a group: each to an 8-lane accumulator (8 loads), then three folds */
__attribute__((target("avx2")))
static void blockmax64_v8(const float *x, size_t n_blocks, float *out) {
    const bm_v8f lowest = {-INFINITY, -INFINITY, -INFINITY, -INFINITY,
                           -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    size_t g, i;
    int j;
    bm_v8f acc[8];
    for (g = 0; g + 8 <= n_blocks; g += 8) {
        for (i = 0; i < 8; i++) {
            const float *p = x + 64 * (g + i);
            bm_v8f a = lowest;
            for (j = 0; j < 8; j++)
                a = BM_MAX(bm_v8f, bm_v8i, a, *(const bm_v8f *)(p + 8 * j));
            acc[i] = a;
        }
        for (i = 0; i < 4; i++)
            acc[i] = BM_FOLD(bm_v8f, bm_v8i, acc[2 * i], acc[2 * i + 1],
                             ((bm_v8i){0, 1, 2, 3, 8, 9, 10, 11}), ((bm_v8i){4, 5, 6, 7, 12, 13, 14, 15}));
        for (i = 0; i < 2; i++)
            acc[i] = BM_FOLD(bm_v8f, bm_v8i, acc[2 * i], acc[2 * i + 1],
                             ((bm_v8i){0, 1, 4, 5, 8, 9, 12, 13}), ((bm_v8i){2, 3, 6, 7, 10, 11, 14, 15}));
        *(bm_v8f *)(out + g) = BM_FOLD(bm_v8f, bm_v8i, acc[0], acc[1],
                                       ((bm_v8i){0, 2, 4, 6, 8, 10, 12, 14}),
                                       ((bm_v8i){1, 3, 5, 7, 9, 11, 13, 15}));
    }
    blockmax64_scalar(x + 64 * g, n_blocks - g, out + g);
}
#endif

static int blockmax_has_v8(void) {
#if defined(__x86_64__)
    static int avx2 = -1;
    if (avx2 < 0)
        avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    return avx2;
#else
    return 0;
#endif
}

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
static inline uint64_t ge_mask64(const float *x, float t) {
    const __m128 tt = _mm_set1_ps(t);
    uint64_t m = 0;
    int i;
    for (i = 0; i < 16; i++)
        m |= (uint64_t)_mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(x + 4 * i), tt)) << (4 * i);
    return m;
}
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

#endif
