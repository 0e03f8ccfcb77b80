"""NativeSampler: owner of one libllama ``llama_sampler`` (a stage, a chain or a grammar).

Used for libllama's grammar engine and as the oracle our own Cython sampler chain is
proven against. Candidates cross the boundary as numpy arrays: ``apply(ids, logits, p)``
lays them out as ``llama_token_data`` records, lets the sampler work in place, and returns
what survived (libllama may shrink the set, reorder it, or point ``data`` elsewhere).
"""
from __future__ import annotations

import ctypes

import numpy as np

from . import _raw
from ._loader import library
from ._owner import Owner
from .errors import GrammarError, LlamaError

__all__ = ["NativeSampler", "Candidates", "TOKEN_DATA_DTYPE"]

TOKEN_DATA_DTYPE = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")], align=True)
assert TOKEN_DATA_DTYPE.itemsize == ctypes.sizeof(_raw.llama_token_data)


class Candidates:
    """The result of one apply: parallel arrays plus the index libllama selected (or -1)."""

    def __init__(self, records: np.ndarray, selected: int, is_sorted: bool):
        self.ids = records["id"].copy()
        self.logits = records["logit"].copy()
        self.p = records["p"].copy()
        self.selected = selected
        self.sorted = is_sorted

    @property
    def token(self) -> int:
        if self.selected < 0:
            raise LlamaError("the sampler selected no token", log_tail=[])
        return int(self.ids[self.selected])


