"""Multimodal input through libmtmd: the projector's context, media chunks, encode and decode.

Owners, as for libllama: ``MultimodalContext`` owns the ``mtmd_context`` (the projector,
loaded beside a text model); ``MediaChunk`` owns one image or audio chunk (a copy of what
``mtmd_tokenize`` produced), freed by its ``close()``. Bitmaps and chunk lists only live
inside ``tokenize`` and are freed there.

``tokenize(text, media)`` turns a prompt with media markers and the media files' bytes into
pieces: lists of text token ids and ``MediaChunk`` objects, in prompt order. A media chunk
is then ``encode``-d (the projector; the result is copied out of libmtmd's buffer, which the
next encode overwrites) and ``decode_media``-d into one sequence of a llama context, the way
``mtmd_helper_decode_image_chunk`` does it: in ``n_batch`` pieces, with non-causal attention
and M-RoPE positions where the model needs them.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from . import _raw_mtmd as _m
from ._loader import library
from ._owner import Owner
from .errors import LlamaError, decode_error

__all__ = ["MultimodalContext", "MultimodalParams", "MediaChunk", "MediaError", "supported",
           "default_marker"]


class MediaError(LlamaError):
    """libmtmd could not load the projector or read, tokenize or encode some media.
    ``index`` is the position of the offending file in the request's list (or None)."""

    def __init__(self, message: str, code: int | None = None, index: int | None = None, log_tail=None,
                 reason: str = ""):
        super().__init__(message, code, log_tail)
        self.index = index
        self.reason = reason or message


def _lib():
    lib = library()
    mtmd = getattr(lib, "mtmd", None)
    if mtmd is None:
        raise MediaError(f"libmtmd was not found next to {lib.path}", log_tail=[])
    return mtmd


def supported() -> bool:
    """Whether the loaded library build ships libmtmd."""
    return getattr(library(), "mtmd", None) is not None


def default_marker() -> str:
    return _lib().mtmd_default_marker().decode()


@dataclass
class MultimodalParams:
    use_gpu: bool = True            # --mmproj-offload
    n_threads: int = 2
    image_min_tokens: int = -1      # -1: the projector's own (dynamic-resolution models only)
    image_max_tokens: int = -1
    flash_attn: int = -1            # enum llama_flash_attn_type (-1: auto)
    warmup: bool = True
    marker: str | None = None       # the media marker in prompts (None: libmtmd's default)


class MediaChunk(Owner):
    """One image or audio chunk of a tokenized prompt. ``id`` is the SHA-256 of the file's
    bytes (libmtmd's helper sets it), so equal files give equal ids."""

    def __init__(self, mtmd, handle):
        self._mtmd = mtmd
        self._handle = handle
        kind = mtmd.mtmd_input_chunk_get_type(handle)
        self.kind = "audio" if kind == _m.MTMD_INPUT_CHUNK_TYPE_AUDIO else "image"
        self.n_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(handle))
        self.n_pos = int(mtmd.mtmd_input_chunk_get_n_pos(handle))
        raw_id = mtmd.mtmd_input_chunk_get_id(handle)
        self.id = raw_id.decode() if raw_id else ""

    @property
    def handle(self):
        if not self._handle:
            raise ValueError("media chunk is closed")
        return self._handle

    def close(self) -> None:
        if getattr(self, "_handle", None):
            self._mtmd.mtmd_input_chunk_free(self._handle)
            self._handle = None

    def __repr__(self) -> str:
        return f"MediaChunk({self.kind}, {self.n_tokens} tokens, {self.id[:12]})"


