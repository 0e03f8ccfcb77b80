/* Block maxima of a float array, vectorized: the one full-vocabulary pass of greedy and
 * top_k (sampling/_candidates.pyx).
 *
 * blockmax64(x, n_blocks, out): out[b] = the largest of x[64 b .. 64 b + 63], ignoring NaN
 * (a block of NaN and -inf alone gives -inf).
 *
 * With GCC, written with its vector extensions: one source becomes SSE2 on any x86-64 (or
 * NEON on arm64), plus AVX2 and AVX-512 clones picked at load time on CPUs that have them.
 * Sixteen blocks are reduced together: each to a 16-lane accumulator (4 loads, 4 maxima),
 * then the 16 accumulators fold into one vector of 16 block maxima by halving (8 + 4 + 2
 * + 1 maxima of shuffled pairs) instead of 16 serial lane-by-lane reductions. Elsewhere
 * (other compilers) a plain loop.
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
typedef float bm_v16f __attribute__((vector_size(64), aligned(4)));
typedef int32_t bm_v16i __attribute__((vector_size(64)));

#if defined(__x86_64__)
#define BLOCKMAX_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BLOCKMAX_CLONES
#endif

/* lanes of x where x beats acc (never for NaN), else acc's: a macro, not a function, so
 * each clone inlines it at its own width */
#define BM_MAX(acc, x) ({ bm_v16f x_ = (x), a_ = (acc); bm_v16i t_ = (bm_v16i)(x_ > a_); \
                          (bm_v16f)(((bm_v16i)x_ & t_) | ((bm_v16i)a_ & ~t_)); })

/* one halving step: lanes of a and b in groups of 2h hold h partials of one block each;
 * the result's groups of h hold the maxima, a's blocks first */
#define BM_FOLD(a, b, X, Y) BM_MAX(__builtin_shuffle((a), (b), (bm_v16i)X), \
                                   __builtin_shuffle((a), (b), (bm_v16i)Y))
#define BM_X8 {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}
#define BM_Y8 {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}
#define BM_X4 {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27}
#define BM_Y4 {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31}
#define BM_X2 {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29}
#define BM_Y2 {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31}
#define BM_X1 {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}
#define BM_Y1 {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}

BLOCKMAX_CLONES
static void blockmax64(const float *x, size_t n_blocks, float *out) {
    const bm_v16f lowest = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY,
                            -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY,
                            -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    size_t g, i;
    bm_v16f acc[16];
    for (g = 0; g + 16 <= n_blocks; g += 16) {
        for (i = 0; i < 16; i++) {
            const float *p = x + 64 * (g + i);
            bm_v16f a = BM_MAX(lowest, *(const bm_v16f *)p);
            a = BM_MAX(a, *(const bm_v16f *)(p + 16));
            a = BM_MAX(a, *(const bm_v16f *)(p + 32));
            acc[i] = BM_MAX(a, *(const bm_v16f *)(p + 48));
        }
        for (i = 0; i < 8; i++)
            acc[i] = BM_FOLD(acc[2 * i], acc[2 * i + 1], BM_X8, BM_Y8);
        for (i = 0; i < 4; i++)
            acc[i] = BM_FOLD(acc[2 * i], acc[2 * i + 1], BM_X4, BM_Y4);
        for (i = 0; i < 2; i++)
            acc[i] = BM_FOLD(acc[2 * i], acc[2 * i + 1], BM_X2, BM_Y2);
        *(bm_v16f *)(out + g) = BM_FOLD(acc[0], acc[1], BM_X1, BM_Y1);
    }
    blockmax64_scalar(x + 64 * g, n_blocks - g, out + g);
}
#else
#define blockmax64 blockmax64_scalar
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