class NativeSampler(Owner):
    def __init__(self, handle, lent=(), name: str = "sampler"):
        if not handle:
            raise LlamaError(f"failed to create the {name} sampler")
        self._lib = library()
        self._handle = handle
        self._lent = lent   # buffers C keeps pointers into
        self._owned_by_chain = False

    # --- constructors, one per libllama stage -----------------------------------------
    @classmethod
    def greedy(cls):
        return cls(library().llama_sampler_init_greedy(), name="greedy")

    @classmethod
    def dist(cls, seed: int):
        return cls(library().llama_sampler_init_dist(seed & 0xFFFFFFFF), name="dist")

    @classmethod
    def top_k(cls, k: int):
        return cls(library().llama_sampler_init_top_k(k), name="top_k")

    @classmethod
    def top_p(cls, p: float, min_keep: int = 1):
        return cls(library().llama_sampler_init_top_p(p, min_keep), name="top_p")

    @classmethod
    def min_p(cls, p: float, min_keep: int = 1):
        return cls(library().llama_sampler_init_min_p(p, min_keep), name="min_p")

    @classmethod
    def typical(cls, p: float, min_keep: int = 1):
        return cls(library().llama_sampler_init_typical(p, min_keep), name="typical")

    @classmethod
    def temp(cls, t: float):
        return cls(library().llama_sampler_init_temp(t), name="temp")

    @classmethod
    def temp_ext(cls, t: float, delta: float, exponent: float):
        return cls(library().llama_sampler_init_temp_ext(t, delta, exponent), name="temp_ext")

    @classmethod
    def xtc(cls, p: float, t: float, min_keep: int, seed: int):
        return cls(library().llama_sampler_init_xtc(p, t, min_keep, seed & 0xFFFFFFFF), name="xtc")

    @classmethod
    def top_n_sigma(cls, n: float):
        return cls(library().llama_sampler_init_top_n_sigma(n), name="top_n_sigma")

    @classmethod
    def mirostat(cls, n_vocab: int, seed: int, tau: float, eta: float, m: int = 100):
        return cls(library().llama_sampler_init_mirostat(n_vocab, seed & 0xFFFFFFFF, tau, eta, m),
                   name="mirostat")

    @classmethod
    def mirostat_v2(cls, seed: int, tau: float, eta: float):
        return cls(library().llama_sampler_init_mirostat_v2(seed & 0xFFFFFFFF, tau, eta),
                   name="mirostat_v2")

    @classmethod
    def penalties(cls, last_n: int, repeat: float, freq: float, present: float, n_vocab: int = 0):
        return cls(library().llama_sampler_init_penalties(n_vocab, last_n, repeat, freq, present),
                   name="penalties")

    @classmethod
    def dry(cls, vocab, multiplier: float, base: float, allowed_length: int, last_n: int,
            breakers: list[str]):
        arr = (ctypes.c_char_p * max(1, len(breakers)))(*[b.encode() for b in breakers])
        handle = library().llama_sampler_init_dry(vocab.handle, multiplier, base, allowed_length,
                                                  last_n, arr, len(breakers))
        return cls(handle, lent=(arr,), name="dry")

    @classmethod
    def logit_bias(cls, n_vocab: int, biases: list[tuple[int, float]]):
        arr = (_raw.llama_logit_bias * max(1, len(biases)))(*[(t, b) for t, b in biases])
        return cls(library().llama_sampler_init_logit_bias(n_vocab, len(biases), arr),
                   lent=(arr,), name="logit_bias")

    @classmethod
    def grammar(cls, vocab, text: str, root: str = "root"):
        handle = library().llama_sampler_init_grammar(vocab.handle, text.encode(), root.encode())
        if not handle:
            raise GrammarError("Failed to parse grammar")
        return cls(handle, name="grammar")

    @classmethod
    def grammar_lazy(cls, vocab, text: str, root: str = "root", patterns: list[str] = (),
                     tokens: list[int] = ()):
        """A grammar that waits for a trigger: one of ``tokens`` sampled, or one of the
        ``patterns`` (ECMAScript regexes; ``^...$`` must match all the text so far, others
        anywhere) found in the text so far; it then constrains from the trigger on."""
        pats = (ctypes.c_char_p * max(1, len(patterns)))(*[p.encode() for p in patterns])
        toks = (ctypes.c_int32 * max(1, len(tokens)))(*tokens)
        handle = library().llama_sampler_init_grammar_lazy_patterns(
            vocab.handle, text.encode(), root.encode(), pats, len(patterns), toks, len(tokens))
        if not handle:
            raise GrammarError("Failed to parse grammar")
        return cls(handle, lent=(pats, toks), name="grammar")

    @classmethod
    def chain(cls, stages: list["NativeSampler"]):
        lib = library()
        handle = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        chain = cls(handle, name="chain")
        for stage in stages:
            lib.llama_sampler_chain_add(handle, stage.handle)
            stage._owned_by_chain = True     # the chain frees its stages
        chain._lent = tuple(stages)
        return chain

    # --- use --------------------------------------------------------------------------
    @property
    def handle(self):
        if not self._handle:
            raise ValueError("sampler is closed")
        return self._handle

    @property
    def name(self) -> str:
        raw = self._lib.llama_sampler_name(self.handle)
        return raw.decode() if raw else ""

    def apply(self, ids, logits, p=None, is_sorted: bool = False) -> Candidates:
        records = np.empty(len(ids), dtype=TOKEN_DATA_DTYPE)
        records["id"] = ids
        records["logit"] = logits
        records["p"] = 0.0 if p is None else p
        arr = _raw.llama_token_data_array(
            records.ctypes.data_as(ctypes.POINTER(_raw.llama_token_data)), len(records), -1, is_sorted)
        self._lib.llama_sampler_apply(self.handle, ctypes.byref(arr))
        size = int(arr.size)
        if size == 0:
            out = np.empty(0, dtype=TOKEN_DATA_DTYPE)
        else:
            address = ctypes.cast(arr.data, ctypes.c_void_p).value
            buf = (ctypes.c_char * (size * TOKEN_DATA_DTYPE.itemsize)).from_address(address)
            out = np.frombuffer(buf, dtype=TOKEN_DATA_DTYPE, count=size)
        return Candidates(out, int(arr.selected), bool(arr.sorted))

    def apply_full(self, logits: np.ndarray) -> Candidates:
        """Apply over the whole vocabulary (ids 0..n-1)."""
        return self.apply(np.arange(len(logits), dtype=np.int32), logits)

    def accept(self, token: int) -> None:
        self._lib.llama_sampler_accept(self.handle, token)

    def reset(self) -> None:
        self._lib.llama_sampler_reset(self.handle)

    def clone(self) -> "NativeSampler":
        return NativeSampler(self._lib.llama_sampler_clone(self.handle), lent=self._lent,
                             name="clone")

    def close(self) -> None:
        if self._handle and not self._owned_by_chain:
            self._lib.llama_sampler_free(self._handle)
        self._handle = None
