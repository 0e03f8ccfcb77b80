# The contract of the sampler chain: the candidate set, the stage table and the kernels.
#
# A candidate set starts "full": every token 0..n_vocab-1 with its logit read straight from
# the engine's logits (no copy, no id array). Stages that only change a few logits (logit
# bias, penalties, DRY) record those as edits; top_k and argmax merge the edits in, any
# other reader of a full set first flushes them into a private copy. The first stage that
# cuts the set (top_k, min_p, ...) writes the survivors into `data` as (id, logit, p)
# records and the set is "compact" from then on. Tokens whose logit is -inf never become
# candidates: a compact set holds finite logits only.
#
# How kernels fail: they don't. Every kernel is `noexcept nogil`, allocates nothing (all
# buffers are sized by the owner before the chain runs) and never leaves the set empty: a
# set whose every logit is -inf becomes token 0 alone. Anything that allocates or can raise
# lives in the Chain methods (`_chain.pyx`), outside the kernels.
from libc.stdint cimport int32_t, uint64_t


cdef struct cand_t:
    # the layout of llama_token_data, so the buffer reads as llama_lib.TOKEN_DATA_DTYPE
    int32_t id
    float logit
    float p


cdef struct cands_t:
    Py_ssize_t n_vocab
    bint full                 # the set is every token, logits in `full_logits` + edits; `data` unused
    const float* full_logits  # the engine's logits (never written), or `work` after a flush
    int32_t* edit_ids         # capacity n_vocab: full-set tokens whose logit a stage changed ...
    float* edit_values        # ... and their new logits
    Py_ssize_t n_edits
    int32_t* edit_slot        # capacity n_vocab: a token's index in edit_ids, where edit_mark == edit_stamp
    int32_t* edit_mark
    int32_t edit_stamp
    float* work               # capacity n_vocab: full_logits with the edits applied (flush_edits)
    cand_t* data              # capacity n_vocab: the compact set
    Py_ssize_t size           # compact set size (>= 1)
    bint sorted               # data[:size] is in descending logit order
    cand_t* scratch           # capacity n_vocab, for kernels that need a second buffer
    uint64_t* keys            # capacity 2 * n_vocab, for the radix sort


cdef struct rng_t:            # xoshiro256**, seeded through splitmix64
    uint64_t s[4]


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
    int kind
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


# --- set plumbing ----------------------------------------------------------------------
cdef void begin(cands_t* c, const float* logits) noexcept nogil   # a fresh full set
cdef float full_logit(const cands_t* c, int32_t token) noexcept nogil
cdef void set_full_logit(cands_t* c, int32_t token, float logit) noexcept nogil
cdef void flush_edits(cands_t* c) noexcept nogil          # full set: logits + edits -> `work`
cdef void materialize(cands_t* c) noexcept nogil          # full -> compact, id order
cdef void sort_desc(cands_t* c) noexcept nogil            # compact, by (logit desc, id asc); p unset
cdef void softmax(cands_t* c) noexcept nogil              # fills p; float32 sum like libllama's
cdef void softmax_final(cands_t* c) noexcept nogil        # fills p; double sum (draws, n_probs)
cdef Py_ssize_t select_top(const float* logits, Py_ssize_t n, Py_ssize_t k,
                           cand_t* out) noexcept nogil    # top k finite of a full set, sorted

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

# --- rng --------------------------------------------------------------------------------
cdef void rng_seed(rng_t* r, uint64_t seed) noexcept nogil
cdef double rng_uniform(rng_t* r) noexcept nogil                  # [0, 1), 53 bits
