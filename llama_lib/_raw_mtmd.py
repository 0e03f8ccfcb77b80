"""ctypes declarations of mtmd.h and mtmd-helper.h (libmtmd) at llama.cpp commit 0c1e570.

The second table of the bindings, beside ``_raw`` (libllama): structs, then one line per C
function with its prototype above it. Only what the server uses is declared; video input and
audio generation are left out. ``_raw.bind`` attaches it to the loaded libmtmd; a symbol the
library lacks becomes a stub that fails clearly when called.
"""
from __future__ import annotations

from ctypes import (
    CFUNCTYPE, POINTER, Structure, c_bool, c_char_p, c_float, c_int, c_int32, c_int64,
    c_size_t, c_uint32, c_ubyte, c_void_p,
)

from ._raw import ggml_backend_sched_eval_callback, ggml_log_callback, llama_pos, llama_seq_id, llama_token

__all__ = ["FUNCTIONS", "mtmd_context_params", "mtmd_input_text", "mtmd_helper_init_opt",
           "mtmd_helper_bitmap_wrapper", "MTMD_INPUT_CHUNK_TYPE_TEXT", "MTMD_INPUT_CHUNK_TYPE_IMAGE",
           "MTMD_INPUT_CHUNK_TYPE_AUDIO"]

mtmd_context_p = c_void_p
mtmd_bitmap_p = c_void_p
mtmd_input_chunk_p = c_void_p
mtmd_input_chunks_p = c_void_p
llama_context_p = c_void_p
llama_model_p = c_void_p

# enum mtmd_input_chunk_type
MTMD_INPUT_CHUNK_TYPE_TEXT = 0
MTMD_INPUT_CHUNK_TYPE_IMAGE = 1
MTMD_INPUT_CHUNK_TYPE_AUDIO = 2

# typedef bool (*mtmd_progress_callback)(float progress, void * user_data);
mtmd_progress_callback = CFUNCTYPE(c_bool, c_float, c_void_p)
# typedef int32_t (*mtmd_helper_post_decode_callback)(const struct mtmd_helper_embd_batch * batch, void * user_data);
mtmd_helper_post_decode_callback = CFUNCTYPE(c_int32, c_void_p, c_void_p)


class mtmd_context_params(Structure):
    _fields_ = [
        ("use_gpu", c_bool),
        ("device", c_void_p),                  # ggml_backend_dev_t
        ("print_timings", c_bool),
        ("n_threads", c_int),
        ("image_marker", c_char_p),            # deprecated: media_marker
        ("media_marker", c_char_p),
        ("flash_attn_type", c_int),            # enum llama_flash_attn_type
        ("warmup", c_bool),
        ("image_min_tokens", c_int),
        ("image_max_tokens", c_int),
        ("cb_eval", ggml_backend_sched_eval_callback),
        ("cb_eval_user_data", c_void_p),
        ("batch_max_tokens", c_int32),
        ("progress_callback", mtmd_progress_callback),
        ("progress_callback_user_data", c_void_p),
    ]


class mtmd_input_text(Structure):
    _fields_ = [
        ("text", c_char_p),
        ("text_len", c_size_t),
        ("add_special", c_bool),
        ("parse_special", c_bool),
    ]


class mtmd_helper_video_init_params(Structure):
    _fields_ = [
        ("fps_target", c_float),
        ("ffmpeg_bin_dir", c_char_p),
        ("timestamp_interval_ms", c_int64),
    ]


class mtmd_helper_init_opt(Structure):
    _fields_ = [("video_params", mtmd_helper_video_init_params)]


class mtmd_helper_bitmap_wrapper(Structure):
    _fields_ = [("bitmap", mtmd_bitmap_p), ("video_ctx", c_void_p)]


