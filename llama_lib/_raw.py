"""ctypes declarations of llama.h at llama.cpp commit 0c1e570 (mtmd.h: ``_raw_mtmd``).

This is the only module of the project that imports ctypes for libllama. It holds
declarations and nothing else: structs, callback types, and one table of functions, a
line each, with the C prototype as a comment above it. ``bind(cdll)`` attaches the table to a
loaded library; a symbol the library lacks becomes a stub that raises ``MissingSymbolError``
naming it when called, so an older or trimmed build still imports and fails clearly.
"""
from __future__ import annotations

import ctypes
from ctypes import (
    CFUNCTYPE, POINTER, Structure, c_bool, c_char_p, c_double, c_float, c_int, c_int8,
    c_int32, c_int64, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p,
)

__all__ = ["bind", "MissingSymbolError", "FUNCTIONS"]

BINDINGS_COMMIT = "0c1e570"

llama_token = c_int32
llama_pos = c_int32
llama_seq_id = c_int32
llama_model_p = c_void_p
llama_context_p = c_void_p
llama_vocab_p = c_void_p
llama_memory_t = c_void_p
llama_sampler_p = c_void_p
llama_adapter_lora_p = c_void_p

LLAMA_DEFAULT_SEED = 0xFFFFFFFF
LLAMA_TOKEN_NULL = -1

# enum llama_pooling_type
LLAMA_POOLING_TYPE_UNSPECIFIED = -1
LLAMA_POOLING_TYPE_NONE = 0
LLAMA_POOLING_TYPE_MEAN = 1
LLAMA_POOLING_TYPE_CLS = 2
LLAMA_POOLING_TYPE_LAST = 3
LLAMA_POOLING_TYPE_RANK = 4

# enum llama_rope_scaling_type
LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED = -1
LLAMA_ROPE_SCALING_TYPE_NONE = 0
LLAMA_ROPE_SCALING_TYPE_LINEAR = 1
LLAMA_ROPE_SCALING_TYPE_YARN = 2

# enum llama_flash_attn_type
LLAMA_FLASH_ATTN_TYPE_AUTO = -1
LLAMA_FLASH_ATTN_TYPE_DISABLED = 0
LLAMA_FLASH_ATTN_TYPE_ENABLED = 1

# enum llama_split_mode
LLAMA_SPLIT_MODE_NONE = 0
LLAMA_SPLIT_MODE_LAYER = 1
LLAMA_SPLIT_MODE_ROW = 2

# enum llama_load_mode
LLAMA_LOAD_MODE_AUTO = -1
LLAMA_LOAD_MODE_NONE = 0
LLAMA_LOAD_MODE_MMAP = 1
LLAMA_LOAD_MODE_MLOCK = 2
LLAMA_LOAD_MODE_MMAP_MLOCK = 3

# enum ggml_numa_strategy
GGML_NUMA_STRATEGY_DISABLED = 0
GGML_NUMA_STRATEGY_DISTRIBUTE = 1
GGML_NUMA_STRATEGY_ISOLATE = 2
GGML_NUMA_STRATEGY_NUMACTL = 3
GGML_NUMA_STRATEGY_MIRROR = 4

# enum ggml_log_level
GGML_LOG_LEVEL_NONE = 0
GGML_LOG_LEVEL_DEBUG = 1
GGML_LOG_LEVEL_INFO = 2
GGML_LOG_LEVEL_WARN = 3
GGML_LOG_LEVEL_ERROR = 4
GGML_LOG_LEVEL_CONT = 5

# enum ggml_type (the KV-cache types llama-server accepts)
GGML_TYPES = {
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
    "iq4_nl": 20, "bf16": 30,
}

# enum llama_token_attr
LLAMA_TOKEN_ATTR_CONTROL = 1 << 3

# --- callback types -------------------------------------------------------------------
# typedef void (*ggml_log_callback)(enum ggml_log_level level, const char * text, void * user_data);
ggml_log_callback = CFUNCTYPE(None, c_int, c_char_p, c_void_p)
# typedef bool (*ggml_abort_callback)(void * data);
ggml_abort_callback = CFUNCTYPE(c_bool, c_void_p)
# typedef bool (*llama_progress_callback)(float progress, void * user_data);
llama_progress_callback = CFUNCTYPE(c_bool, c_float, c_void_p)
# typedef bool (*ggml_backend_sched_eval_callback)(struct ggml_tensor * t, bool ask, void * user_data);
ggml_backend_sched_eval_callback = CFUNCTYPE(c_bool, c_void_p, c_bool, c_void_p)


