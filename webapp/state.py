"""ServerState: what the routes share: settings, the engine (once loaded), the model's facts.

The production server listens while the model loads (``/health`` answers 503 meanwhile), so
the engine arrives later; routes ask ``state.ready_engine()`` which raises the right 503/500.
"""
from __future__ import annotations

import logging
import os
import threading

from .errors import ApiError

__all__ = ["ServerState", "build_engine", "sampling_defaults"]

logger = logging.getLogger(__name__)

LOADING, READY, ERROR = "loading", "ok", "error"


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
        self.chat_template = None
        # The bridge must be made here, on the thread whose hub serves HTTP: the model
        # loads on another OS thread, which would otherwise get a hub of its own.
        from llama_lib.engine.bridge import make_bridge
        self.bridge = engine.bridge if engine is not None else make_bridge()

    def ready_engine(self):
        if self.status == LOADING:
            raise ApiError("Loading model", "unavailable_error", 503)
        if self.status == ERROR or self.engine is None:
            raise ApiError(f"Model failed to load: {self.error}", "server_error", 500)
        return self.engine

    @property
    def model_id(self) -> str:
        if self.settings.alias:
            return self.settings.alias
        return os.path.basename(self.settings.model or "model")

    def load(self) -> None:
        """Build the engine (called on a real thread by the production server)."""
        try:
            engine = build_engine(self.settings, self.bridge)
        except Exception as exc:   # reported through /health; the process keeps serving it
            logger.error("model load failed: %s", exc)
            self.error = str(exc)
            self.status = ERROR
            return
        self.engine = engine
        self.status = READY

    def attach(self, engine) -> None:
        self.engine = engine
        self.status = READY


def build_engine(settings, bridge=None):
    import llama_lib
    from llama_lib.engine import Engine, EngineConfig

    llama_lib.load(settings.lib_path)
    threads = settings.threads if settings.threads > 0 else (os.cpu_count() or 1)
    threads_batch = settings.threads_batch if settings.threads_batch > 0 else threads
    tensor_split = [float(x) for x in settings.tensor_split.split(",")] if settings.tensor_split else None
    model = llama_lib.Model(settings.model, llama_lib.ModelParams(
        n_gpu_layers=settings.n_gpu_layers, main_gpu=settings.main_gpu,
        split_mode=settings.split_mode, tensor_split=tensor_split, use_mmap=settings.mmap,
        use_mlock=settings.mlock, check_tensors=settings.check_tensors))
    n_parallel = max(1, settings.parallel)
    n_ctx = settings.ctx_size if settings.ctx_size > 0 else model.n_ctx_train
    freq_scale = settings.rope_freq_scale
    if settings.rope_scale > 0:
        freq_scale = 1.0 / settings.rope_scale
    ctx = llama_lib.Context(model, llama_lib.ContextParams(
        n_ctx=n_ctx, n_batch=settings.batch_size, n_ubatch=settings.ubatch_size,
        n_seq_max=n_parallel, n_threads=threads, n_threads_batch=threads_batch,
        embeddings=False, pooling=settings.pooling or "unspecified",
        flash_attn=settings.flash_attn, type_k=settings.cache_type_k, type_v=settings.cache_type_v,
        rope_scaling=settings.rope_scaling, rope_freq_base=settings.rope_freq_base,
        rope_freq_scale=freq_scale, yarn_ext_factor=settings.yarn_ext_factor,
        yarn_attn_factor=settings.yarn_attn_factor, yarn_beta_fast=settings.yarn_beta_fast,
        yarn_beta_slow=settings.yarn_beta_slow, yarn_orig_ctx=settings.yarn_orig_ctx,
        defrag_thold=settings.defrag_thold, offload_kqv=settings.kv_offload,
        kv_unified=settings.kv_unified))
    engine = Engine(model, ctx, EngineConfig(
        n_slots=n_parallel, n_batch=settings.batch_size, cont_batching=settings.cont_batching,
        context_shift=settings.context_shift, max_queue=settings.max_queue,
        n_predict=settings.n_predict, special=settings.special), bridge=bridge)
    _warmup(engine)
    engine.start()
    logger.info("model loaded: %s (%s), n_ctx %d over %d slot(s), %d threads",
                settings.model, model.description(), ctx.n_ctx, n_parallel, threads)
    return engine


def _warmup(engine) -> None:
    """One tiny decode so the first request does not pay for graph allocation."""
    from llama_lib import Batch
    vocab = engine.vocab
    token = vocab.bos if vocab.bos >= 0 else 0
    batch = Batch(1)
    batch.add([token], 0, 0, True)
    engine.ctx.decode(batch)
    engine.ctx.seq_rm(0, -1, -1)
