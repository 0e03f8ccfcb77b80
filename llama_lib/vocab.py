"""Vocab: tokenization and token pieces of a loaded model (owned by its Model)."""
from __future__ import annotations

import ctypes

from . import _raw
from .errors import TokenizeError

__all__ = ["Vocab"]


class Vocab:
    def __init__(self, lib, handle, owner=None):
        self._lib = lib
        self.handle = handle
        self._owner = owner   # the Model: the vocab's memory is the model's, keep it alive
        self.n_tokens = lib.llama_vocab_n_tokens(handle)
        self.bos = lib.llama_vocab_bos(handle)
        self.eos = lib.llama_vocab_eos(handle)
        self.eot = lib.llama_vocab_eot(handle)
        self.nl = lib.llama_vocab_nl(handle)
        self.sep = lib.llama_vocab_sep(handle)
        self.add_bos = bool(lib.llama_vocab_get_add_bos(handle))
        self.add_eos = bool(lib.llama_vocab_get_add_eos(handle))
        self.add_sep = bool(lib.llama_vocab_get_add_sep(handle))
        self.fim_pre = lib.llama_vocab_fim_pre(handle)
        self.fim_suf = lib.llama_vocab_fim_suf(handle)
        self.fim_mid = lib.llama_vocab_fim_mid(handle)
        self.fim_pad = lib.llama_vocab_fim_pad(handle)
        self.fim_rep = lib.llama_vocab_fim_rep(handle)
        self.fim_sep = lib.llama_vocab_fim_sep(handle)
        # Pieces are asked for once per generated token; a dict lookup beats a ctypes call.
        # token -> bytes, without and with special tokens rendered (index: special)
        self._pieces: tuple[dict[int, bytes], dict[int, bytes]] = ({}, {})
        # token -> its piece as text when the bytes are whole UTF-8 characters, else None
        self._texts: tuple[dict[int, str | None], dict[int, str | None]] = ({}, {})
        self._eog: dict[int, bool] = {}

    def tokenize(self, text: str | bytes, add_special: bool = True,
                 parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else text
        capacity = len(data) + 8
        buf = (_raw.llama_token * capacity)()
        n = self._lib.llama_tokenize(self.handle, data, len(data), buf, capacity,
                                     add_special, parse_special)
        if n < 0:
            capacity = -n
            buf = (_raw.llama_token * capacity)()
            n = self._lib.llama_tokenize(self.handle, data, len(data), buf, capacity,
                                         add_special, parse_special)
        if n < 0:
            raise TokenizeError("llama_tokenize failed", n)
        return buf[:n]

    def piece(self, token: int, special: bool = True) -> bytes:
        """The bytes of one token (may be part of a UTF-8 sequence)."""
        cached = self._pieces[special].get(token)
        if cached is not None:
            return cached
        if not 0 <= token < self.n_tokens:
            raise TokenizeError(f"token id {token} is out of range [0, {self.n_tokens})", log_tail=[])
        buf = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self.handle, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self.handle, token, buf, -n, 0, special)
        if n < 0:
            raise TokenizeError("llama_token_to_piece failed", n)
        out = buf.raw[:n]
        self._pieces[special][token] = out
        return out

    def piece_text(self, token: int, special: bool = True) -> str | None:
        """The token's piece as text when its bytes are whole UTF-8 characters (nearly every
        token), else None (a piece of a character, or bytes that are not UTF-8)."""
        texts = self._texts[special]
        if token in texts:
            return texts[token]
        try:
            text = self.piece(token, special).decode("utf-8")
        except UnicodeDecodeError:
            text = None
        texts[token] = text
        return text

    def detokenize(self, tokens: list[int], remove_special: bool = False,
                   unparse_special: bool = True) -> str:
        for t in tokens:
            if not 0 <= t < self.n_tokens:
                raise TokenizeError(f"token id {t} is out of range [0, {self.n_tokens})", log_tail=[])
        arr = (_raw.llama_token * max(1, len(tokens)))(*tokens)
        capacity = max(64, len(tokens) * 8)
        buf = ctypes.create_string_buffer(capacity)
        n = self._lib.llama_detokenize(self.handle, arr, len(tokens), buf, capacity,
                                       remove_special, unparse_special)
        if n < 0:
            capacity = -n
            buf = ctypes.create_string_buffer(capacity)
            n = self._lib.llama_detokenize(self.handle, arr, len(tokens), buf, capacity,
                                           remove_special, unparse_special)
        if n < 0:
            raise TokenizeError("llama_detokenize failed", n)
        return buf.raw[:n].decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        value = self._eog.get(token)
        if value is None:
            value = self._eog[token] = bool(self._lib.llama_vocab_is_eog(self.handle, token))
        return value

    def is_control(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_control(self.handle, token))

    def text(self, token: int) -> str:
        raw = self._lib.llama_vocab_get_text(self.handle, token)
        return raw.decode("utf-8", "replace") if raw else ""

    @property
    def has_fim(self) -> bool:
        return min(self.fim_pre, self.fim_suf, self.fim_mid) >= 0
