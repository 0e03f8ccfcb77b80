# cython: language_level=3
# The candidate set and its plumbing (_candidates.pyx): what the stage kernels (_stages.pxd)
# read and cut, and what the owner (_chain.pxd) sizes, starts and reads back.
#
# A candidate set starts "full": every token 0..n_vocab-1 with its logit read straight from
# the engine's logits (no copy, no id array). Stages that only change a few logits (logit
# bias, penalties, DRY) record those as edits; top_k and argmax merge the edits in, any
# other reader of a full set first flushes them into a private copy. The first stage that
# cuts the set (top_k, min_p, ...) writes the survivors into `data` as (id, logit, p)
# records and the set is "compact" from then on. Tokens whose logit is -inf never become
# candidates: a compact set holds finite logits only.
#
# How the plumbing fails: it doesn't. Every function here is `noexcept nogil`, allocates
# nothing (the owner sizes every buffer below before the chain runs, see Chain.__init__) and
# never leaves a compact set empty: a set whose every logit is -inf becomes token 0 alone.
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


# --- ordering: (logit desc, id asc) is the one candidate order ------------------------
cdef Py_ssize_t select_top(const float* logits, Py_ssize_t n, Py_ssize_t k,
                           cand_t* out) noexcept nogil    # top k finite of a full set, sorted; 0 if none
cdef Py_ssize_t select_top_cands(const cand_t* src, Py_ssize_t n, Py_ssize_t k,
                                 cand_t* out) noexcept nogil  # the same over records; p kept
cdef Py_ssize_t argmax_logits(const float* logits, Py_ssize_t n) noexcept nogil  # n >= 1; lowest index of ties
cdef void sort_range(cands_t* c, cand_t* a, Py_ssize_t n) noexcept nogil  # a[:n], via c.keys; p unset

# --- set plumbing ---------------------------------------------------------------------
cdef void begin(cands_t* c, const float* logits) noexcept nogil   # a fresh full set
cdef void only_token_zero(cands_t* c) noexcept nogil      # the set of a vocabulary all -inf
cdef float full_logit(const cands_t* c, int32_t token) noexcept nogil   # full set, edits included
cdef void set_full_logit(cands_t* c, int32_t token, float logit) noexcept nogil  # full set: an edit
cdef void flush_edits(cands_t* c) noexcept nogil          # full set: logits + edits -> `work`
cdef Py_ssize_t select_top_edited(cands_t* c, Py_ssize_t k,
                                  cand_t* out) noexcept nogil  # select_top with the edits; out != scratch
cdef void materialize(cands_t* c) noexcept nogil          # full -> compact, id order
cdef void sort_desc(cands_t* c) noexcept nogil            # compact, by (logit desc, id asc); p unset
cdef float softmax_total(cands_t* c, float* mx) noexcept nogil  # compact; max logit, float sum of exps
cdef void softmax(cands_t* c) noexcept nogil              # fills p; float32 sum like libllama's
cdef void softmax_final(cands_t* c) noexcept nogil        # fills p; double sum (draws, n_probs)
cdef void keep_marked(cands_t* c) noexcept nogil          # compact: keep the records whose p is -1

