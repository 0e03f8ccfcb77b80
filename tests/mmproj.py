"""A tiny random-weight vision projector and test images, written by the tests themselves.

- ``vision_projector(dst, n_embd_out)``: a CLIP GGUF (``general.architecture = clip``) with a
  LLaVA-style ``mlp`` projector that libmtmd loads beside a text model whose input width is
  ``n_embd_out`` (the default model, SmolLM2-135M: 576). 32x32 images, 8x8 patches: every
  image becomes 16 tokens. Two ViT blocks (the llava graph runs all but the last), width 64;
  the feed-forward width equals the embedding width, so libmtmd's legacy up/down swap of
  ``mlp`` projectors changes nothing.
- ``clip_writer`` / ``write_out`` / ``random_weights``: what every test projector
  (this one, tests/mmproj_audio.py, tests/mmproj_mrope.py) starts and ends with.
- ``png(width, height, rgb)`` / ``bmp(...)``: image files as bytes (``zlib`` + ``struct``),
  ``rgb(x, y) -> (r, g, b)``.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

import gguf

__all__ = ["IMAGE_TOKENS", "vision_projector", "clip_writer", "write_out", "random_weights", "png",
           "bmp", "solid", "checker"]

IMAGE_SIZE = 32
PATCH = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2
_WIDTH = 64
_HEADS = 4
_BLOCKS = 2
_HIDDEN = 128


def random_weights(seed: int, scale: float):
    """``w(*shape, scale=scale)``: float32 normal weights from one seeded generator."""
    rng = np.random.default_rng(seed)

    def w(*shape, scale=scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    return w


def clip_writer(dst: str, name: str, encoder: str, projector_type: str) -> gguf.GGUFWriter:
    """A writer for a CLIP GGUF with the keys every test projector starts with;
    ``encoder``: "vision" or "audio". ``write_out`` finishes the file."""
    writer = gguf.GGUFWriter(dst, "clip")
    writer.add_string("general.name", name)
    writer.add_bool(f"clip.has_{encoder}_encoder", True)
    writer.add_string("clip.projector_type", projector_type)
    return writer


def write_out(writer: gguf.GGUFWriter, dst: str) -> str:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def vision_projector(dst: str, n_embd_out: int = 576, seed: int = 0) -> str:
    w = random_weights(seed, 0.05)
    writer = clip_writer(dst, "tiny test projector", "vision", "mlp")
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH)
    writer.add_uint32("clip.vision.embedding_length", _WIDTH)
    writer.add_uint32("clip.vision.feed_forward_length", _WIDTH)
    writer.add_uint32("clip.vision.block_count", _BLOCKS)
    writer.add_uint32("clip.vision.attention.head_count", _HEADS)
    writer.add_uint32("clip.vision.projection_dim", n_embd_out)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_bool("clip.use_gelu", True)
    n_pos = IMAGE_TOKENS
    # numpy shapes are the reverse of ggml's ne
    writer.add_tensor("v.patch_embd.weight", w(_WIDTH, 3, PATCH, PATCH, scale=0.2))
    writer.add_tensor("v.patch_embd.bias", w(_WIDTH))
    writer.add_tensor("v.position_embd.weight", w(n_pos, _WIDTH))
    writer.add_tensor("v.pre_ln.weight", np.ones(_WIDTH, np.float32))
    writer.add_tensor("v.pre_ln.bias", np.zeros(_WIDTH, np.float32))
    for i in range(_BLOCKS):
        p = f"v.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out", "ffn_up", "ffn_down"):
            writer.add_tensor(f"{p}.{name}.weight", w(_WIDTH, _WIDTH, scale=0.1))
            writer.add_tensor(f"{p}.{name}.bias", w(_WIDTH))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"{p}.{name}.weight", np.ones(_WIDTH, np.float32))
            writer.add_tensor(f"{p}.{name}.bias", np.zeros(_WIDTH, np.float32))
    # the projector's output is the text model's input: keep it near the scale of its
    # token embeddings so the images change what the model says without drowning it
    writer.add_tensor("mm.0.weight", w(_HIDDEN, _WIDTH, scale=0.2))
    writer.add_tensor("mm.0.bias", w(_HIDDEN))
    writer.add_tensor("mm.2.weight", w(n_embd_out, _HIDDEN, scale=0.1))
    writer.add_tensor("mm.2.bias", w(n_embd_out))
    return write_out(writer, dst)


def png(width: int, height: int, rgb) -> bytes:
    rows = b"".join(b"\x00" + bytes(c for x in range(width) for c in rgb(x, y)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) \
        + chunk(b"IEND", b"")


def bmp(width: int, height: int, rgb) -> bytes:
    stride = (3 * width + 3) & ~3
    pixels = b"".join(
        bytes(c for x in range(width) for c in reversed(rgb(x, y))).ljust(stride, b"\x00")
        for y in reversed(range(height)))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def solid(r: int, g: int, b: int):
    return lambda x, y: (r, g, b)


def checker(size: int = 4):
    return lambda x, y: (255, 255, 255) if (x // size + y // size) % 2 else (0, 0, 0)
