"""ServerState: what the routes share: settings, the engine (once loaded), the model's facts.

The production server listens while the model loads (``/health`` answers 503 meanwhile), so
the engine arrives later; routes ask ``state.ready_engine()`` which raises the right 503/500.
"""
from __future__ import annotations

import logging
import json
import os
import threading
import time

from .errors import ApiError

__all__ = ["ServerState", "build_engine", "sampling_defaults", "check_startup_settings"]

logger = logging.getLogger(__name__)

LOADING, READY, ERROR, STOPPING = "loading", "ok", "error", "stopping"


def sampling_defaults(settings):
    from sampling import SamplingParams
    from sampling.params import parse_sampling_params
    body = {
        "temperature": settings.temp, "top_k": settings.top_k, "top_p": settings.top_p,
        "min_p": settings.min_p, "tfs_z": settings.tfs, "typical_p": settings.typical,
        "repeat_last_n": settings.repeat_last_n, "repeat_penalty": settings.repeat_penalty,
        "presence_penalty": settings.presence_penalty, "frequency_penalty": settings.frequency_penalty,
        "mirostat": settings.mirostat, "mirostat_tau": settings.mirostat_tau,
        "mirostat_eta": settings.mirostat_eta, "seed": settings.seed,
        "dynatemp_range": settings.dynatemp_range, "dynatemp_exponent": settings.dynatemp_exponent,
        "dry_multiplier": settings.dry_multiplier, "dry_base": settings.dry_base,
        "dry_allowed_length": settings.dry_allowed_length,
        "dry_penalty_last_n": settings.dry_penalty_last_n,
        "xtc_probability": settings.xtc_probability, "xtc_threshold": settings.xtc_threshold,
        "top_n_sigma": settings.top_n_sigma, "ignore_eos": settings.ignore_eos,
    }
    if settings.samplers:
        body["samplers"] = settings.samplers
    return parse_sampling_params(body, SamplingParams())