FUNCTIONS = [
    # const char * mtmd_default_marker(void);
    ("mtmd_default_marker", [], c_char_p),
    # struct mtmd_context_params mtmd_context_params_default(void);
    ("mtmd_context_params_default", [], mtmd_context_params),
    # mtmd_context * mtmd_init_from_file(const char * mmproj_fname, const struct llama_model * text_model,
    #                                    const struct mtmd_context_params ctx_params);
    ("mtmd_init_from_file", [c_char_p, llama_model_p, mtmd_context_params], mtmd_context_p),
    # void mtmd_free(mtmd_context * ctx);
    ("mtmd_free", [mtmd_context_p], None),
    # bool mtmd_decode_use_non_causal(const mtmd_context * ctx, const mtmd_input_chunk * chunk);
    ("mtmd_decode_use_non_causal", [mtmd_context_p, mtmd_input_chunk_p], c_bool),
    # bool mtmd_decode_use_mrope(const mtmd_context * ctx);
    ("mtmd_decode_use_mrope", [mtmd_context_p], c_bool),
    # bool mtmd_support_vision(const mtmd_context * ctx);
    ("mtmd_support_vision", [mtmd_context_p], c_bool),
    # bool mtmd_support_audio(const mtmd_context * ctx);
    ("mtmd_support_audio", [mtmd_context_p], c_bool),
    # int mtmd_get_audio_sample_rate(const mtmd_context * ctx);
    ("mtmd_get_audio_sample_rate", [mtmd_context_p], c_int),
    # const char * mtmd_get_marker(const mtmd_context * ctx);
    ("mtmd_get_marker", [mtmd_context_p], c_char_p),
    # mtmd_bitmap * mtmd_bitmap_init(uint32_t nx, uint32_t ny, const unsigned char * data);
    ("mtmd_bitmap_init", [c_uint32, c_uint32, POINTER(c_ubyte)], mtmd_bitmap_p),
    # uint32_t mtmd_bitmap_get_nx(const mtmd_bitmap * bitmap);
    ("mtmd_bitmap_get_nx", [mtmd_bitmap_p], c_uint32),
    # uint32_t mtmd_bitmap_get_ny(const mtmd_bitmap * bitmap);
    ("mtmd_bitmap_get_ny", [mtmd_bitmap_p], c_uint32),
    # bool mtmd_bitmap_is_audio(const mtmd_bitmap * bitmap);
    ("mtmd_bitmap_is_audio", [mtmd_bitmap_p], c_bool),
    # void mtmd_bitmap_free(mtmd_bitmap * bitmap);
    ("mtmd_bitmap_free", [mtmd_bitmap_p], None),
    # const char * mtmd_bitmap_get_id(const mtmd_bitmap * bitmap);
    ("mtmd_bitmap_get_id", [mtmd_bitmap_p], c_char_p),
    # void mtmd_bitmap_set_id(mtmd_bitmap * bitmap, const char * id);
    ("mtmd_bitmap_set_id", [mtmd_bitmap_p, c_char_p], None),
    # mtmd_input_chunks * mtmd_input_chunks_init(void);
    ("mtmd_input_chunks_init", [], mtmd_input_chunks_p),
    # size_t mtmd_input_chunks_size(const mtmd_input_chunks * chunks);
    ("mtmd_input_chunks_size", [mtmd_input_chunks_p], c_size_t),
    # const mtmd_input_chunk * mtmd_input_chunks_get(const mtmd_input_chunks * chunks, size_t idx);
    ("mtmd_input_chunks_get", [mtmd_input_chunks_p, c_size_t], mtmd_input_chunk_p),
    # void mtmd_input_chunks_free(mtmd_input_chunks * chunks);
    ("mtmd_input_chunks_free", [mtmd_input_chunks_p], None),
    # enum mtmd_input_chunk_type mtmd_input_chunk_get_type(const mtmd_input_chunk * chunk);
    ("mtmd_input_chunk_get_type", [mtmd_input_chunk_p], c_int),
    # const llama_token * mtmd_input_chunk_get_tokens_text(const mtmd_input_chunk * chunk, size_t * n_tokens_output);
    ("mtmd_input_chunk_get_tokens_text", [mtmd_input_chunk_p, POINTER(c_size_t)], POINTER(llama_token)),
    # size_t mtmd_input_chunk_get_n_tokens(const mtmd_input_chunk * chunk);
    ("mtmd_input_chunk_get_n_tokens", [mtmd_input_chunk_p], c_size_t),
    # const char * mtmd_input_chunk_get_id(const mtmd_input_chunk * chunk);
    ("mtmd_input_chunk_get_id", [mtmd_input_chunk_p], c_char_p),
    # llama_pos mtmd_input_chunk_get_n_pos(const mtmd_input_chunk * chunk);
    ("mtmd_input_chunk_get_n_pos", [mtmd_input_chunk_p], llama_pos),
    # mtmd_input_chunk * mtmd_input_chunk_copy(const mtmd_input_chunk * chunk);
    ("mtmd_input_chunk_copy", [mtmd_input_chunk_p], mtmd_input_chunk_p),
    # void mtmd_input_chunk_free(mtmd_input_chunk * chunk);
    ("mtmd_input_chunk_free", [mtmd_input_chunk_p], None),
    # int32_t mtmd_tokenize(const mtmd_context * ctx, mtmd_input_chunks * output, const mtmd_input_text * text,
    #                       const mtmd_bitmap * const * bitmaps, size_t n_bitmaps);
    ("mtmd_tokenize", [mtmd_context_p, mtmd_input_chunks_p, POINTER(mtmd_input_text),
                       POINTER(mtmd_bitmap_p), c_size_t], c_int32),
    # int32_t mtmd_encode_chunk(mtmd_context * ctx, const mtmd_input_chunk * chunk);
    ("mtmd_encode_chunk", [mtmd_context_p, mtmd_input_chunk_p], c_int32),
    # float * mtmd_get_output_embd(mtmd_context * ctx);
    ("mtmd_get_output_embd", [mtmd_context_p], POINTER(c_float)),
    # void mtmd_log_set(ggml_log_callback log_callback, void * user_data);
    ("mtmd_log_set", [ggml_log_callback, c_void_p], None),
    # --- mtmd-helper.h ---
    # void mtmd_helper_log_set(ggml_log_callback log_callback, void * user_data);
    ("mtmd_helper_log_set", [ggml_log_callback, c_void_p], None),
    # struct mtmd_helper_init_opt mtmd_helper_init_opt_default(void);
    ("mtmd_helper_init_opt_default", [], mtmd_helper_init_opt),
    # struct mtmd_helper_bitmap_wrapper mtmd_helper_bitmap_init_from_buf(const mtmd_context * ctx,
    #     const unsigned char * buf, size_t len, bool placeholder, struct mtmd_helper_init_opt opt);
    ("mtmd_helper_bitmap_init_from_buf", [mtmd_context_p, c_char_p, c_size_t, c_bool, mtmd_helper_init_opt],
     mtmd_helper_bitmap_wrapper),
    # int32_t mtmd_helper_decode_image_chunk(mtmd_context * ctx, struct llama_context * lctx,
    #     const mtmd_input_chunk * chunk, float * encoded_embd, llama_pos n_past, llama_seq_id seq_id,
    #     int32_t n_batch, llama_pos * new_n_past, mtmd_helper_post_decode_callback callback, void * user_data);
    ("mtmd_helper_decode_image_chunk", [mtmd_context_p, llama_context_p, mtmd_input_chunk_p, POINTER(c_float),
                                        llama_pos, llama_seq_id, c_int32, POINTER(llama_pos),
                                        mtmd_helper_post_decode_callback, c_void_p], c_int32),
]
