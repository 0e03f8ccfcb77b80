# cython: language_level=3
# The owner of a sampler chain (_chain.pyx): one request's candidate set (_candidates.pxd),
# stage table and token history (_stages.pxd) and rng (_rng.pxd), and the buffers they all
# point into. Python sees it as sampling._chain.Chain (_chain.pyi).
#
# How it fails: everything that allocates or checks the plan is here, outside the kernels,
# and raises (ValueError naming what the plan got wrong, MemoryError); `core_run` and
# `core_stages`, the per-token path, are `noexcept nogil` like the kernels they call.
from libc.stdint cimport int32_t

from ._candidates cimport cands_t
from ._rng cimport rng_t
from ._stages cimport history_t, stage_t


cdef struct core_t:
    # everything one token's draw reads and writes: a plain struct, so that one nogil loop
    # can draw for many chains (sample_rows)
    cands_t c
    rng_t rng
    history_t h
    stage_t* stages
    Py_ssize_t n_stages
    int final_kind                  # a FinalKind
    float mu, tau, eta
    Py_ssize_t mirostat_m
    const int32_t* bias_ids
    const float* bias_values
    Py_ssize_t n_bias


cdef void core_stages(core_t* k) noexcept nogil
cdef int32_t core_run(core_t* k, const float* logits) noexcept nogil


cdef class Chain:
    cdef core_t k
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
    cdef readonly double last_prob

    # construction: ValueError, MemoryError
    cdef _set_bias(self, const int32_t[::1] ids, const float[::1] values)
    cdef _set_stages(self, specs, list keep)
    cdef _set_final(self, final)
    # history: MemoryError when it cannot grow
    cdef _reserve(self, Py_ssize_t capacity)
    cdef _push(self, int32_t token)
    # n_probs: builds a Python list (MemoryError)
    cdef list _top_probs(self, Py_ssize_t n)
    cdef double _prob_of(self, int32_t token) noexcept