class ServerState:
    def __init__(self, settings, engine=None):
        self.settings = settings
        self.engine = engine
        self.status = READY if engine is not None else LOADING
        self.error: str | None = None
        self.defaults = sampling_defaults(settings)
        self.model_alias = settings.alias
        self.lock = threading.Lock()
        self.created = int(time.time())
        check_startup_settings(settings)
        self.chat_template = _chat_template_for(settings, engine) if engine is not None else None
        # The bridge must be made here, on the thread whose hub serves HTTP: the model
        # loads on another OS thread, which would otherwise get a hub of its own.
        from llama_lib.engine.bridge import make_bridge
        self.bridge = engine.bridge if engine is not None else make_bridge()
        from .metrics import EngineObserver
        from .system_prompt import SystemPrompt, SystemPromptError, load_file
        self.observer = EngineObserver()
        try:
            spec = load_file(settings.system_prompt_file) if settings.system_prompt_file else None
        except SystemPromptError as exc:
            raise SystemExit(f"error: --system-prompt-file: {exc}") from None
        self.system = SystemPrompt(spec)
        self.sleep = None          # sleep.SleepMode, set by the production server
        self._facts = None         # (weakref to the engine, props.ModelFacts) of the last one asked
        if engine is not None:
            self._wire(engine)

    def ready_engine(self):
        """The engine, for a route that needs it; with --sleep-idle-seconds this wakes a
        sleeping model (and waits for it) and holds the engine until the answer is written."""
        self.check_ready()
        if self.sleep is not None:
            self.sleep.wake()
            self.check_ready()     # the reload may have failed
        if self.engine is None:
            raise ApiError(f"Model failed to load: {self.error}", "server_error", 500)
        return self.engine

    def check_ready(self) -> None:
        """Raise the 503/500 of a server that cannot answer (loading, stopping, failed)
        without waking a sleeping model: GET /props, /models and /metrics use this."""
        if self.status == LOADING:
            raise ApiError("Loading model", "unavailable_error", 503)
        if self.status == STOPPING:
            raise ApiError("the server is shutting down", "unavailable_error", 503)
        engine = self.engine
        if self.status == ERROR or (engine is None and not self.is_sleeping):
            raise ApiError(f"Model failed to load: {self.error}", "server_error", 500)
        if engine is not None and engine.failure:
            raise ApiError(engine.failure, "unavailable_error", 503, headers={"Retry-After": "1"})

    @property
    def is_sleeping(self) -> bool:
        """The model is unloaded by --sleep-idle-seconds (webapp/sleep.py)."""
        return self.sleep is not None and self.sleep.asleep

    def model_facts(self):
        """What /props and /models say about the model (props.ModelFacts): read from the
        engine while it is loaded, kept while it sleeps."""
        engine = self.engine
        if engine is not None and (self._facts is None or self._facts[0]() is not engine):
            import weakref
            from .props import ModelFacts
            # a weak reference: a sleeping model's engine must not be kept alive here
            self._facts = (weakref.ref(engine), ModelFacts.of(engine))
        if self._facts is None:
            raise ApiError("Loading model", "unavailable_error", 503)
        return self._facts[1]

    def metrics_snapshot(self) -> dict:
        """/metrics' numbers (webapp/metrics.py), taken on the engine thread; a sleeping
        model's as they stood when it fell asleep."""
        if self.sleep is not None:
            return self.sleep.metrics_snapshot()
        from .completion import call_engine
        engine = self.ready_engine()
        return call_engine(engine, lambda e: self.observer.snapshot(e))

    @property
    def model_id(self) -> str:
        if self.settings.alias:
            return self.settings.alias
        return os.path.basename(self.settings.model or "model")

    def load(self) -> None:
        """Build the engine (called on a real thread by the production server)."""
        try:
            engine = build_engine(self.settings, self.bridge)
            self.chat_template = _chat_template_for(self.settings, engine)
            self._wire(engine)
        except Exception as exc:   # reported through /health; the process keeps serving it
            logger.error("model load failed: %s", exc)
            self.error = str(exc)
            self.status = ERROR
            return
        self.engine = engine
        self.status = READY

    def attach(self, engine) -> None:
        self.chat_template = _chat_template_for(self.settings, engine)
        self._wire(engine)
        self.engine = engine
        self.status = READY

    def install(self, engine) -> None:
        """Serve with ``engine``, the model reloaded after sleep (same chat template)."""
        self._wire(engine)
        self.engine = engine
        self.status = READY

    def _wire(self, engine) -> None:
        """Metrics hooks and the system prompt, before any request can reach the engine."""
        self.observer.bind(engine)
        self.system.activate(engine)

    # the seed's /props fields of the system prompt (webapp/system_prompt.py)
    @property
    def system_prompt(self) -> str:
        return self.system.prompt

    @property
    def user_name(self) -> str:
        return self.system.user_name

    @property
    def assistant_name(self) -> str:
        return self.system.assistant_name

    @property
    def chat_format(self):
        """The chat format (tool calls, reasoning) of the template in use, detected once."""
        template = self.chat_template
        cached = getattr(self, "_chat_format", None)
        if cached is None or cached[0] is not template:
            from .chat_formats import ChatFormat, detect_format
            fmt = ChatFormat() if self.settings.skip_chat_parsing or template is None \
                else detect_format(template)
            cached = self._chat_format = (template, fmt)
        return cached[1]

    @property
    def template_kwargs(self) -> dict:
        """--chat-template-kwargs, parsed (checked at startup)."""
        raw = self.settings.chat_template_kwargs
        return json.loads(raw) if raw else {}

    def chat_template_source(self) -> str:
        """The Jinja source of the chat template in use ("" until the model is loaded)."""
        return self.chat_template.source if self.chat_template is not None else ""


