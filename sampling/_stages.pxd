# cython: language_level=3
# The stage kernels (_stages.pyx): the stages a chain runs over its candidate set
# (_candidates.pxd), in the plan's order, and the finals that pick one token. Their inputs
# besides the set: the stage table below, the token history, and the chain's rng (_rng.pxd).
#
# How kernels fail: they don't. Every kernel is `noexcept nogil`, allocates nothing (all
# buffers, the set's and the history's, are sized by the owner before the chain runs) and
# never leaves the set empty: a set whose every logit is -inf becomes token 0 alone.
# Anything that allocates or can raise lives in the Chain methods (_chain.pyx), outside
# the kernels.
from libc.stdint cimport int32_t

from ._candidates cimport cands_t
from ._rng cimport rng_t


cdef struct history_t:
    const int32_t* tokens     # every token the chain has seen (prompt seed + accepted)
    Py_ssize_t size
    const int32_t* counts     # occurrences of each token in the penalty window
    int32_t* mark             # capacity n_vocab, compared against `stamp` (a per-call set)
    int32_t* value            # capacity n_vocab, meaningful where mark == stamp
    int32_t* found            # capacity >= size: the tokens a DRY pass marked
    int32_t* z                # capacity >= size: DRY's Z-function over the reversed window
    int32_t stamp


cdef enum StageKind:
    ST_TOP_K = 1
    ST_TOP_P
    ST_MIN_P
    ST_TAIL_FREE
    ST_TYPICAL
    ST_TEMPERATURE
    ST_PENALTIES
    ST_DRY
    ST_XTC
    ST_TOP_N_SIGMA


cdef enum FinalKind:
    FIN_DIST = 1
    FIN_GREEDY
    FIN_MIROSTAT
    FIN_MIROSTAT_V2


cdef struct stage_t:
    # one stage's settings; each kernel reads the fields named in its signature
    int kind                  # a StageKind
    Py_ssize_t k              # top_k
    Py_ssize_t min_keep       # top_p, min_p, tail_free, typical, xtc
    double p                  # top_p, min_p, typical; tail_free z; xtc threshold; top_n_sigma n
    double probability        # xtc
    double temp, delta, exponent
    Py_ssize_t last_n         # penalties, dry: the history window (>= 1)
    float repeat, freq, present
    int32_t skip_token        # penalties: a token never penalized (newline unless penalize_nl), or -1
    float multiplier, base    # dry
    Py_ssize_t allowed_length
    const int32_t* head_off   # dry breakers, CSR by head token: entries head_off[t]..head_off[t+1]
    const int32_t* tail_off   # entry e's tail is tails[tail_off[e]:tail_off[e+1]]
    const int32_t* tails


# --- stages (each a no-op where its setting disables it) ------------------------------
cdef void top_k(cands_t* c, Py_ssize_t k) noexcept nogil
cdef void top_p(cands_t* c, double p, Py_ssize_t min_keep) noexcept nogil
cdef void min_p(cands_t* c, double p, Py_ssize_t min_keep) noexcept nogil
cdef void tail_free(cands_t* c, double z, Py_ssize_t min_keep) noexcept nogil
cdef void typical(cands_t* c, double p, Py_ssize_t min_keep) noexcept nogil
cdef void temperature(cands_t* c, double temp, double delta, double exponent) noexcept nogil
cdef void top_n_sigma(cands_t* c, double n) noexcept nogil
cdef void xtc(cands_t* c, rng_t* rng, double probability, double threshold,
              Py_ssize_t min_keep) noexcept nogil
cdef void penalties(cands_t* c, history_t* h, const stage_t* s) noexcept nogil
cdef void dry(cands_t* c, history_t* h, const stage_t* s) noexcept nogil
cdef void logit_bias(cands_t* c, const int32_t* ids, const float* values,
                     Py_ssize_t n) noexcept nogil    # first, on the full set; ids in range

# --- finals: pick one token; the set they leave is the one n_probs reports ------------
cdef Py_ssize_t draw(cands_t* c, rng_t* rng) noexcept nogil      # index into data
cdef int32_t argmax_token(cands_t* c) noexcept nogil            # token id; the set is untouched
cdef Py_ssize_t mirostat(cands_t* c, rng_t* rng, float mu, Py_ssize_t m,
                         Py_ssize_t n_vocab) noexcept nogil
cdef Py_ssize_t mirostat_v2(cands_t* c, rng_t* rng, float mu) noexcept nogil