class MultimodalContext(Owner):
    def __init__(self, path: str, model, params: MultimodalParams | None = None):
        params = params or MultimodalParams()
        self._mtmd = mtmd = _lib()
        self._llama = model._lib
        self.model = model
        cp = mtmd.mtmd_context_params_default()
        cp.use_gpu = params.use_gpu
        cp.n_threads = params.n_threads
        cp.print_timings = False
        cp.warmup = params.warmup
        cp.flash_attn_type = params.flash_attn
        if params.marker:
            self._marker = params.marker.encode()     # lent to C during the init
            cp.media_marker = self._marker
        if params.image_min_tokens > 0:
            cp.image_min_tokens = params.image_min_tokens
        if params.image_max_tokens > 0:
            cp.image_max_tokens = params.image_max_tokens
        self._handle = mtmd.mtmd_init_from_file(path.encode(), model.handle, cp)
        if not self._handle:
            raise MediaError(f"failed to load the multimodal projector {path}")
        self.path = path
        self.vision = bool(mtmd.mtmd_support_vision(self._handle))
        self.audio = bool(mtmd.mtmd_support_audio(self._handle))
        self.uses_mrope = bool(mtmd.mtmd_decode_use_mrope(self._handle))
        self.marker = (mtmd.mtmd_get_marker(self._handle) or mtmd.mtmd_default_marker()).decode()
        self.n_embd = int(self._llama.llama_model_n_embd_inp(model.handle))
        self._opt = mtmd.mtmd_helper_init_opt_default()

    @property
    def handle(self):
        if not self._handle:
            raise ValueError("multimodal context is closed")
        return self._handle

    def close(self) -> None:
        if getattr(self, "_handle", None):
            self._mtmd.mtmd_free(self._handle)
            self._handle = None

    # --- prompt side (thread-safe in libmtmd: any thread) -------------------------------
    def tokenize(self, text: str, media: list[bytes], add_special: bool = True,
                 parse_special: bool = True) -> list:
        """The prompt as pieces in order: ``list[int]`` (text tokens) or ``MediaChunk``.
        ``text`` holds one ``self.marker`` per entry of ``media``. Raises MediaError (with
        ``index``) for a file libmtmd cannot read, and for markers and files that do not
        pair up."""
        mtmd = self._mtmd
        bitmaps = []
        chunks = None
        try:
            for i, data in enumerate(media):
                wrapped = mtmd.mtmd_helper_bitmap_init_from_buf(self.handle, data, len(data), False, self._opt)
                if not wrapped.bitmap:
                    raise MediaError(f"file {i} is not an image or audio file libmtmd can decode",
                                     index=i, reason="not an image or audio file libmtmd can decode")
                bitmaps.append(wrapped.bitmap)
                if mtmd.mtmd_bitmap_is_audio(wrapped.bitmap) and not self.audio:
                    raise MediaError(f"file {i} is audio, which this projector does not support", index=i,
                                     reason="audio input is not supported by this projector")
                if not mtmd.mtmd_bitmap_is_audio(wrapped.bitmap) and not self.vision:
                    raise MediaError(f"file {i} is an image, which this projector does not support", index=i,
                                     reason="image input is not supported by this projector")
            raw = text.encode()
            inp = _m.mtmd_input_text(raw, len(raw), add_special, parse_special)
            array = (_m.mtmd_bitmap_p * max(1, len(bitmaps)))(*bitmaps)
            chunks = mtmd.mtmd_input_chunks_init()
            rc = mtmd.mtmd_tokenize(self.handle, chunks, ctypes.byref(inp), array, len(bitmaps))
            if rc == 1:
                raise MediaError(f"the prompt has {text.count(self.marker)} media markers for "
                                 f"{len(bitmaps)} files", rc)
            if rc != 0:
                raise MediaError("libmtmd could not preprocess the media", rc)
            return self._pieces(chunks)
        finally:
            if chunks:
                mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def _pieces(self, chunks) -> list:
        mtmd = self._mtmd
        out: list = []
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) == _m.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t(0)
                ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                tokens = ptr[:n.value] if n.value else []
                if out and isinstance(out[-1], list):
                    out[-1].extend(tokens)
                elif tokens:
                    out.append(list(tokens))
            else:
                out.append(MediaChunk(mtmd, mtmd.mtmd_input_chunk_copy(chunk)))
        return out

    # --- engine side (not thread-safe: the engine thread only) --------------------------
    def encode(self, chunk: MediaChunk) -> np.ndarray:
        """The projector's output for the chunk: ``(n_tokens, n_embd)`` float32, a copy."""
        rc = self._mtmd.mtmd_encode_chunk(self.handle, chunk.handle)
        if rc != 0:
            raise MediaError(f"failed to encode the {chunk.kind}", rc)
        ptr = self._mtmd.mtmd_get_output_embd(self.handle)
        return np.ctypeslib.as_array(ptr, shape=(chunk.n_tokens, self.n_embd)).copy()

    def decode_media(self, context, chunk: MediaChunk, embd: np.ndarray, n_past: int, seq_id: int,
                     n_batch: int) -> int:
        """Decode the chunk's embeddings into ``seq_id`` from position ``n_past``; the next
        position. Raises the decode error classes of ``llama_decode`` (NoKvSlotError: no
        room, the memory is as it was before the failed piece)."""
        embd = np.ascontiguousarray(embd, dtype=np.float32)
        new_n_past = _m.llama_pos(0)
        rc = self._mtmd.mtmd_helper_decode_image_chunk(
            self.handle, context.handle, chunk.handle, embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            n_past, seq_id, n_batch, ctypes.byref(new_n_past), _m.mtmd_helper_post_decode_callback(), None)
        if rc == -1:
            raise MediaError("not a media chunk", rc)
        if rc != 0:
            raise decode_error(rc)
        return int(new_n_past.value)