def check_startup_settings(settings) -> None:
    """Flags that can be judged before the model loads; a bad one stops startup with a
    clear message instead of surfacing on the first request."""
    from .chat_template import ChatTemplate, ChatTemplateError, resolve_template
    if settings.chat_template or settings.chat_template_file:
        try:
            ChatTemplate(resolve_template(settings.chat_template, settings.chat_template_file, None))
        except ChatTemplateError as exc:
            which = "--chat-template-file" if settings.chat_template_file else "--chat-template"
            raise SystemExit(f"error: {which}: {exc}") from None
    if settings.chat_template_kwargs:
        try:
            kwargs = json.loads(settings.chat_template_kwargs)
        except ValueError as exc:
            raise SystemExit(f"error: --chat-template-kwargs is not valid JSON: {exc}") from None
        if not isinstance(kwargs, dict):
            raise SystemExit("error: --chat-template-kwargs must be a JSON object")
        if "enable_thinking" in kwargs and not isinstance(kwargs["enable_thinking"], bool):
            raise SystemExit("error: --chat-template-kwargs: enable_thinking must be true or false")
    if settings.reasoning_budget is not None and settings.reasoning_budget < -1:
        raise SystemExit("error: --reasoning-budget must be -1 (unlimited) or more")
    if settings.pooling == "rank" and not settings.embeddings:
        raise SystemExit("error: --pooling rank serves reranking only: start the server with "
                         "--reranking (or --embeddings --pooling rank)")
    if settings.sleep_idle_seconds == 0 or settings.sleep_idle_seconds < -1:
        raise SystemExit("error: --sleep-idle-seconds must be -1 (never) or a number of seconds >= 1")
    if settings.grp_attn_n != 1:
        from llama_lib.engine.self_extend import GroupAttention
        try:
            GroupAttention(settings.grp_attn_n, settings.grp_attn_w)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
    for path, _scale in lora_specs(settings):
        if not os.path.isfile(path):
            raise SystemExit(f"error: LoRA adapter not found: {path}")
    try:
        spec_config(settings)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if settings.model_draft and not os.path.isfile(settings.model_draft):
        raise SystemExit(f"error: draft model not found: {settings.model_draft}")


def spec_config(settings):
    """The speculative decoding flags as a ``SpecConfig`` (its ``types`` empty: off). As
    llama-server: a draft model without --spec-type means draft-simple, --spec-default adds
    ngram-mod. Raises ValueError naming the bad flag."""
    from llama_lib.engine.speculative import SPEC_TYPES, SpecConfig
    types = [t.strip() for t in (settings.spec_type or "").split(",") if t.strip()]
    for t in types:
        if t not in SPEC_TYPES:
            raise ValueError(f"--spec-type: unknown type {t!r} (one of {', '.join(SPEC_TYPES)})")
    if settings.spec_default and "ngram-mod" not in types:
        types.append("ngram-mod")
    if settings.model_draft and not types:
        types = ["draft-simple"]
    types = [t for t in types if t != "none"]
    if "draft-simple" in types and not settings.model_draft:
        raise ValueError("--spec-type draft-simple needs a draft model (-md FNAME)")
    cfg = SpecConfig(types=tuple(types), draft_n_max=settings.spec_draft_n_max,
                     draft_n_min=settings.spec_draft_n_min, draft_p_min=settings.spec_draft_p_min,
                     ngram_simple_size_n=settings.spec_ngram_simple_size_n,
                     ngram_simple_size_m=settings.spec_ngram_simple_size_m,
                     ngram_mod_n_match=settings.spec_ngram_mod_n_match,
                     ngram_mod_n_min=settings.spec_ngram_mod_n_min,
                     ngram_mod_n_max=settings.spec_ngram_mod_n_max)
    for flag, value, low in (("--spec-draft-n-max", cfg.draft_n_max, 0), ("--spec-draft-n-min", cfg.draft_n_min, 0),
                             ("--spec-ngram-simple-size-n", cfg.ngram_simple_size_n, 1),
                             ("--spec-ngram-simple-size-m", cfg.ngram_simple_size_m, 1),
                             ("--spec-ngram-mod-n-match", cfg.ngram_mod_n_match, 1),
                             ("--spec-ngram-mod-n-min", cfg.ngram_mod_n_min, 0),
                             ("--spec-ngram-mod-n-max", cfg.ngram_mod_n_max, 0)):
        if not low <= value <= 1024:
            raise ValueError(f"{flag} must be between {low} and 1024")
    return cfg
    mmproj = getattr(settings, "mmproj", None)
    if mmproj and not getattr(settings, "no_mmproj", False) and not os.path.isfile(mmproj):
        raise SystemExit(f"error: --mmproj: no such file: {mmproj}")


