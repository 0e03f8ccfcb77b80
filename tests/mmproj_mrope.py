"""A tiny random-weight Qwen2-VL pair (text model + projector) whose images take M-RoPE positions.

libmtmd gives a media chunk ``n_pos`` positions in the text model's sequence: ``n_tokens``
for ordinary models, but ``max(nx, ny)`` (the merged patch grid's width or height) for
models whose text side uses M-RoPE, such as Qwen2-VL. So after an image of ``n_tokens``
embeddings the next text token sits at ``n_past + n_pos``, not ``n_past + n_tokens``, and
the KV cache holds more cells than the sequence has positions. This pair is small enough
to build in a test and exercises exactly that.

- ``tiny_qwen2vl(dst, vocab_model, ...)``: a random float32 text model GGUF with
  ``general.architecture = qwen2vl`` (llama.cpp's ``LLM_ARCH_QWEN2VL``: rope type M-RoPE,
  so ``mtmd_decode_use_mrope`` is true). Qwen2 blocks (RMS norms, Q/K/V with biases,
  SwiGLU feed-forward), the required ``qwen2vl.rope.dimension_sections`` (4 int32s:
  temporal/height/width/extra rotary pairs, summing to ``head_dim / 2``), the output tied to
  ``token_embd`` (no ``output.weight``: the 49152-token vocabulary already makes
  ``token_embd`` 12.6 MB at width 64), and the ``tokenizer.*`` metadata of ``vocab_model``
  copied byte for byte (the default model's GPT-2 style BPE). Token embeddings are small
  (std ``TOKEN_EMBD_STD``) so that what the projector puts in the sequence shows in the
  logits of the text after it. ``qwen2vl.attention.layer_norm_rms_epsilon`` is written but
  this commit's qwen2vl loader never reads it (libllama logs ``f_norm_rms_eps = 0.0e+00``):
  harmless for random inputs, but an all-zero embedding row would give NaN.
- ``qwen2vl_projector(dst, n_embd_out)``: a CLIP GGUF (``general.architecture = clip``)
  with projector type ``qwen2vl_merger``: the two patch-embedding kernels of Qwen2-VL's
  temporal 3D convolution (``v.patch_embd.weight`` and ``v.patch_embd.weight.1``, no bias,
  which the graph asserts), ViT blocks with 2D M-RoPE in attention and LayerNorms (Qwen2-VL,
  not 2.5's RMS), the merger's LayerNorm (``v.post_ln``) and MLP over 2x2 merged patches
  (``mm.0``: 4*width -> 4*width, GELU, ``mm.2``: 4*width -> ``n_embd_out``). Width 32, 2 heads,
  2 blocks, patch size 8, spatial merge 2 (the graph hard-codes 2x2 merging).
- ``image_grid(width, height)``: the merged grid ``(nx, ny)`` libmtmd makes of an image of
  that size (Qwen2-VL's "smart resize", as this commit's dynamic-size preprocessor does it),
  so ``n_tokens = nx * ny`` and ``n_pos = max(nx, ny)``.

Image sizes at this commit: there are no ``image_min_pixels``/``image_max_pixels`` keys for
``qwen2vl_merger``; clip.cpp fixes the limits at 8..4096 image tokens (a token being a 2x2
group of 8x8 patches: 256 pixels), unless ``image_min_tokens``/``image_max_tokens`` are
passed to ``mtmd_init_from_file``. Sides are rounded to multiples of 16; an image under
8 tokens is scaled up (aspect ratio kept) until it reaches 8. So:

- 32x32 (4 tokens before scaling) becomes 48x48: a 3x3 grid, ``IMAGE_TOKENS`` = 9 tokens,
  ``IMAGE_N_POS`` = 3 positions;
- 48x48 is 3x3 as it is (9 tokens, 3 positions); 64x32 is 4x2 (8 tokens, 4 positions);
  64x64 is 4x4 (16 tokens, 4 positions).

The text model's width must equal the projector's ``n_embd_out`` (libmtmd checks it).
After ``decode_media`` at ``n_past`` every image embedding has temporal position ``n_past``
(height/width positions ``n_past + y``/``n_past + x``), so ``seq_pos_max`` is ``n_past``
and the next text token goes at ``n_past + n_pos``. With the default model's vocabulary and
seed 0, the prompt ``"Look: <marker> describe"`` after a solid red 32x32 PNG (220, 20, 20)
and after a solid green one (20, 200, 30) give different greedy next tokens (26208 and
38398); red, blue and the 4-pixel checker happen to agree.
Loading either file takes well under a second; the warmup at load reserves the compute
buffers of a 46x46-token image (clip.cpp's Qwen-VL default) without running it.
"""
from __future__ import annotations

import math
import struct

