"""Tiny GGUF files for tests, built with the ``gguf`` package (never downloaded).

- ``copy_with_metadata(src, dst, overrides)``: the same model with some KV metadata added or
  replaced (e.g. FIM token ids, a shorter training context); tensor bytes are copied as is.
- ``fim_model(src, dst, ...)``: the default model with fill-in-the-middle token ids pointing
  at existing special tokens, so ``/infill`` has something to work with.
- ``split_model(src, stem, n)``: the model split into ``STEM-00001-of-0000N.gguf``, ... the
  way llama.cpp's ``gguf-split`` writes them (all metadata in the first part, ``split.*`` keys
  in every part, the tensors in file order, each part's data section its own).
- ``lora_adapter(base, dst, ...)``: a LoRA adapter GGUF whose A/B matrices match the base
  model's tensor shapes (llama.cpp's layout: ``<tensor>.lora_a`` has ggml shape
  ``[n_in, rank]``, ``<tensor>.lora_b`` ``[rank, n_out]``).
- ``bert_weights(...)`` + ``bert_model(dst, vocab, weights, ...)``: a tiny random-weight BERT
  (llama.cpp's ``bert`` architecture, non-causal) with the tokenizer of a vocabulary GGUF
  from the sdist (``ggml-vocab-bert-bge.gguf``) and, optionally, a cross-encoder classifier
  head (``cls.weight``/``cls.bias`` then ``cls.output.weight``/``cls.output.bias``):
  a reranker small enough to build in a test.
- ``renamed_tokens_model(src, dst, {id: text})``: ``src`` with some tokens renamed (unused
  special tokens turned into markers such as ``<tool_call>``), weights unchanged.
- ``tiny_llama(dst, vocab_model, ...)``: a random one-layer ``llama`` with the tokenizer of
  ``vocab_model`` (a speculative-decoding draft that almost never agrees).
- ``write_f32_gguf(dst, kv, weights)``: the writer the random-weight builders share.

``gguf.GGUFReader`` builds one numpy object per vocabulary string (about 15 s for the default
model on a busy 2-core machine), so the layout is read here with a small skipping parser
(``read_layout``, well under a second); unchanged metadata is copied as raw bytes.
"""
from __future__ import annotations

import mmap
import shutil
import struct

import numpy as np

import gguf
from gguf import GGUFValueType as T

__all__ = ["bert_model", "bert_weights", "copy_with_metadata", "fim_model", "lora_adapter",
           "read_layout", "split_model", "U32"]

U32 = T.UINT32
_SCALAR = {T.UINT8: "B", T.INT8: "b", T.UINT16: "H", T.INT16: "h", T.UINT32: "I", T.INT32: "i",
           T.FLOAT32: "f", T.BOOL: "?", T.UINT64: "Q", T.INT64: "q", T.FLOAT64: "d"}