def lora_specs(settings) -> list[tuple[str, float]]:
    """(path, scale) of every adapter: --lora (scale 1; a comma-separated list is accepted,
    as llama-server now takes) then --lora-scaled FNAME SCALE (in the environment,
    LLAMA_ARG_LORA_SCALED=FNAME:SCALE,...)."""
    specs = [(path, 1.0) for value in settings.lora for path in value.split(",") if path]
    scaled = settings.lora_scaled
    if isinstance(scaled, str):
        scaled = [item.rsplit(":", 1) if ":" in item else (item, "") for item in scaled.split(",") if item]
    for path, scale in scaled:
        try:
            specs.append((path, float(scale)))
        except ValueError:
            raise SystemExit(f"error: --lora-scaled {path}: the scale {scale!r} is not a number") from None
    return specs


def _chat_template_for(settings, engine):
    """Compile the chat template once: the flags', else the model's, else chatml. A model
    template that does not compile is logged and replaced by chatml (the flags were checked
    at startup)."""
    from .chat_template import BUILTIN_TEMPLATES, ChatTemplate, ChatTemplateError, resolve_template
    vocab = engine.vocab
    bos = vocab.text(vocab.bos) if vocab.bos >= 0 else ""
    eos = vocab.text(vocab.eos) if vocab.eos >= 0 else ""
    source = resolve_template(settings.chat_template, settings.chat_template_file,
                              engine.model.chat_template())
    try:
        return ChatTemplate(source, bos, eos)
    except ChatTemplateError as exc:
        logger.warning("the model's chat template does not compile (%s); using chatml", exc)
        return ChatTemplate(BUILTIN_TEMPLATES["chatml"], bos, eos)


def build_engine(settings, bridge=None):
    import llama_lib
    from llama_lib.engine import Engine, EngineConfig

    if not settings.model:   # download flags without webapp.cli.main (e.g. `flask --app webapp run`)
        from .download import resolve_model
        resolve_model(settings)
    llama_lib.load(settings.lib_path)
    threads = settings.threads if settings.threads > 0 else (os.cpu_count() or 1)
    threads_batch = settings.threads_batch if settings.threads_batch > 0 else threads
    tensor_split = [float(x) for x in settings.tensor_split.split(",")] if settings.tensor_split else None
    model = llama_lib.Model(settings.model, llama_lib.ModelParams(
        n_gpu_layers=settings.n_gpu_layers, main_gpu=settings.main_gpu,
        split_mode=settings.split_mode, tensor_split=tensor_split, use_mmap=settings.mmap,
        use_mlock=settings.mlock, check_tensors=settings.check_tensors,
        use_extra_bufts=repack_choice(settings),
        devices=[d.strip() for d in settings.device.split(",") if d.strip()] if settings.device else None))
    n_parallel = max(1, settings.parallel)
    n_ctx = settings.ctx_size if settings.ctx_size > 0 else model.n_ctx_train
    freq_scale = settings.rope_freq_scale
    if settings.rope_scale > 0:
        freq_scale = 1.0 / settings.rope_scale
    n_batch, kv_unified = _embedding_layout(settings, n_parallel)
    ctx = llama_lib.Context(model, llama_lib.ContextParams(
        n_ctx=n_ctx, n_batch=n_batch, n_ubatch=settings.ubatch_size,
        n_seq_max=n_parallel, n_threads=threads, n_threads_batch=threads_batch,
        embeddings=False, pooling=settings.pooling or "unspecified",
        flash_attn=settings.flash_attn, type_k=settings.cache_type_k, type_v=settings.cache_type_v,
        rope_scaling=settings.rope_scaling, rope_freq_base=settings.rope_freq_base,
        rope_freq_scale=freq_scale, yarn_ext_factor=settings.yarn_ext_factor,
        yarn_attn_factor=settings.yarn_attn_factor, yarn_beta_fast=settings.yarn_beta_fast,
        yarn_beta_slow=settings.yarn_beta_slow, yarn_orig_ctx=settings.yarn_orig_ctx,
        defrag_thold=settings.defrag_thold, offload_kqv=settings.kv_offload,
        kv_unified=kv_unified))
    if settings.embeddings and settings.pooling == "rank":
        from .routes.rerank import check_reranker
        check_reranker(model)
    from sampling import make_sampler
    offloaded = _offloaded(settings)
    engine = Engine(model, ctx, EngineConfig(
        n_slots=n_parallel, n_batch=n_batch, cont_batching=settings.cont_batching,
        context_shift=settings.context_shift, max_queue=settings.max_queue,
        n_predict=settings.n_predict, special=settings.special,
        grp_attn_n=settings.grp_attn_n, grp_attn_w=settings.grp_attn_w,
        slot_prompt_similarity=settings.slot_prompt_similarity,
        cache_ram_mib=_cache_ram_mib(settings, ctx),
        cache_idle_slots=settings.cache_idle_slots,
        wait_for_web=not offloaded, sample_threads=_sample_threads(offloaded),
        sample_async=offloaded),
        make_sampler, bridge=bridge,
        speculator=_speculator(settings, model, ctx, n_parallel, threads, threads_batch))
    from .media import attach_projector
    from .props import MEDIA_MARKER
    attach_projector(settings, engine, threads, MEDIA_MARKER)
    specs = lora_specs(settings)
    if specs:
        engine.lora_adapters = [model.load_lora(path) for path, _ in specs]
        engine.set_lora([0.0 if settings.lora_init_without_apply else scale for _, scale in specs])
    if settings.warmup:
        _warmup(engine)
    engine.start()
    # From now on a ggml abort (an RPC worker gone mid-decode) is answered, not just fatal:
    # the requests in flight get a 500 naming the failure and the server exits 1.
    from llama_lib import backends
    backends.install_abort_handler(exit_at_once=False)
    logger.info("model loaded: %s (%s), n_ctx %d over %d slot(s), %d threads",
                settings.model, model.description(), ctx.n_ctx, n_parallel, threads)
    return engine


