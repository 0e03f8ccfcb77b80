"""Context: owns a llama_context (KV memory, decode, logits, embeddings, sequence state)."""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from . import _raw
from .batch import Batch
from ._owner import Owner
from .errors import ContextError, StateError, decode_error

__all__ = ["Context", "ContextParams"]

_POOLING = {"unspecified": _raw.LLAMA_POOLING_TYPE_UNSPECIFIED, "none": _raw.LLAMA_POOLING_TYPE_NONE,
            "mean": _raw.LLAMA_POOLING_TYPE_MEAN, "cls": _raw.LLAMA_POOLING_TYPE_CLS,
            "last": _raw.LLAMA_POOLING_TYPE_LAST, "rank": _raw.LLAMA_POOLING_TYPE_RANK}
_ROPE_SCALING = {None: _raw.LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED, "none": _raw.LLAMA_ROPE_SCALING_TYPE_NONE,
                 "linear": _raw.LLAMA_ROPE_SCALING_TYPE_LINEAR, "yarn": _raw.LLAMA_ROPE_SCALING_TYPE_YARN}
_FLASH = {"auto": _raw.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": _raw.LLAMA_FLASH_ATTN_TYPE_ENABLED,
          "off": _raw.LLAMA_FLASH_ATTN_TYPE_DISABLED}


@dataclass
class ContextParams:
    n_ctx: int = 4096
    n_batch: int = 2048
    n_ubatch: int = 512
    n_seq_max: int = 1
    n_threads: int = 2
    n_threads_batch: int = 2
    embeddings: bool = False
    pooling: str = "unspecified"
    flash_attn: str = "auto"
    type_k: str = "f16"
    type_v: str = "f16"
    rope_scaling: str | None = None
    rope_freq_base: float = 0.0
    rope_freq_scale: float = 0.0
    yarn_ext_factor: float = -1.0
    yarn_attn_factor: float = -1.0
    yarn_beta_fast: float = -1.0
    yarn_beta_slow: float = -1.0
    yarn_orig_ctx: int = 0
    defrag_thold: float = -1.0
    offload_kqv: bool = True
    kv_unified: bool = False
    no_perf: bool = True


