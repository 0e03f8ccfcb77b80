"""Model: owns a llama_model (weights, metadata, chat template) and its Vocab."""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from . import _raw
from ._loader import library
from .errors import AdapterError, ModelLoadError
from ._owner import Owner
from .vocab import Vocab

__all__ = ["Model", "ModelParams", "LoraAdapter"]


@dataclass
class ModelParams:
    n_gpu_layers: int = 0
    main_gpu: int = 0
    split_mode: str = "layer"
    tensor_split: list[float] | None = None
    use_mmap: bool = True
    use_mlock: bool = False
    check_tensors: bool = False
    vocab_only: bool = False
    # Extra weight buffer types (repacked CPU layouts, AMX): llama-server's --repack.
    use_extra_bufts: bool = True
    # -dev: the devices to use by name (["none"]: the CPU alone); None: every device
    devices: list[str] | None = None


_SPLIT = {"none": _raw.LLAMA_SPLIT_MODE_NONE, "layer": _raw.LLAMA_SPLIT_MODE_LAYER,
          "row": _raw.LLAMA_SPLIT_MODE_ROW}


class Model(Owner):
    def __init__(self, path: str, params: ModelParams | None = None):
        params = params or ModelParams()
        self._lib = lib = library()
        if not os.path.isfile(path):
            raise ModelLoadError(f"model file not found: {path}", log_tail=[])
        mp = lib.llama_model_default_params()
        mp.n_gpu_layers = params.n_gpu_layers
        mp.main_gpu = params.main_gpu
        mp.split_mode = _SPLIT[params.split_mode]
        if params.use_mlock:
            mp.load_mode = _raw.LLAMA_LOAD_MODE_MMAP_MLOCK if params.use_mmap else _raw.LLAMA_LOAD_MODE_MLOCK
        elif not params.use_mmap:
            mp.load_mode = _raw.LLAMA_LOAD_MODE_NONE
        mp.check_tensors = params.check_tensors
        mp.vocab_only = params.vocab_only
        mp.use_extra_bufts = params.use_extra_bufts
        if params.tensor_split:
            n = int(lib.llama_max_devices())
            values = (list(params.tensor_split) + [0.0] * n)[:n]
            self._tensor_split = (ctypes.c_float * n)(*values)  # lent to C during the load
            mp.tensor_split = self._tensor_split
        if params.devices is not None:
            from .backends import device_handles
            self._devices = device_handles(params.devices)   # lent to C during the load
            mp.devices = ctypes.cast(self._devices, ctypes.c_void_p)
        self.path = path
        self._handle = lib.llama_model_load_from_file(path.encode(), mp)
        if not self._handle:
            raise ModelLoadError(f"failed to load model from {path}")
        self.vocab = Vocab(lib, lib.llama_model_get_vocab(self._handle), owner=self)
        self._adapters: list[LoraAdapter] = []

    @property
    def handle(self):
        if not self._handle:
            raise ValueError("model is closed")
        return self._handle

    # --- facts -------------------------------------------------------------------------
    @property
    def n_ctx_train(self) -> int:
        return self._lib.llama_model_n_ctx_train(self.handle)

    @property
    def n_embd(self) -> int:
        return self._lib.llama_model_n_embd(self.handle)

    @property
    def n_layer(self) -> int:
        return self._lib.llama_model_n_layer(self.handle)

    @property
    def n_params(self) -> int:
        return int(self._lib.llama_model_n_params(self.handle))

    @property
    def size(self) -> int:
        return int(self._lib.llama_model_size(self.handle))

    @property
    def n_cls_out(self) -> int:
        """Outputs of the classifier head (rank pooling gives this many per sequence): the
        number of classifier labels in the metadata, else 1."""
        return int(self._lib.llama_model_n_cls_out(self.handle))

    @property
    def has_encoder(self) -> bool:
        return bool(self._lib.llama_model_has_encoder(self.handle))

    def description(self) -> str:
        buf = ctypes.create_string_buffer(256)
        self._lib.llama_model_desc(self.handle, buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def meta(self, key: str) -> str | None:
        size = 256
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._lib.llama_model_meta_val_str(self.handle, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", "replace")
            size = n + 1

    def metadata(self) -> dict[str, str]:
        out = {}
        key_buf = ctypes.create_string_buffer(256)
        for i in range(self._lib.llama_model_meta_count(self.handle)):
            if self._lib.llama_model_meta_key_by_index(self.handle, i, key_buf, 256) < 0:
                continue
            key = key_buf.value.decode("utf-8", "replace")
            out[key] = self.meta(key) or ""
        return out

    def chat_template(self, name: str | None = None) -> str | None:
        raw = self._lib.llama_model_chat_template(self.handle, name.encode() if name else None)
        return raw.decode("utf-8", "replace") if raw else None

    # --- adapters ------------------------------------------------------------------------
    def load_lora(self, path: str) -> "LoraAdapter":
        handle = self._lib.llama_adapter_lora_init(self.handle, path.encode())
        if not handle:
            raise AdapterError(f"failed to load LoRA adapter {path}")
        adapter = LoraAdapter(self._lib, handle, path)
        self._adapters.append(adapter)
        return adapter

    # --- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        for adapter in self._adapters:
            adapter.close()
        self._adapters.clear()
        if self._handle:
            self._lib.llama_model_free(self._handle)
            self._handle = None


class LoraAdapter:
    """Freed by its Model (children before parents), never on its own."""

    def __init__(self, lib, handle, path: str):
        self._lib = lib
        self.handle = handle
        self.path = path

    def close(self) -> None:
        if self.handle:
            self._lib.llama_adapter_lora_free(self.handle)
            self.handle = None