def _sample_threads(offloaded: bool) -> int:
    """Threads that draw each step's tokens: the cores are libllama's when it decodes on
    them (1); when the model is offloaded they are free between decodes, but for one, which
    the web side's greenlets use meanwhile (with 2 cores, a second sampling thread only
    took the web side's core: 64 slots, 1.27 ms a step against 1.34 ms), up to 4."""
    return max(1, min(4, (os.cpu_count() or 1) - 1)) if offloaded else 1


def _offloaded(settings) -> bool:
    """Whether the model's layers run on an accelerator (a GPU is present and -ngl is not 0):
    then the engine does not wait for the web side between decodes (EngineConfig.wait_for_web)."""
    if settings.n_gpu_layers == 0:
        return False
    from llama_lib import backends
    try:
        return any(d.type in ("gpu", "igpu") for d in backends.devices())
    except Exception:        # no device API in this library: treat as CPU
        return False


def _speculator(settings, model, ctx, n_parallel: int, threads: int, threads_batch: int):
    """--spec-type / -md: the engine's speculator (None: off). A draft model gets a context of
    its own with one sequence per slot, the target's size; its vocabulary must be the
    target's (checked here: a mismatch stops the load with the first difference)."""
    import llama_lib
    from llama_lib.engine.speculative import DraftModel, Speculator, check_vocab_compatible
    cfg = spec_config(settings)
    if not cfg.types:
        return None
    draft = None
    if "draft-simple" in cfg.types:
        draft_model = llama_lib.Model(settings.model_draft, llama_lib.ModelParams(
            n_gpu_layers=settings.n_gpu_layers_draft, use_mmap=settings.mmap,
            use_extra_bufts=repack_choice(settings)))
        try:
            check_vocab_compatible(model, draft_model)
            draft_ctx = llama_lib.Context(draft_model, llama_lib.ContextParams(
                n_ctx=ctx.n_ctx, n_batch=ctx.n_batch, n_ubatch=settings.ubatch_size,
                n_seq_max=n_parallel, n_threads=threads, n_threads_batch=threads_batch,
                flash_attn=settings.flash_attn, kv_unified=ctx.kv_unified))
        except Exception as exc:
            draft_model.close()
            raise ValueError(f"draft model {settings.model_draft}: {exc}") from exc
        draft = DraftModel(draft_model, draft_ctx, n_max=cfg.draft_n_max, n_min=cfg.draft_n_min,
                           p_min=cfg.draft_p_min)
    spec = Speculator.from_config(cfg, draft)
    logger.info("speculative decoding: %s (up to %d draft tokens per step)", spec.name, spec.n_max)
    return spec