class Context(Owner):
    def __init__(self, model, params: ContextParams):
        self._lib = lib = model._lib
        self.model = model
        cp = lib.llama_context_default_params()
        cp.n_ctx = params.n_ctx
        cp.n_batch = params.n_batch
        cp.n_ubatch = min(params.n_ubatch, params.n_batch)
        cp.n_seq_max = params.n_seq_max
        cp.n_threads = params.n_threads
        cp.n_threads_batch = params.n_threads_batch
        cp.embeddings = params.embeddings
        cp.pooling_type = _POOLING[params.pooling]
        cp.flash_attn_type = _FLASH[params.flash_attn]
        cp.type_k = _raw.GGML_TYPES[params.type_k]
        cp.type_v = _raw.GGML_TYPES[params.type_v]
        cp.rope_scaling_type = _ROPE_SCALING[params.rope_scaling]
        cp.rope_freq_base = params.rope_freq_base
        cp.rope_freq_scale = params.rope_freq_scale
        cp.yarn_ext_factor = params.yarn_ext_factor
        if params.yarn_attn_factor >= 0:
            cp.yarn_attn_factor = params.yarn_attn_factor
        if params.yarn_beta_fast >= 0:
            cp.yarn_beta_fast = params.yarn_beta_fast
        if params.yarn_beta_slow >= 0:
            cp.yarn_beta_slow = params.yarn_beta_slow
        cp.yarn_orig_ctx = params.yarn_orig_ctx
        cp.defrag_thold = params.defrag_thold
        cp.offload_kqv = params.offload_kqv
        cp.kv_unified = params.kv_unified
        cp.no_perf = params.no_perf
        self._handle = lib.llama_init_from_model(model.handle, cp)
        if not self._handle:
            raise ContextError("failed to create the llama context")
        self._mem = lib.llama_get_memory(self._handle)
        self.n_ctx = lib.llama_n_ctx(self._handle)
        self.n_ctx_seq = lib.llama_n_ctx_seq(self._handle)
        self.n_batch = lib.llama_n_batch(self._handle)
        self.n_ubatch = lib.llama_n_ubatch(self._handle)
        self.n_seq_max = lib.llama_n_seq_max(self._handle)
        self.n_vocab = model.vocab.n_tokens
        self.n_embd = model.n_embd
        self.pooling = lib.llama_pooling_type(self._handle)
        # a sequence's pooled output: n_embd floats, or with rank pooling the classifier's
        # n_cls_out scores (libllama's buffer holds no more)
        self.n_seq_embd = model.n_cls_out if self.pooling == _raw.LLAMA_POOLING_TYPE_RANK else self.n_embd
        self.can_shift = bool(lib.llama_memory_can_shift(self._mem))
        # One KV buffer shared by every sequence: the slots compete for its n_ctx cells.
        self.kv_unified = bool(params.kv_unified) and self.n_seq_max > 1
        self._lora_lent = None
        # logits of the last decode: one (n_outputs, n_vocab) view and the output row of each
        # batch index, built on the first logits() call after a decode (see logits())
        self._out_flags = None
        self._out_view = None
        self._out_rows = None

    @property
    def handle(self):
        if not self._handle:
            raise ValueError("context is closed")
        return self._handle

    # --- compute ---------------------------------------------------------------------
    def decode(self, batch: Batch) -> None:
        """Run the batch; raises NoKvSlotError (recoverable) or DecodeError."""
        self._out_view = None
        code = self._lib.llama_decode(self.handle, batch.struct)
        self._out_flags = batch.logits[:batch.n_tokens].copy()
        if code != 0:
            raise decode_error(code)

    def encode(self, batch: Batch) -> None:
        code = self._lib.llama_encode(self.handle, batch.struct)
        if code != 0:
            raise decode_error(code)

    def logits(self, i: int) -> np.ndarray:
        """Logits of batch index i, a view valid until the next decode. The first call after
        a decode takes one view of every output row (``llama_get_logits``, rows in batch
        order) and maps batch indices to rows; later calls are a numpy row lookup: 0.9 us
        a slot instead of 2.8 us for a ``llama_get_logits_ith`` call and a new array view
        (measured on an idle 2-core machine; 11 us under load, issue #16)."""
        if self._out_view is None:
            flags = self._out_flags
            ptr = self._lib.llama_get_logits(self.handle) if flags is not None else None
            n_out = int(np.count_nonzero(flags)) if flags is not None else 0
            if not ptr or not n_out:
                raise ContextError(f"no logits for batch index {i}", log_tail=[])
            self._out_view = np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab))
            self._out_rows = np.cumsum(flags != 0) - 1
        if not 0 <= i < len(self._out_rows) or self._out_flags[i] == 0:
            raise ContextError(f"no logits for batch index {i}", log_tail=[])
        return self._out_view[self._out_rows[i]]

    def logits_rows(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Every output row's logits as one (n_outputs, n_vocab) view (valid until the next
        decode) and the rows of the given batch indices: the engine draws for all its slots
        from this table in one call."""
        if not len(indices):
            raise ContextError("no batch indices", log_tail=[])
        self.logits(int(indices[0]))        # builds the view (and checks that there are outputs)
        idx = np.asarray(indices, dtype=np.int64)
        if idx.min() < 0 or idx.max() >= len(self._out_rows) or not np.all(self._out_flags[idx]):
            raise ContextError(f"no logits for some of the batch indices {idx.tolist()}", log_tail=[])
        return self._out_view, self._out_rows[idx]

    def embedding(self, i: int) -> np.ndarray:
        ptr = self._lib.llama_get_embeddings_ith(self.handle, i)
        if not ptr:
            raise ContextError(f"no embedding for batch index {i}", log_tail=[])
        return np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).copy()

    def sequence_embedding(self, seq_id: int) -> np.ndarray:
        ptr = self._lib.llama_get_embeddings_seq(self.handle, seq_id)
        if not ptr:
            raise ContextError(f"no pooled embedding for sequence {seq_id}", log_tail=[])
        return np.ctypeslib.as_array(ptr, shape=(self.n_seq_embd,)).copy()

    def set_embeddings(self, on: bool) -> None:
        self._lib.llama_set_embeddings(self.handle, on)

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        self._lib.llama_set_n_threads(self.handle, n_threads, n_threads_batch)

    # --- memory (KV cache) -------------------------------------------------------------
    def clear(self) -> None:
        self._lib.llama_memory_clear(self._mem, True)

    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        return bool(self._lib.llama_memory_seq_rm(self._mem, seq_id, p0, p1))

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        self._lib.llama_memory_seq_cp(self._mem, src, dst, p0, p1)

    def seq_add(self, seq_id: int, p0: int, p1: int, delta: int) -> None:
        self._lib.llama_memory_seq_add(self._mem, seq_id, p0, p1, delta)

    def seq_div(self, seq_id: int, p0: int, p1: int, d: int) -> None:
        self._lib.llama_memory_seq_div(self._mem, seq_id, p0, p1, d)

    def seq_pos_max(self, seq_id: int) -> int:
        return self._lib.llama_memory_seq_pos_max(self._mem, seq_id)

    # --- sequence state ----------------------------------------------------------------
    def save_sequence(self, path: str, seq_id: int, tokens: list[int]) -> int:
        arr = (_raw.llama_token * max(1, len(tokens)))(*tokens)
        n = self._lib.llama_state_seq_save_file(self.handle, path.encode(), seq_id, arr, len(tokens))
        if n == 0:
            raise StateError(f"failed to save sequence {seq_id} to {path}")
        return int(n)

    def load_sequence(self, path: str, seq_id: int, capacity: int) -> list[int]:
        arr = (_raw.llama_token * max(1, capacity))()
        count = ctypes.c_size_t(0)
        n = self._lib.llama_state_seq_load_file(self.handle, path.encode(), seq_id, arr, capacity,
                                                ctypes.byref(count))
        if n == 0:
            raise StateError(f"failed to restore sequence {seq_id} from {path}")
        return arr[:count.value]

    def sequence_state(self, seq_id: int) -> bytearray:
        """The KV state of one sequence, serialised straight into a bytearray (no extra
        copy: a prompt state is ~23 KB per token for the default model)."""
        size = self._lib.llama_state_seq_get_size(self.handle, seq_id)
        data = bytearray(max(1, size))
        buf = (ctypes.c_uint8 * len(data)).from_buffer(data)
        n = self._lib.llama_state_seq_get_data(self.handle, buf, size, seq_id)
        del buf          # release the export so the bytearray may be resized
        if n != size:
            raise StateError(f"failed to read the state of sequence {seq_id} ({n} of {size} bytes)")
        return data

    def set_sequence_state(self, data: bytearray, seq_id: int) -> None:
        """Replace sequence ``seq_id`` with a state read by ``sequence_state``; raises
        StateError (the sequence is then empty) when libllama refuses it (e.g. no room)."""
        buf = (ctypes.c_uint8 * len(data)).from_buffer(data)
        n = self._lib.llama_state_seq_set_data(self.handle, buf, len(data), seq_id)
        del buf
        if n != len(data):
            self.seq_rm(seq_id, -1, -1)
            raise StateError(f"failed to restore the state of sequence {seq_id}")

    # --- adapters ----------------------------------------------------------------------
    def set_lora(self, adapters, scales) -> None:
        n = len(adapters)
        handles = (_raw.llama_adapter_lora_p * max(1, n))(*[a.handle for a in adapters])
        values = (ctypes.c_float * max(1, n))(*scales)
        self._lora_lent = (handles, values)
        code = self._lib.llama_set_adapters_lora(self.handle, handles, n, values)
        if code != 0:
            from .errors import AdapterError
            raise AdapterError("llama_set_adapters_lora failed", code)

    # --- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        if self._handle:
            self._lib.llama_free(self._handle)
            self._handle = None
