"""A tiny random-weight audio projector and test sounds, written by the tests themselves.

- ``audio_projector(dst, n_embd_out)``: a CLIP GGUF (``general.architecture = clip``,
  ``clip.has_audio_encoder = true``) with an ``ultravox`` projector that libmtmd loads beside
  a text model whose input width is ``n_embd_out`` (the default model, SmolLM2-135M: 576).
  Ultravox is a Whisper-style encoder (two conv1d layers, learned positions, pre-norm blocks,
  ``post_ln``) followed by frame stacking, an RMS-normed SwiGLU MLP and an output matrix; of
  libmtmd's audio projectors it adds no begin/end text around the audio and lets the stack
  factor (``clip.audio.projector.stack_factor``) shrink the token count.
  Width 32, one block, float32, 32 mel bins: about 1.3 MB.
- Token count: libmtmd's Whisper preprocessor appends 30 s of silence and cuts the log-mel
  spectrogram into 30 s windows of 3000 frames (10 ms hop), dropping the incomplete last one,
  so any clip shorter than 30 s is one window and one audio chunk. The convolutions halve
  3000 frames to 1500 positions and stacking ``STACK_FACTOR`` (60) of them leaves
  ``AUDIO_TOKENS`` = 25 tokens per chunk (libmtmd: ``3000 / 60 / 2``), whatever the clip's
  length below 30 s.
- ``wav(samples, rate)``: a 16-bit PCM mono WAV file as bytes (``struct`` only) that
  libmtmd's helper decodes with miniaudio (and resamples to 16 kHz when ``rate`` differs);
  ``tone(freq, seconds, rate)``: a sine wave as a float32 array in [-1, 1].
"""
from __future__ import annotations

import struct

import numpy as np

from tests.mmproj import clip_writer, random_weights, write_out

__all__ = ["AUDIO_TOKENS", "SAMPLE_RATE", "STACK_FACTOR", "audio_projector", "wav", "tone"]

SAMPLE_RATE = 16000         # what the Whisper preprocessor wants (libmtmd resamples to it)
MEL_BINS = 32
WINDOW_FRAMES = 3000        # one 30 s window of mel frames (libmtmd's fixed chunk)
STACK_FACTOR = 60
AUDIO_TOKENS = WINDOW_FRAMES // 2 // STACK_FACTOR     # 25 per clip shorter than 30 s
_POSITIONS = WINDOW_FRAMES // 2                       # after the stride-2 conv
_WIDTH = 32
_HEADS = 4
_BLOCKS = 1
_FF = 64
_HIDDEN = 64                # the SwiGLU's output width (mm.a.mlp.1 gives twice that)


def audio_projector(dst: str, n_embd_out: int = 576, seed: int = 0) -> str:
    w = random_weights(seed, 0.05)

    def ones(n):
        return np.ones(n, np.float32)

    def zeros(n):
        return np.zeros(n, np.float32)

    writer = clip_writer(dst, "tiny test audio projector", "audio", "ultravox")
    writer.add_uint32("clip.audio.num_mel_bins", MEL_BINS)
    writer.add_uint32("clip.audio.embedding_length", _WIDTH)
    writer.add_uint32("clip.audio.feed_forward_length", _FF)
    writer.add_uint32("clip.audio.block_count", _BLOCKS)
    writer.add_uint32("clip.audio.attention.head_count", _HEADS)
    writer.add_uint32("clip.audio.projection_dim", n_embd_out)
    writer.add_float32("clip.audio.attention.layer_norm_epsilon", 1e-5)
    writer.add_uint32("clip.audio.projector.stack_factor", STACK_FACTOR)
    # numpy shapes are the reverse of ggml's ne. conv1d kernels: ne [k, in, out]; their
    # biases ne [1, out] (broadcast over the frames)
    writer.add_tensor("a.conv1d.1.weight", w(_WIDTH, MEL_BINS, 3, scale=0.2))
    writer.add_tensor("a.conv1d.1.bias", w(_WIDTH, 1))
    writer.add_tensor("a.conv1d.2.weight", w(_WIDTH, _WIDTH, 3, scale=0.2))
    writer.add_tensor("a.conv1d.2.bias", w(_WIDTH, 1))
    writer.add_tensor("a.position_embd.weight", w(_POSITIONS, _WIDTH, scale=0.1))
    for i in range(_BLOCKS):
        p = f"a.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"{p}.{name}.weight", w(_WIDTH, _WIDTH, scale=0.1))
            if name != "attn_k":            # Whisper's key projection has no bias
                writer.add_tensor(f"{p}.{name}.bias", w(_WIDTH))
        writer.add_tensor(f"{p}.ffn_up.weight", w(_FF, _WIDTH, scale=0.1))
        writer.add_tensor(f"{p}.ffn_up.bias", w(_FF))
        writer.add_tensor(f"{p}.ffn_down.weight", w(_WIDTH, _FF, scale=0.1))
        writer.add_tensor(f"{p}.ffn_down.bias", w(_WIDTH))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"{p}.{name}.weight", ones(_WIDTH))
            writer.add_tensor(f"{p}.{name}.bias", zeros(_WIDTH))
    writer.add_tensor("a.post_ln.weight", ones(_WIDTH))
    writer.add_tensor("a.post_ln.bias", zeros(_WIDTH))
    stacked = _WIDTH * STACK_FACTOR
    writer.add_tensor("mm.a.norm_pre.weight", ones(stacked))
    writer.add_tensor("mm.a.mlp.1.weight", w(2 * _HIDDEN, stacked, scale=0.05))
    writer.add_tensor("mm.a.norm_mid.weight", ones(_HIDDEN))
    # the mid-norm leaves unit-RMS features: keep the output near the scale of the text
    # model's token embeddings so the audio changes what the model says without drowning it
    writer.add_tensor("mm.a.mlp.2.weight", w(n_embd_out, _HIDDEN, scale=0.01))
    return write_out(writer, dst)


def wav(samples, rate: int = SAMPLE_RATE) -> bytes:
    pcm = (np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0) * 32767).round().astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)      # PCM, mono, 16-bit
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone(freq: float, seconds: float = 0.5, rate: int = SAMPLE_RATE, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