class Layout:
    """Where things are in a little-endian GGUF v3 file."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._parse(buf)
        finally:
            buf.close()

    def _parse(self, buf) -> None:
        magic, self.version, n_tensors, n_kv = struct.unpack_from("<IIQQ", buf, 0)
        if magic != gguf.GGUF_MAGIC:
            raise ValueError("not a GGUF file")
        pos = 24
        self.kv: list[tuple[str, bytes, object]] = []    # (key, raw value bytes with type, value or None)
        for _ in range(n_kv):
            key, pos = self._string(buf, pos)
            start = pos
            vtype = T(struct.unpack_from("<I", buf, pos)[0])
            pos, value = self._skip_value(buf, pos + 4, vtype)
            self.kv.append((key, bytes(buf[start:pos]), value))
        self.tensors: list[tuple[str, list[int], int, int]] = []   # (name, ggml dims, type, offset)
        ti_start = pos
        for _ in range(n_tensors):
            name, pos = self._string(buf, pos)
            (n_dims,) = struct.unpack_from("<I", buf, pos)
            dims = list(struct.unpack_from(f"<{n_dims}Q", buf, pos + 4))
            ttype, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            self.tensors.append((name, dims, ttype, offset))
        self.tensor_info = bytes(buf[ti_start:pos])
        values = {k: v for k, _, v in self.kv}
        self.alignment = int(values.get("general.alignment") or gguf.GGUF_DEFAULT_ALIGNMENT)
        self.data_offset = -(-pos // self.alignment) * self.alignment
        self.values = values

    @staticmethod
    def _string(buf, pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return bytes(buf[pos + 8:pos + 8 + n]).decode("utf-8"), pos + 8 + n

    def _skip_value(self, buf, pos: int, vtype: T) -> tuple[int, object]:
        if vtype == T.STRING:
            value, pos = self._string(buf, pos)
            return pos, value
        if vtype == T.ARRAY:
            sub, n = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            sub = T(sub)
            if sub in _SCALAR:
                return pos + n * struct.calcsize(_SCALAR[sub]), None
            for _ in range(n):
                pos, _v = self._skip_value(buf, pos, sub)
            return pos, None
        fmt = "<" + _SCALAR[vtype]
        return pos + struct.calcsize(fmt), struct.unpack_from(fmt, buf, pos)[0]


def read_layout(path: str) -> Layout:
    return Layout(path)


def _string_bytes(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _encode_kv(key: str, value, vtype: T) -> bytes:
    """One scalar or string KV pair in GGUF's little-endian encoding."""
    if vtype == T.STRING:
        encoded = _string_bytes(value)
    elif vtype in _SCALAR:
        encoded = struct.pack("<" + _SCALAR[vtype], value)
    else:
        raise ValueError(f"only scalar and string overrides are supported, not {vtype.name}")
    return _string_bytes(key) + struct.pack("<I", vtype) + encoded


def copy_with_metadata(src: str, dst: str, overrides: dict[str, tuple[object, T]]) -> str:
    """Write ``dst``: ``src`` with the KV pairs in ``overrides`` ({key: (value, type)})."""
    layout = read_layout(src)
    pending = dict(overrides)
    parts = []
    for key, raw, _value in layout.kv:
        if key in pending:
            parts.append(_encode_kv(key, *pending.pop(key)))
        else:
            parts.append(_string_bytes(key) + raw)
    parts.extend(_encode_kv(key, value, vtype) for key, (value, vtype) in pending.items())
    return _rewrite_kv(src, dst, layout, parts)


def _rewrite_kv(src: str, dst: str, layout: Layout, parts: list[bytes]) -> str:
    """Write ``dst``: ``src``'s tensors (info and data copied as they are) under the encoded
    KV pairs ``parts``."""
    head = struct.pack("<IIQQ", gguf.GGUF_MAGIC, layout.version, len(layout.tensors), len(parts))
    meta = head + b"".join(parts) + layout.tensor_info
    meta += b"\0" * (-len(meta) % layout.alignment)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(meta)
        fin.seek(layout.data_offset)
        shutil.copyfileobj(fin, fout, 1 << 22)
    return dst


def _raw_array_overrides(layout: Layout, renamed: dict[int, str], token_type: int) -> dict[str, bytes]:
    """New raw values (type included) of ``tokenizer.ggml.tokens`` and ``.token_type`` with
    the tokens in ``renamed`` given new text and ``token_type``."""
    raws = {k: raw for k, raw, _ in layout.kv}
    out = {}
    raw = raws["tokenizer.ggml.tokens"]
    _t, sub, n = struct.unpack_from("<IIQ", raw, 0)
    pos, items = 16, []
    for _ in range(n):
        (length,) = struct.unpack_from("<Q", raw, pos)
        items.append(raw[pos + 8:pos + 8 + length].decode("utf-8"))
        pos += 8 + length
    for i, text in renamed.items():
        items[i] = text
    out["tokenizer.ggml.tokens"] = raw[:16] + b"".join(_string_bytes(t) for t in items)
    raw = raws["tokenizer.ggml.token_type"]
    _t, sub, n = struct.unpack_from("<IIQ", raw, 0)
    types = list(struct.unpack_from(f"<{n}i", raw, 16))
    for i in renamed:
        types[i] = token_type
    out["tokenizer.ggml.token_type"] = raw[:16] + struct.pack(f"<{n}i", *types)
    return out