# --- structs --------------------------------------------------------------------------
class llama_token_data(Structure):
    _fields_ = [("id", llama_token), ("logit", c_float), ("p", c_float)]


class llama_token_data_array(Structure):
    _fields_ = [
        ("data", POINTER(llama_token_data)),
        ("size", c_size_t),
        ("selected", c_int64),
        ("sorted", c_bool),
    ]


class llama_batch(Structure):
    _fields_ = [
        ("n_tokens", c_int32),
        ("token", POINTER(llama_token)),
        ("embd", POINTER(c_float)),
        ("pos", POINTER(llama_pos)),
        ("n_seq_id", POINTER(c_int32)),
        ("seq_id", POINTER(POINTER(llama_seq_id))),
        ("logits", POINTER(c_int8)),
    ]


class llama_model_params(Structure):
    _fields_ = [
        ("devices", c_void_p),
        ("tensor_buft_overrides", c_void_p),
        ("n_gpu_layers", c_int32),
        ("split_mode", c_int),
        ("load_mode", c_int),
        ("lazy_mode", c_int),
        ("main_gpu", c_int32),
        ("tensor_split", POINTER(c_float)),
        ("progress_callback", llama_progress_callback),
        ("progress_callback_user_data", c_void_p),
        ("kv_overrides", c_void_p),
        ("vocab_only", c_bool),
        ("check_tensors", c_bool),
        ("use_extra_bufts", c_bool),
        ("no_host", c_bool),
        ("no_alloc", c_bool),
        ("load_mtp", c_bool),
    ]


class llama_context_params(Structure):
    _fields_ = [
        ("n_ctx", c_uint32),
        ("n_batch", c_uint32),
        ("n_ubatch", c_uint32),
        ("n_seq_max", c_uint32),
        ("n_rs_seq", c_uint32),
        ("n_outputs_max", c_uint32),
        ("n_outputs_max_per_seq", c_uint32),
        ("n_threads", c_int32),
        ("n_threads_batch", c_int32),
        ("ctx_type", c_int),
        ("rope_scaling_type", c_int),
        ("pooling_type", c_int),
        ("attention_type", c_int),
        ("flash_attn_type", c_int),
        ("rope_freq_base", c_float),
        ("rope_freq_scale", c_float),
        ("yarn_ext_factor", c_float),
        ("yarn_attn_factor", c_float),
        ("yarn_beta_fast", c_float),
        ("yarn_beta_slow", c_float),
        ("yarn_orig_ctx", c_uint32),
        ("defrag_thold", c_float),
        ("cb_eval", ggml_backend_sched_eval_callback),
        ("cb_eval_user_data", c_void_p),
        ("type_k", c_int),
        ("type_v", c_int),
        ("abort_callback", ggml_abort_callback),
        ("abort_callback_data", c_void_p),
        ("embeddings", c_bool),
        ("offload_kqv", c_bool),
        ("no_perf", c_bool),
        ("op_offload", c_bool),
        ("swa_full", c_bool),
        ("kv_unified", c_bool),
        ("samplers", c_void_p),
        ("n_samplers", c_size_t),
        ("ctx_other", c_void_p),
    ]


class llama_logit_bias(Structure):
    _fields_ = [("token", llama_token), ("bias", c_float)]


class llama_sampler_chain_params(Structure):
    _fields_ = [("no_perf", c_bool)]


class llama_chat_message(Structure):
    _fields_ = [("role", c_char_p), ("content", c_char_p)]


class llama_perf_context_data(Structure):
    _fields_ = [
        ("t_start_ms", c_double),
        ("t_load_ms", c_double),
        ("t_p_eval_ms", c_double),
        ("t_eval_ms", c_double),
        ("n_p_eval", c_int32),
        ("n_eval", c_int32),
        ("n_reused", c_int32),
    ]


_p_float = POINTER(c_float)
_p_token = POINTER(llama_token)
_p_size = POINTER(c_size_t)
_p_u8 = POINTER(c_uint8)

