"""Stub for the compiled candidate-set plumbing of the sampler chain (``_candidates.pyx``).

Everything in it is C-level, cimported by ``_stages`` and ``_chain`` through
``_candidates.pxd``; from Python the module has nothing to call.
"""