def renamed_tokens_model(src: str, dst: str, renamed: dict[int, str], *, token_type: int = 4) -> str:
    """``src`` with some tokens given new text (e.g. unused special tokens turned into
    ``<tool_call>`` / ``</tool_call>``) and token type ``token_type`` (4: user-defined, shown
    in the output text like Qwen's ``<tool_call>``); weights and vocabulary size unchanged, so
    a marker is one token of a real model."""
    layout = read_layout(src)
    raws = _raw_array_overrides(layout, renamed, token_type)
    parts = [_string_bytes(key) + raws.get(key, raw) for key, raw, _value in layout.kv]
    return _rewrite_kv(src, dst, layout, parts)


def fim_model(src: str, dst: str, *, pre: int, suf: int, mid: int, sep: int | None = None,
              rep: int | None = None) -> str:
    keys = {"tokenizer.ggml.fim_pre_token_id": pre, "tokenizer.ggml.fim_suf_token_id": suf,
            "tokenizer.ggml.fim_mid_token_id": mid, "tokenizer.ggml.fim_sep_token_id": sep,
            "tokenizer.ggml.fim_rep_token_id": rep}
    return copy_with_metadata(src, dst, {k: (v, U32) for k, v in keys.items() if v is not None})


def split_model(src: str, stem: str, n: int) -> list[str]:
    """Write ``src`` as ``n`` split parts ``{stem}-0000i-of-0000n.gguf``; return their paths."""
    layout = read_layout(src)
    tensors = sorted(layout.tensors, key=lambda t: t[3])
    size = -(-len(tensors) // n)
    groups = [tensors[i:i + size] for i in range(0, len(tensors), size)]
    if len(groups) != n:
        raise ValueError(f"{len(tensors)} tensors do not make {n} parts")
    with open(src, "rb") as f:
        data_size = f.seek(0, 2) - layout.data_offset
    split_kv = {"split.count": (n, T.UINT16), "split.tensors.count": (len(tensors), T.INT32)}
    paths = []
    for i, group in enumerate(groups):
        first = group[0][3]
        end = groups[i + 1][0][3] if i + 1 < n else data_size
        kv = [_string_bytes(key) + raw for key, raw, _v in layout.kv
              if i == 0 or key == "general.alignment"]
        kv += [_encode_kv(key, *value) for key, value in
               {"split.no": (i, T.UINT16), **split_kv}.items()]
        info = b"".join(_string_bytes(name) + struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
                        + struct.pack("<IQ", ttype, offset - first)
                        for name, dims, ttype, offset in group)
        meta = struct.pack("<IIQQ", gguf.GGUF_MAGIC, layout.version, len(group), len(kv))
        meta += b"".join(kv) + info
        meta += b"\0" * (-len(meta) % layout.alignment)
        path = f"{stem}-{i + 1:05d}-of-{n:05d}.gguf"
        with open(src, "rb") as fin, open(path, "wb") as fout:
            fout.write(meta)
            fin.seek(layout.data_offset + first)
            fout.write(fin.read(end - first))   # offsets in a part are relative to its own data
        paths.append(path)
    return paths


def lora_adapter(base: str, dst: str, *, targets=("attn_q", "attn_v", "ffn_down"), layers=None,
                 rank: int = 8, alpha: float = 8.0, std: float = 0.05, seed: int = 0) -> str:
    """A random LoRA adapter for ``base`` (std 0 gives an all-zero adapter)."""
    layout = read_layout(base)
    arch = layout.values["general.architecture"]
    shapes = {name: dims for name, dims, _t, _o in layout.tensors}   # ggml order: [n_in, n_out]
    n_layer = int(layout.values[f"{arch}.block_count"])
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(dst, arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    for layer in (range(n_layer) if layers is None else layers):
        for target in targets:
            name = f"blk.{layer}.{target}.weight"
            n_in, n_out = shapes[name]
            # numpy shapes are the ggml shapes reversed
            a = (rng.standard_normal((rank, n_in)) * std).astype(np.float32)
            b = (rng.standard_normal((n_out, rank)) * std).astype(np.float32)
            writer.add_tensor(name + ".lora_a", a)
            writer.add_tensor(name + ".lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def bert_weights(n_vocab: int, *, n_embd: int = 32, n_layer: int = 2, n_ff: int = 64,
                 n_ctx: int = 512, n_token_types: int = 2, n_cls_out: int | None = 1,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 tensors of a BERT, by GGUF name, in numpy shape (the ggml shape
    reversed). ``n_cls_out``: outputs of the classifier head (None: no head)."""
    rng = np.random.default_rng(seed)

    def matrix(n_out: int, n_in: int) -> np.ndarray:
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)

    def vector(n: int, center: float = 0.0) -> np.ndarray:
        return (center + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def rows(n: int, scale: float) -> np.ndarray:
        return (scale * rng.standard_normal((n, n_embd))).astype(np.float32)

    w = {"token_embd.weight": rows(n_vocab, 1.0), "token_types.weight": rows(n_token_types, 0.1),
         "position_embd.weight": rows(n_ctx, 0.1),
         "token_embd_norm.weight": vector(n_embd, 1.0), "token_embd_norm.bias": vector(n_embd)}
    for i in range(n_layer):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w[f"blk.{i}.{name}.weight"] = matrix(n_embd, n_embd)
            w[f"blk.{i}.{name}.bias"] = vector(n_embd)
        w[f"blk.{i}.attn_output_norm.weight"] = vector(n_embd, 1.0)
        w[f"blk.{i}.attn_output_norm.bias"] = vector(n_embd)
        w[f"blk.{i}.ffn_up.weight"] = matrix(n_ff, n_embd)
        w[f"blk.{i}.ffn_up.bias"] = vector(n_ff)
        w[f"blk.{i}.ffn_down.weight"] = matrix(n_embd, n_ff)
        w[f"blk.{i}.ffn_down.bias"] = vector(n_embd)
        w[f"blk.{i}.layer_output_norm.weight"] = vector(n_embd, 1.0)
        w[f"blk.{i}.layer_output_norm.bias"] = vector(n_embd)
    if n_cls_out is not None:
        w["cls.weight"] = matrix(n_embd, n_embd)
        w["cls.bias"] = vector(n_embd)
        w["cls.output.weight"] = matrix(n_cls_out, n_embd)
        w["cls.output.bias"] = vector(n_cls_out)
    return {name: np.ascontiguousarray(t, dtype=np.float32) for name, t in w.items()}


def bert_model(dst: str, vocab: str, weights: dict[str, np.ndarray], *, n_head: int = 2,
               pooling: int | None = None, labels: list[str] | None = None,
               rerank_template: str | None = None) -> str:
    """Write a ``bert`` GGUF: the ``tokenizer.*`` metadata of ``vocab`` (copied as raw bytes),
    hyperparameters read off ``weights``, and the tensors as float32. ``pooling``: the
    model's ``bert.pooling_type`` (4: rank); ``labels``: ``bert.classifier.output_labels``
    (libllama's n_cls_out); ``rerank_template``: ``tokenizer.chat_template.rerank``."""
    layout = read_layout(vocab)
    n_ctx, n_embd = weights["position_embd.weight"].shape
    n_layer = sum(1 for name in weights if name.endswith(".ffn_up.weight"))
    n_ff = weights["blk.0.ffn_up.weight"].shape[0]
    kv = [_encode_kv("general.architecture", "bert", T.STRING),
          _encode_kv("general.name", "tiny-random-bert", T.STRING),
          _encode_kv("bert.block_count", n_layer, U32),
          _encode_kv("bert.context_length", n_ctx, U32),
          _encode_kv("bert.embedding_length", n_embd, U32),
          _encode_kv("bert.feed_forward_length", n_ff, U32),
          _encode_kv("bert.attention.head_count", n_head, U32),
          _encode_kv("bert.attention.layer_norm_epsilon", 1e-12, T.FLOAT32),
          _encode_kv("bert.attention.causal", False, T.BOOL)]
    if pooling is not None:
        kv.append(_encode_kv("bert.pooling_type", pooling, U32))
    if labels:
        kv.append(_string_bytes("bert.classifier.output_labels")
                  + struct.pack("<IIQ", T.ARRAY, T.STRING, len(labels))
                  + b"".join(_string_bytes(label) for label in labels))
    if rerank_template is not None:
        kv.append(_encode_kv("tokenizer.chat_template.rerank", rerank_template, T.STRING))
    kv += [_string_bytes(key) + raw for key, raw, _v in layout.kv if key.startswith("tokenizer.")]
    return write_f32_gguf(dst, kv, weights)


def write_f32_gguf(dst: str, kv: list[bytes], weights: dict[str, np.ndarray]) -> str:
    """A GGUF v3 file of the encoded KV pairs ``kv`` and float32 ``weights`` (numpy shapes,
    written in ggml order: ne0 first)."""
    align = gguf.GGUF_DEFAULT_ALIGNMENT
    info, data, offset = [], [], 0
    for name, tensor in weights.items():
        dims = tensor.shape[::-1]
        info.append(_string_bytes(name) + struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
                    + struct.pack("<IQ", gguf.GGMLQuantizationType.F32, offset))
        raw = tensor.astype("<f4").tobytes()
        raw += b"\0" * (-len(raw) % align)
        data.append(raw)
        offset += len(raw)
    meta = struct.pack("<IIQQ", gguf.GGUF_MAGIC, 3, len(weights), len(kv)) + b"".join(kv) + b"".join(info)
    meta += b"\0" * (-len(meta) % align)
    with open(dst, "wb") as f:
        f.write(meta)
        for raw in data:
            f.write(raw)
    return dst


def tiny_llama(dst: str, vocab_model: str, *, n_embd: int = 64, n_ff: int = 128, n_head: int = 2,
               seed: int = 0) -> str:
    """A random one-layer ``llama`` GGUF with the tokenizer metadata of ``vocab_model``."""
    layout = read_layout(vocab_model)
    n_vocab = next(dims[1] for name, dims, _t, _o in layout.tensors if name == "token_embd.weight")
    rng = np.random.default_rng(seed)

    def m(n_out, n_in):
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)

    w = {"token_embd.weight": rng.standard_normal((n_vocab, n_embd)).astype(np.float32),
         "output_norm.weight": np.ones(n_embd, np.float32),
         "blk.0.attn_norm.weight": np.ones(n_embd, np.float32),
         "blk.0.attn_q.weight": m(n_embd, n_embd), "blk.0.attn_k.weight": m(n_embd, n_embd),
         "blk.0.attn_v.weight": m(n_embd, n_embd), "blk.0.attn_output.weight": m(n_embd, n_embd),
         "blk.0.ffn_norm.weight": np.ones(n_embd, np.float32),
         "blk.0.ffn_gate.weight": m(n_ff, n_embd), "blk.0.ffn_up.weight": m(n_ff, n_embd),
         "blk.0.ffn_down.weight": m(n_embd, n_ff)}
    kv = [_encode_kv("general.architecture", "llama", gguf.GGUFValueType.STRING),
          _encode_kv("general.name", "tiny-random-llama", gguf.GGUFValueType.STRING),
          _encode_kv("llama.block_count", 1, U32),
          _encode_kv("llama.context_length", 2048, U32),
          _encode_kv("llama.embedding_length", n_embd, U32),
          _encode_kv("llama.feed_forward_length", n_ff, U32),
          _encode_kv("llama.attention.head_count", n_head, U32),
          _encode_kv("llama.attention.head_count_kv", n_head, U32),
          _encode_kv("llama.attention.layer_norm_rms_epsilon", 1e-5, gguf.GGUFValueType.FLOAT32)]
    kv += [_string_bytes(key) + raw for key, raw, _v in layout.kv if key.startswith("tokenizer.")]
    return write_f32_gguf(dst, kv, w)