import numpy as np
from gguf import GGUFValueType as T

from tests.gguf_builders import U32, _encode_kv, read_layout, write_f32_gguf
from tests.mmproj import clip_writer, random_weights, write_out

__all__ = ["IMAGE_SIZE", "IMAGE_TOKENS", "IMAGE_N_POS", "PATCH", "MERGE", "TOKEN_EMBD_STD",
           "MIN_TOKENS", "MAX_TOKENS", "image_grid", "rope_sections", "qwen2vl_projector", "tiny_qwen2vl"]

PATCH = 8                   # clip.vision.patch_size
MERGE = 2                   # clip.vision.spatial_merge_size (2x2 patches make one token)
MIN_TOKENS, MAX_TOKENS = 8, 4096      # clip.cpp's limits for qwen2vl_merger at this commit
IMAGE_SIZE = 32             # the test image's side (e.g. tests.mmproj.png(32, 32, ...))
IMAGE_TOKENS = 9            # embeddings of a 32x32 image: a 3x3 grid (scaled up to 48x48)
IMAGE_N_POS = 3             # positions it takes in the text sequence: max(nx, ny)
TOKEN_EMBD_STD = 0.05       # the text model's token embeddings (the projector's output is ~0.3)

_WIDTH = 32
_HEADS = 2
_BLOCKS = 2
_FF = 64                    # != _WIDTH, so clip.cpp's legacy ffn up/down swap does not apply


def image_grid(width: int, height: int, min_tokens: int = MIN_TOKENS,
               max_tokens: int = MAX_TOKENS) -> tuple[int, int]:
    """The merged grid (nx, ny) of a ``width`` x ``height`` image: ``n_tokens = nx * ny``,
    ``n_pos = max(nx, ny)`` under M-RoPE."""
    align = PATCH * MERGE
    area = align * align
    min_px, max_px = min_tokens * area, max_tokens * area
    w = max(align, math.floor(width / align + 0.5) * align)      # std::round, not banker's
    h = max(align, math.floor(height / align + 0.5) * align)
    if w * h > max_px:
        beta = math.sqrt(height * width / max_px)
        h = max(align, math.floor(height / beta / align) * align)
        w = max(align, math.floor(width / beta / align) * align)
    elif w * h < min_px:
        beta = math.sqrt(min_px / (height * width))
        h = math.ceil(height * beta / align) * align
        w = math.ceil(width * beta / align) * align
    return w // align, h // align


assert image_grid(IMAGE_SIZE, IMAGE_SIZE) == (IMAGE_N_POS, IMAGE_TOKENS // IMAGE_N_POS)


def _i32_array(key: str, values) -> bytes:
    """An int32 array KV pair in GGUF's little-endian encoding."""
    name = key.encode()
    values = list(values)
    return (struct.pack("<Q", len(name)) + name + struct.pack("<IIQ", T.ARRAY, T.INT32, len(values))
            + struct.pack(f"<{len(values)}i", *values))


def rope_sections(head_dim: int) -> list[int]:
    """Qwen2-VL's split of the rotary pairs (head_dim / 2) into temporal, height and width
    sections (128-wide heads: [16, 24, 24, 0]); the fourth is unused."""
    half = head_dim // 2
    t = half // 4
    hh = (half - t) // 2
    return [t, hh, half - t - hh, 0]


def tiny_qwen2vl(dst: str, vocab_model: str, *, n_embd: int = 64, n_ff: int = 128, n_head: int = 2,
                 n_layer: int = 2, seed: int = 0) -> str:
    """A random ``qwen2vl`` text model GGUF with the tokenizer metadata of ``vocab_model``."""
    layout = read_layout(vocab_model)
    n_vocab = next(dims[1] for name, dims, _t, _o in layout.tensors if name == "token_embd.weight")
    if n_embd % n_head:
        raise ValueError("n_embd must be a multiple of n_head")
    head_dim = n_embd // n_head
    if head_dim % 8:
        raise ValueError("the head size must be a multiple of 8 (M-RoPE sections)")
    rng = np.random.default_rng(seed)

    def m(n_out, n_in):
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)

    def v(n, scale=0.02):
        return (rng.standard_normal(n) * scale).astype(np.float32)

    # numpy shapes: the ggml shapes reversed ([n_out, n_in] for a {n_in, n_out} matrix)
    w = {"token_embd.weight": (rng.standard_normal((n_vocab, n_embd)) * TOKEN_EMBD_STD).astype(np.float32),
         "output_norm.weight": np.ones(n_embd, np.float32)}
    for i in range(n_layer):
        p = f"blk.{i}"
        w[f"{p}.attn_norm.weight"] = np.ones(n_embd, np.float32)
        for name in ("attn_q", "attn_k", "attn_v"):
            w[f"{p}.{name}.weight"] = m(n_embd, n_embd)
            w[f"{p}.{name}.bias"] = v(n_embd)
        w[f"{p}.attn_output.weight"] = m(n_embd, n_embd)
        w[f"{p}.ffn_norm.weight"] = np.ones(n_embd, np.float32)
        w[f"{p}.ffn_gate.weight"] = m(n_ff, n_embd)
        w[f"{p}.ffn_up.weight"] = m(n_ff, n_embd)
        w[f"{p}.ffn_down.weight"] = m(n_embd, n_ff)
    arch = "qwen2vl"
    kv = [_encode_kv("general.architecture", arch, T.STRING),
          _encode_kv("general.name", "tiny-random-qwen2vl", T.STRING),
          _encode_kv(f"{arch}.block_count", n_layer, U32),
          _encode_kv(f"{arch}.context_length", 4096, U32),
          _encode_kv(f"{arch}.embedding_length", n_embd, U32),
          _encode_kv(f"{arch}.feed_forward_length", n_ff, U32),
          _encode_kv(f"{arch}.attention.head_count", n_head, U32),
          _encode_kv(f"{arch}.attention.head_count_kv", n_head, U32),
          _encode_kv(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6, T.FLOAT32),
          _encode_kv(f"{arch}.rope.freq_base", 10000.0, T.FLOAT32),
          _i32_array(f"{arch}.rope.dimension_sections", rope_sections(head_dim))]
    kv += [struct.pack("<Q", len(key.encode())) + key.encode() + raw
           for key, raw, _v in layout.kv if key.startswith("tokenizer.")]
    return write_f32_gguf(dst, kv, w)