# --- functions: (name, argtypes, restype) ---------------------------------------------
FUNCTIONS = [
    # const char * llama_version(void);
    ("llama_version", [], c_char_p),
    # struct llama_model_params llama_model_default_params(void);
    ("llama_model_default_params", [], llama_model_params),
    # struct llama_context_params llama_context_default_params(void);
    ("llama_context_default_params", [], llama_context_params),
    # struct llama_sampler_chain_params llama_sampler_chain_default_params(void);
    ("llama_sampler_chain_default_params", [], llama_sampler_chain_params),
    # void llama_backend_init(void);
    ("llama_backend_init", [], None),
    # void llama_backend_free(void);
    ("llama_backend_free", [], None),
    # void llama_numa_init(enum ggml_numa_strategy numa);
    ("llama_numa_init", [c_int], None),
    # struct llama_model * llama_model_load_from_file(const char * path_model, struct llama_model_params params);
    ("llama_model_load_from_file", [c_char_p, llama_model_params], llama_model_p),
    # void llama_model_free(struct llama_model * model);
    ("llama_model_free", [llama_model_p], None),
    # struct llama_context * llama_init_from_model(struct llama_model * model, struct llama_context_params params);
    ("llama_init_from_model", [llama_model_p, llama_context_params], llama_context_p),
    # void llama_free(struct llama_context * ctx);
    ("llama_free", [llama_context_p], None),
    # int64_t llama_time_us(void);
    ("llama_time_us", [], c_int64),
    # size_t llama_max_devices(void);
    ("llama_max_devices", [], c_size_t),
    # size_t llama_max_parallel_sequences(void);
    ("llama_max_parallel_sequences", [], c_size_t),
    # bool llama_supports_mmap(void);
    ("llama_supports_mmap", [], c_bool),
    # bool llama_supports_mlock(void);
    ("llama_supports_mlock", [], c_bool),
    # bool llama_supports_gpu_offload(void);
    ("llama_supports_gpu_offload", [], c_bool),
    # bool llama_supports_rpc(void);
    ("llama_supports_rpc", [], c_bool),
    # uint32_t llama_n_ctx(const struct llama_context * ctx);
    ("llama_n_ctx", [llama_context_p], c_uint32),
    # uint32_t llama_n_ctx_seq(const struct llama_context * ctx);
    ("llama_n_ctx_seq", [llama_context_p], c_uint32),
    # uint32_t llama_n_batch(const struct llama_context * ctx);
    ("llama_n_batch", [llama_context_p], c_uint32),
    # uint32_t llama_n_ubatch(const struct llama_context * ctx);
    ("llama_n_ubatch", [llama_context_p], c_uint32),
    # uint32_t llama_n_seq_max(const struct llama_context * ctx);
    ("llama_n_seq_max", [llama_context_p], c_uint32),
    # llama_memory_t llama_get_memory(const struct llama_context * ctx);
    ("llama_get_memory", [llama_context_p], llama_memory_t),
    # enum llama_pooling_type llama_pooling_type(const struct llama_context * ctx);
    ("llama_pooling_type", [llama_context_p], c_int),
    # const struct llama_vocab * llama_model_get_vocab(const struct llama_model * model);
    ("llama_model_get_vocab", [llama_model_p], llama_vocab_p),
    # int32_t llama_model_n_ctx_train(const struct llama_model * model);
    ("llama_model_n_ctx_train", [llama_model_p], c_int32),
    # int32_t llama_model_n_embd(const struct llama_model * model);
    ("llama_model_n_embd", [llama_model_p], c_int32),
    # int32_t llama_model_n_embd_inp(const struct llama_model * model);
    ("llama_model_n_embd_inp", [llama_model_p], c_int32),
    # int32_t llama_model_n_layer(const struct llama_model * model);
    ("llama_model_n_layer", [llama_model_p], c_int32),
    # int32_t llama_model_n_head(const struct llama_model * model);
    ("llama_model_n_head", [llama_model_p], c_int32),
    # int32_t llama_vocab_n_tokens(const struct llama_vocab * vocab);
    ("llama_vocab_n_tokens", [llama_vocab_p], c_int32),
    # enum llama_vocab_type llama_vocab_type(const struct llama_vocab * vocab);
    ("llama_vocab_type", [llama_vocab_p], c_int),
    # int32_t llama_model_meta_val_str(const struct llama_model * model, const char * key, char * buf, size_t buf_size);
    ("llama_model_meta_val_str", [llama_model_p, c_char_p, c_char_p, c_size_t], c_int32),
    # int32_t llama_model_meta_count(const struct llama_model * model);
    ("llama_model_meta_count", [llama_model_p], c_int32),
    # int32_t llama_model_meta_key_by_index(const struct llama_model * model, int32_t i, char * buf, size_t buf_size);
    ("llama_model_meta_key_by_index", [llama_model_p, c_int32, c_char_p, c_size_t], c_int32),
    # int32_t llama_model_meta_val_str_by_index(const struct llama_model * model, int32_t i, char * buf, size_t buf_size);
    ("llama_model_meta_val_str_by_index", [llama_model_p, c_int32, c_char_p, c_size_t], c_int32),
    # int32_t llama_model_desc(const struct llama_model * model, char * buf, size_t buf_size);
    ("llama_model_desc", [llama_model_p, c_char_p, c_size_t], c_int32),
    # uint64_t llama_model_size(const struct llama_model * model);
    ("llama_model_size", [llama_model_p], c_uint64),
    # const char * llama_model_chat_template(const struct llama_model * model, const char * name);
    ("llama_model_chat_template", [llama_model_p, c_char_p], c_char_p),
    # uint64_t llama_model_n_params(const struct llama_model * model);
    ("llama_model_n_params", [llama_model_p], c_uint64),
    # uint32_t llama_model_n_cls_out(const struct llama_model * model);
    ("llama_model_n_cls_out", [llama_model_p], c_uint32),
    # const char * llama_model_cls_label(const struct llama_model * model, uint32_t i);
    ("llama_model_cls_label", [llama_model_p, c_uint32], c_char_p),
    # bool llama_model_has_encoder(const struct llama_model * model);
    ("llama_model_has_encoder", [llama_model_p], c_bool),
    # bool llama_model_has_decoder(const struct llama_model * model);
    ("llama_model_has_decoder", [llama_model_p], c_bool),
    # bool llama_model_is_recurrent(const struct llama_model * model);
    ("llama_model_is_recurrent", [llama_model_p], c_bool),
    # struct llama_adapter_lora * llama_adapter_lora_init(struct llama_model * model, const char * path_lora);
    ("llama_adapter_lora_init", [llama_model_p, c_char_p], llama_adapter_lora_p),
    # void llama_adapter_lora_free(struct llama_adapter_lora * adapter);
    ("llama_adapter_lora_free", [llama_adapter_lora_p], None),
    # int32_t llama_set_adapters_lora(struct llama_context * ctx, struct llama_adapter_lora ** adapters, size_t n_adapters, float * scales);
    ("llama_set_adapters_lora", [llama_context_p, POINTER(llama_adapter_lora_p), c_size_t, _p_float], c_int32),
    # void llama_memory_clear(llama_memory_t mem, bool data);
    ("llama_memory_clear", [llama_memory_t, c_bool], None),
    # bool llama_memory_seq_rm(llama_memory_t mem, llama_seq_id seq_id, llama_pos p0, llama_pos p1);
    ("llama_memory_seq_rm", [llama_memory_t, llama_seq_id, llama_pos, llama_pos], c_bool),
    # void llama_memory_seq_cp(llama_memory_t mem, llama_seq_id src, llama_seq_id dst, llama_pos p0, llama_pos p1);
    ("llama_memory_seq_cp", [llama_memory_t, llama_seq_id, llama_seq_id, llama_pos, llama_pos], None),
    # void llama_memory_seq_keep(llama_memory_t mem, llama_seq_id seq_id);
    ("llama_memory_seq_keep", [llama_memory_t, llama_seq_id], None),
    # void llama_memory_seq_add(llama_memory_t mem, llama_seq_id seq_id, llama_pos p0, llama_pos p1, llama_pos delta);
    ("llama_memory_seq_add", [llama_memory_t, llama_seq_id, llama_pos, llama_pos, llama_pos], None),
    # void llama_memory_seq_div(llama_memory_t mem, llama_seq_id seq_id, llama_pos p0, llama_pos p1, int d);
    ("llama_memory_seq_div", [llama_memory_t, llama_seq_id, llama_pos, llama_pos, c_int], None),
    # llama_pos llama_memory_seq_pos_min(llama_memory_t mem, llama_seq_id seq_id);
    ("llama_memory_seq_pos_min", [llama_memory_t, llama_seq_id], llama_pos),
    # llama_pos llama_memory_seq_pos_max(llama_memory_t mem, llama_seq_id seq_id);
    ("llama_memory_seq_pos_max", [llama_memory_t, llama_seq_id], llama_pos),
    # bool llama_memory_can_shift(llama_memory_t mem);
    ("llama_memory_can_shift", [llama_memory_t], c_bool),
    # size_t llama_state_seq_get_size(struct llama_context * ctx, llama_seq_id seq_id);
    ("llama_state_seq_get_size", [llama_context_p, llama_seq_id], c_size_t),
    # size_t llama_state_seq_get_data(struct llama_context * ctx, uint8_t * dst, size_t size, llama_seq_id seq_id);
    ("llama_state_seq_get_data", [llama_context_p, _p_u8, c_size_t, llama_seq_id], c_size_t),
    # size_t llama_state_seq_set_data(struct llama_context * ctx, const uint8_t * src, size_t size, llama_seq_id dest_seq_id);
    ("llama_state_seq_set_data", [llama_context_p, _p_u8, c_size_t, llama_seq_id], c_size_t),
    # size_t llama_state_seq_save_file(struct llama_context * ctx, const char * filepath, llama_seq_id seq_id, const llama_token * tokens, size_t n_token_count);
    ("llama_state_seq_save_file", [llama_context_p, c_char_p, llama_seq_id, _p_token, c_size_t], c_size_t),
    # size_t llama_state_seq_load_file(struct llama_context * ctx, const char * filepath, llama_seq_id dest_seq_id, llama_token * tokens_out, size_t n_token_capacity, size_t * n_token_count_out);
    ("llama_state_seq_load_file", [llama_context_p, c_char_p, llama_seq_id, _p_token, c_size_t, _p_size], c_size_t),
    # struct llama_batch llama_batch_init(int32_t n_tokens, int32_t embd, int32_t n_seq_max);
    ("llama_batch_init", [c_int32, c_int32, c_int32], llama_batch),
    # void llama_batch_free(struct llama_batch batch);
    ("llama_batch_free", [llama_batch], None),
    # int32_t llama_encode(struct llama_context * ctx, struct llama_batch batch);
    ("llama_encode", [llama_context_p, llama_batch], c_int32),
    # int32_t llama_decode(struct llama_context * ctx, struct llama_batch batch);
    ("llama_decode", [llama_context_p, llama_batch], c_int32),
    # void llama_set_n_threads(struct llama_context * ctx, int32_t n_threads, int32_t n_threads_batch);
    ("llama_set_n_threads", [llama_context_p, c_int32, c_int32], None),
    # int32_t llama_n_threads(struct llama_context * ctx);
    ("llama_n_threads", [llama_context_p], c_int32),
    # void llama_set_embeddings(struct llama_context * ctx, bool embeddings);
    ("llama_set_embeddings", [llama_context_p, c_bool], None),
    # void llama_set_causal_attn(struct llama_context * ctx, bool causal_attn);
    ("llama_set_causal_attn", [llama_context_p, c_bool], None),
    # void llama_set_abort_callback(struct llama_context * ctx, ggml_abort_callback cb, void * data);
    ("llama_set_abort_callback", [llama_context_p, ggml_abort_callback, c_void_p], None),
    # void llama_synchronize(struct llama_context * ctx);
    ("llama_synchronize", [llama_context_p], None),
    # float * llama_get_logits(struct llama_context * ctx);
    ("llama_get_logits", [llama_context_p], _p_float),
    # float * llama_get_logits_ith(struct llama_context * ctx, int32_t i);
    ("llama_get_logits_ith", [llama_context_p, c_int32], _p_float),
    # float * llama_get_embeddings(struct llama_context * ctx);
    ("llama_get_embeddings", [llama_context_p], _p_float),
    # float * llama_get_embeddings_ith(struct llama_context * ctx, int32_t i);
    ("llama_get_embeddings_ith", [llama_context_p, c_int32], _p_float),
    # float * llama_get_embeddings_seq(struct llama_context * ctx, llama_seq_id seq_id);
    ("llama_get_embeddings_seq", [llama_context_p, llama_seq_id], _p_float),
    # const char * llama_vocab_get_text(const struct llama_vocab * vocab, llama_token token);
    ("llama_vocab_get_text", [llama_vocab_p, llama_token], c_char_p),
    # float llama_vocab_get_score(const struct llama_vocab * vocab, llama_token token);
    ("llama_vocab_get_score", [llama_vocab_p, llama_token], c_float),
    # enum llama_token_attr llama_vocab_get_attr(const struct llama_vocab * vocab, llama_token token);
    ("llama_vocab_get_attr", [llama_vocab_p, llama_token], c_int),
    # bool llama_vocab_is_eog(const struct llama_vocab * vocab, llama_token token);
    ("llama_vocab_is_eog", [llama_vocab_p, llama_token], c_bool),
    # bool llama_vocab_is_control(const struct llama_vocab * vocab, llama_token token);
    ("llama_vocab_is_control", [llama_vocab_p, llama_token], c_bool),
    # llama_token llama_vocab_bos(const struct llama_vocab * vocab);
    ("llama_vocab_bos", [llama_vocab_p], llama_token),
    # llama_token llama_vocab_eos(const struct llama_vocab * vocab);
    ("llama_vocab_eos", [llama_vocab_p], llama_token),
    # llama_token llama_vocab_eot(const struct llama_vocab * vocab);
    ("llama_vocab_eot", [llama_vocab_p], llama_token),
    # llama_token llama_vocab_sep(const struct llama_vocab * vocab);
    ("llama_vocab_sep", [llama_vocab_p], llama_token),
    # llama_token llama_vocab_nl(const struct llama_vocab * vocab);
    ("llama_vocab_nl", [llama_vocab_p], llama_token),
    # llama_token llama_vocab_pad(const struct llama_vocab * vocab);
    ("llama_vocab_pad", [llama_vocab_p], llama_token),
    # bool llama_vocab_get_add_bos(const struct llama_vocab * vocab);
    ("llama_vocab_get_add_bos", [llama_vocab_p], c_bool),
    # bool llama_vocab_get_add_eos(const struct llama_vocab * vocab);
    ("llama_vocab_get_add_eos", [llama_vocab_p], c_bool),
    # bool llama_vocab_get_add_sep(const struct llama_vocab * vocab);
    ("llama_vocab_get_add_sep", [llama_vocab_p], c_bool),
    # llama_token llama_vocab_fim_pre(const struct llama_vocab * vocab);
    ("llama_vocab_fim_pre", [llama_vocab_p], llama_token),
    # llama_token llama_vocab_fim_suf(const struct llama_vocab * vocab);
    ("llama_vocab_fim_suf", [llama_vocab_p], llama_token),
    # llama_token llama_vocab_fim_mid(const struct llama_vocab * vocab);
    ("llama_vocab_fim_mid", [llama_vocab_p], llama_token),
    # llama_token llama_vocab_fim_pad(const struct llama_vocab * vocab);
    ("llama_vocab_fim_pad", [llama_vocab_p], llama_token),
    # llama_token llama_vocab_fim_rep(const struct llama_vocab * vocab);
    ("llama_vocab_fim_rep", [llama_vocab_p], llama_token),
    # llama_token llama_vocab_fim_sep(const struct llama_vocab * vocab);
    ("llama_vocab_fim_sep", [llama_vocab_p], llama_token),
    # int32_t llama_tokenize(const struct llama_vocab * vocab, const char * text, int32_t text_len, llama_token * tokens, int32_t n_tokens_max, bool add_special, bool parse_special);
    ("llama_tokenize", [llama_vocab_p, c_char_p, c_int32, _p_token, c_int32, c_bool, c_bool], c_int32),
    # int32_t llama_token_to_piece(const struct llama_vocab * vocab, llama_token token, char * buf, int32_t length, int32_t lstrip, bool special);
    ("llama_token_to_piece", [llama_vocab_p, llama_token, c_char_p, c_int32, c_int32, c_bool], c_int32),
    # int32_t llama_detokenize(const struct llama_vocab * vocab, const llama_token * tokens, int32_t n_tokens, char * text, int32_t text_len_max, bool remove_special, bool unparse_special);
    ("llama_detokenize", [llama_vocab_p, _p_token, c_int32, c_char_p, c_int32, c_bool, c_bool], c_int32),
    # int32_t llama_chat_apply_template(const char * tmpl, const struct llama_chat_message * chat, size_t n_msg, bool add_ass, char * buf, int32_t length);
    ("llama_chat_apply_template", [c_char_p, POINTER(llama_chat_message), c_size_t, c_bool, c_char_p, c_int32], c_int32),
    # int32_t llama_chat_builtin_templates(const char ** output, size_t len);
    ("llama_chat_builtin_templates", [POINTER(c_char_p), c_size_t], c_int32),
    # const char * llama_sampler_name(const struct llama_sampler * smpl);
    ("llama_sampler_name", [llama_sampler_p], c_char_p),
    # void llama_sampler_accept(struct llama_sampler * smpl, llama_token token);
    ("llama_sampler_accept", [llama_sampler_p, llama_token], None),
    # void llama_sampler_apply(struct llama_sampler * smpl, llama_token_data_array * cur_p);
    ("llama_sampler_apply", [llama_sampler_p, POINTER(llama_token_data_array)], None),
    # void llama_sampler_reset(struct llama_sampler * smpl);
    ("llama_sampler_reset", [llama_sampler_p], None),
    # struct llama_sampler * llama_sampler_clone(const struct llama_sampler * smpl);
    ("llama_sampler_clone", [llama_sampler_p], llama_sampler_p),
    # void llama_sampler_free(struct llama_sampler * smpl);
    ("llama_sampler_free", [llama_sampler_p], None),
    # struct llama_sampler * llama_sampler_chain_init(struct llama_sampler_chain_params params);
    ("llama_sampler_chain_init", [llama_sampler_chain_params], llama_sampler_p),
    # void llama_sampler_chain_add(struct llama_sampler * chain, struct llama_sampler * smpl);
    ("llama_sampler_chain_add", [llama_sampler_p, llama_sampler_p], None),
    # int32_t llama_sampler_chain_n(const struct llama_sampler * chain);
    ("llama_sampler_chain_n", [llama_sampler_p], c_int32),
    # struct llama_sampler * llama_sampler_init_greedy(void);
    ("llama_sampler_init_greedy", [], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_dist(uint32_t seed);
    ("llama_sampler_init_dist", [c_uint32], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_top_k(int32_t k);
    ("llama_sampler_init_top_k", [c_int32], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_top_p(float p, size_t min_keep);
    ("llama_sampler_init_top_p", [c_float, c_size_t], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_min_p(float p, size_t min_keep);
    ("llama_sampler_init_min_p", [c_float, c_size_t], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_typical(float p, size_t min_keep);
    ("llama_sampler_init_typical", [c_float, c_size_t], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_temp(float t);
    ("llama_sampler_init_temp", [c_float], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_temp_ext(float t, float delta, float exponent);
    ("llama_sampler_init_temp_ext", [c_float, c_float, c_float], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_xtc(float p, float t, size_t min_keep, uint32_t seed);
    ("llama_sampler_init_xtc", [c_float, c_float, c_size_t, c_uint32], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_top_n_sigma(float n);
    ("llama_sampler_init_top_n_sigma", [c_float], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_mirostat(int32_t n_vocab, uint32_t seed, float tau, float eta, int32_t m);
    ("llama_sampler_init_mirostat", [c_int32, c_uint32, c_float, c_float, c_int32], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_mirostat_v2(uint32_t seed, float tau, float eta);
    ("llama_sampler_init_mirostat_v2", [c_uint32, c_float, c_float], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_grammar(const struct llama_vocab * vocab, const char * grammar_str, const char * grammar_root);
    ("llama_sampler_init_grammar", [llama_vocab_p, c_char_p, c_char_p], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_grammar_lazy_patterns(const struct llama_vocab * vocab, const char * grammar_str, const char * grammar_root, const char ** trigger_patterns, size_t num_trigger_patterns, const llama_token * trigger_tokens, size_t num_trigger_tokens);
    ("llama_sampler_init_grammar_lazy_patterns", [llama_vocab_p, c_char_p, c_char_p, POINTER(c_char_p), c_size_t, _p_token, c_size_t], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_penalties(int32_t n_vocab, int32_t penalty_last_n, float penalty_repeat, float penalty_freq, float penalty_present);
    ("llama_sampler_init_penalties", [c_int32, c_int32, c_float, c_float, c_float], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_dry(const struct llama_vocab * vocab, float dry_multiplier, float dry_base, int32_t dry_allowed_length, int32_t dry_penalty_last_n, const char ** seq_breakers, size_t num_breakers);
    ("llama_sampler_init_dry", [llama_vocab_p, c_float, c_float, c_int32, c_int32, POINTER(c_char_p), c_size_t], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_logit_bias(int32_t n_vocab, int32_t n_logit_bias, const llama_logit_bias * logit_bias);
    ("llama_sampler_init_logit_bias", [c_int32, c_int32, POINTER(llama_logit_bias)], llama_sampler_p),
    # struct llama_sampler * llama_sampler_init_infill(const struct llama_vocab * vocab);
    ("llama_sampler_init_infill", [llama_vocab_p], llama_sampler_p),
    # uint32_t llama_sampler_get_seed(const struct llama_sampler * smpl);
    ("llama_sampler_get_seed", [llama_sampler_p], c_uint32),
    # llama_token llama_sampler_sample(struct llama_sampler * smpl, struct llama_context * ctx, int32_t idx);
    ("llama_sampler_sample", [llama_sampler_p, llama_context_p, c_int32], llama_token),
    # const char * llama_print_system_info(void);
    ("llama_print_system_info", [], c_char_p),
    # void llama_log_set(ggml_log_callback log_callback, void * user_data);
    ("llama_log_set", [ggml_log_callback, c_void_p], None),
    # struct llama_perf_context_data llama_perf_context(const struct llama_context * ctx);
    ("llama_perf_context", [llama_context_p], llama_perf_context_data),
    # void llama_perf_context_reset(struct llama_context * ctx);
    ("llama_perf_context_reset", [llama_context_p], None),
]

# ggml.h / ggml-backend.h: the backend registry and devices (libggml, libggml-base; bound
# through libllama's handle, whose dependencies dlsym searches).
ggml_backend_reg_t = c_void_p
ggml_backend_dev_t = c_void_p
# typedef void (*ggml_abort_callback_t)(const char * error_message);
ggml_abort_callback_t = CFUNCTYPE(None, c_char_p)
# enum ggml_backend_dev_type
GGML_BACKEND_DEVICE_TYPE_CPU = 0
GGML_BACKEND_DEVICE_TYPE_GPU = 1
GGML_BACKEND_DEVICE_TYPE_IGPU = 2
GGML_BACKEND_DEVICE_TYPE_ACCEL = 3

GGML_FUNCTIONS = [
    # ggml_backend_reg_t ggml_backend_reg_by_name(const char * name);
    ("ggml_backend_reg_by_name", [c_char_p], ggml_backend_reg_t),
    # void * ggml_backend_reg_get_proc_address(ggml_backend_reg_t reg, const char * name);
    ("ggml_backend_reg_get_proc_address", [ggml_backend_reg_t, c_char_p], c_void_p),
    # void ggml_backend_register(ggml_backend_reg_t reg);
    ("ggml_backend_register", [ggml_backend_reg_t], None),
    # size_t ggml_backend_dev_count(void);
    ("ggml_backend_dev_count", [], c_size_t),
    # ggml_backend_dev_t ggml_backend_dev_get(size_t index);
    ("ggml_backend_dev_get", [c_size_t], ggml_backend_dev_t),
    # ggml_backend_dev_t ggml_backend_dev_by_name(const char * name);
    ("ggml_backend_dev_by_name", [c_char_p], ggml_backend_dev_t),
    # const char * ggml_backend_dev_name(ggml_backend_dev_t device);
    ("ggml_backend_dev_name", [ggml_backend_dev_t], c_char_p),
    # const char * ggml_backend_dev_description(ggml_backend_dev_t device);
    ("ggml_backend_dev_description", [ggml_backend_dev_t], c_char_p),
    # enum ggml_backend_dev_type ggml_backend_dev_type(ggml_backend_dev_t device);
    ("ggml_backend_dev_type", [ggml_backend_dev_t], c_int),
    # void ggml_backend_dev_memory(ggml_backend_dev_t device, size_t * free, size_t * total);
    ("ggml_backend_dev_memory", [ggml_backend_dev_t, POINTER(c_size_t), POINTER(c_size_t)], None),
    # ggml_abort_callback_t ggml_set_abort_callback(ggml_abort_callback_t callback);
    ("ggml_set_abort_callback", [ggml_abort_callback_t], c_void_p),
]

# ggml-rpc.h, reached through the RPC registry's proc addresses:
# ggml_backend_reg_t ggml_backend_rpc_add_server(const char * endpoint);
ggml_backend_rpc_add_server_t = CFUNCTYPE(ggml_backend_reg_t, c_char_p)
# void ggml_backend_rpc_start_server(const char * endpoint, const char * cache_dir,
#                                    size_t n_threads, size_t n_devices, ggml_backend_dev_t * devices);
ggml_backend_rpc_start_server_t = CFUNCTYPE(None, c_char_p, c_char_p, c_size_t, c_size_t,
                                            POINTER(ggml_backend_dev_t))

# ggml-cpu.h: what the loaded CPU backend was compiled with; lives in libggml-cpu.
GGML_CPU_FUNCTIONS = [
    # int ggml_cpu_has_amx_int8(void);
    ("ggml_cpu_has_amx_int8", [], c_int),
    # int ggml_cpu_has_avx512(void);
    ("ggml_cpu_has_avx512", [], c_int),
    # int ggml_cpu_has_avx2(void);
    ("ggml_cpu_has_avx2", [], c_int),
]


class MissingSymbolError(RuntimeError):
    """A function of the bindings table is absent from the loaded shared library."""

    def __init__(self, name: str, path: str):
        super().__init__(f"{name} is not exported by {path}; the library is older or newer "
                         f"than the llama.cpp commit these bindings target ({BINDINGS_COMMIT})")
        self.symbol = name


def _stub(name: str, path: str):
    def missing(*_args, **_kwargs):
        raise MissingSymbolError(name, path)
    missing.__name__ = name
    return missing


class Bound:
    """The table attached to one loaded library: attribute access gives the C function."""

    def __init__(self, cdll: ctypes.CDLL, table, path: str):
        self.path = path
        self.missing: list[str] = []
        for name, argtypes, restype in table:
            try:
                fn = getattr(cdll, name)
            except AttributeError:
                self.missing.append(name)
                setattr(self, name, _stub(name, path))
                continue
            fn.argtypes = argtypes
            fn.restype = restype
            setattr(self, name, fn)


def bind(cdll: ctypes.CDLL, path: str, table=None) -> Bound:
    return Bound(cdll, FUNCTIONS if table is None else table, path)


def malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: hand freed heap memory back to the OS (after a model is
    unloaded, glibc keeps most of it otherwise). False where the C library has none."""
    try:
        libc = ctypes.CDLL(None)
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return bool(fn(0))
