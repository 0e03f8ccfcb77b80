"""Stub for the compiled stage kernels of the sampler chain (``_stages.pyx``).

Everything in it is C-level, cimported by ``_chain`` through ``_stages.pxd``; from Python
the module has nothing to call (``sampling._chain.Chain`` runs the kernels).
"""