def qwen2vl_projector(dst: str, n_embd_out: int = 64, seed: int = 0) -> str:
    """A random ``qwen2vl_merger`` CLIP projector whose output feeds a text model of width
    ``n_embd_out``."""
    w = random_weights(seed, 0.1)
    merged = _WIDTH * MERGE * MERGE
    writer = clip_writer(dst, "tiny test qwen2vl projector", "vision", "qwen2vl_merger")
    writer.add_uint32("clip.vision.image_size", 64)   # required, unused by the dynamic-size path
    writer.add_uint32("clip.vision.patch_size", PATCH)
    writer.add_uint32("clip.vision.spatial_merge_size", MERGE)
    writer.add_uint32("clip.vision.embedding_length", _WIDTH)
    writer.add_uint32("clip.vision.feed_forward_length", _FF)
    writer.add_uint32("clip.vision.block_count", _BLOCKS)
    writer.add_uint32("clip.vision.attention.head_count", _HEADS)
    writer.add_uint32("clip.vision.projection_dim", n_embd_out)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073])
    writer.add_array("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711])
    # no clip.use_gelu / use_silu: the ViT MLP uses quick GELU, as Qwen2-VL's does
    # numpy shapes are the reverse of ggml's ne: the kernels are ggml {P, P, 3, width}
    writer.add_tensor("v.patch_embd.weight", w(_WIDTH, 3, PATCH, PATCH, scale=0.05))
    writer.add_tensor("v.patch_embd.weight.1", w(_WIDTH, 3, PATCH, PATCH, scale=0.05))
    for i in range(_BLOCKS):
        p = f"v.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{p}.{name}.weight", w(_WIDTH, _WIDTH, scale=_WIDTH ** -0.5))
            writer.add_tensor(f"{p}.{name}.bias", w(_WIDTH, scale=0.02))
        writer.add_tensor(f"{p}.ffn_up.weight", w(_FF, _WIDTH, scale=_WIDTH ** -0.5))
        writer.add_tensor(f"{p}.ffn_up.bias", w(_FF, scale=0.02))
        writer.add_tensor(f"{p}.ffn_down.weight", w(_WIDTH, _FF, scale=_FF ** -0.5))
        writer.add_tensor(f"{p}.ffn_down.bias", w(_WIDTH, scale=0.02))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"{p}.{name}.weight", np.ones(_WIDTH, np.float32))
            writer.add_tensor(f"{p}.{name}.bias", np.zeros(_WIDTH, np.float32))
    writer.add_tensor("v.post_ln.weight", np.ones(_WIDTH, np.float32))    # the merger's ln_q
    writer.add_tensor("v.post_ln.bias", np.zeros(_WIDTH, np.float32))
    writer.add_tensor("mm.0.weight", w(merged, merged, scale=merged ** -0.5))
    writer.add_tensor("mm.0.bias", w(merged, scale=0.02))
    writer.add_tensor("mm.2.weight", w(n_embd_out, merged, scale=0.5 * merged ** -0.5))
    writer.add_tensor("mm.2.bias", w(n_embd_out, scale=0.02))
    return write_out(writer, dst)