def _cache_ram_mib(settings, ctx) -> int:
    """--cache-ram, logged: what the prompt cache may hold in host RAM (it grows only as slot
    prompts are evicted). Off for embeddings and where the KV memory cannot drop a tail."""
    from llama_lib.engine.prompt_cache import default_limit_mib
    limit = default_limit_mib(settings.cache_ram, "cache_ram" in getattr(settings, "explicit", ()))
    if limit == 0 or settings.embeddings or not ctx.can_shift or settings.grp_attn_n > 1:
        logger.info("prompt cache: off%s", "" if limit == 0 else " (not used with this model or mode)")
        return 0
    logger.info("prompt cache: evicted slot prompts may use %s of host RAM (--cache-ram; 0 turns it off)",
                "unlimited memory" if limit < 0 else f"up to {limit} MiB")
    return limit


def _embedding_layout(settings, n_parallel: int) -> tuple[int, bool]:
    """(n_batch, kv_unified) for the context.

    Pooled embeddings (--embeddings) need each input inside one physical batch, so, as
    llama-server does, n_batch is lowered to n_ubatch. With several slots the KV cache is
    made unified: libllama splits a batch over per-slot KV streams in equal-length slices,
    which would cut inputs of different lengths apart and pool each slice on its own (a
    batch of several inputs would not give the vectors each gives alone)."""
    if not settings.embeddings:
        return settings.batch_size, settings.kv_unified
    n_batch = settings.batch_size
    if n_batch > settings.ubatch_size:
        logger.info("embeddings: n_batch lowered from %d to n_ubatch %d", n_batch, settings.ubatch_size)
        n_batch = settings.ubatch_size
    if n_parallel > 1 and not settings.kv_unified:
        logger.info("embeddings: the %d slots share one unified KV cache", n_parallel)
    return n_batch, settings.kv_unified or n_parallel > 1


def repack_choice(settings) -> bool:
    """--repack / --no-repack, else on unless the CPU backend carries ggml's AMX kernels:
    at llama.cpp 0c1e570 those crash (SIGSEGV in ggml_backend_amx_mul_mat, llama.cpp #20824)
    on the first multi-token batch, and they are only reached through the repacked weight
    buffers. llama-server crashes there unless it gets --no-repack; we decide for the user."""
    import llama_lib
    if settings.repack is not None:
        logger.info("weight repacking %s (%s)", "on" if settings.repack else "off",
                    "--repack" if settings.repack else "--no-repack")
        return settings.repack
    if llama_lib.cpu_backend_has_amx():
        logger.warning("weight repacking off: this libggml has AMX kernels, which crash at "
                       "llama.cpp 0c1e570 (llama.cpp #20824); --repack turns it on anyway")
        return False
    logger.info("weight repacking on")
    return True


def _warmup(engine) -> None:
    """Decode BOS and EOS once, as llama-server does, before the server says it is ready:
    the first request does not pay for graph allocation, and a library that cannot decode a
    multi-token batch (a broken kernel) fails here, at startup, not on a user's prompt."""
    from llama_lib import Batch
    vocab = engine.vocab
    tokens = [t for t in (vocab.bos, vocab.eos) if t >= 0] or [0]
    logger.info("warmup: decoding %d tokens", len(tokens))
    batch = Batch(len(tokens))
    batch.add(tokens, 0, 0, True)
    engine.ctx.decode(batch)
    engine.ctx.clear()
