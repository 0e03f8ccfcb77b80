"""The generation settings and server properties that /props, /completion and /slots report."""
from __future__ import annotations

__all__ = ["props_body", "generation_settings"]


def props_body(state, engine) -> dict:
    return {
        "default_generation_settings": generation_settings(state, engine, state.defaults, None),
        "total_slots": engine.config.n_slots,
        "model_path": state.settings.model,
        "model_alias": state.model_id,
        "chat_template": state.chat_template_source(),
        "system_prompt": state.system_prompt or "",
        "assistant_name": state.assistant_name or "",
        "user_name": state.user_name or "",
        "n_ctx": engine.n_ctx_slot,
        "build_info": "llama-server-py over libllama " + _lib_version(),
        "modalities": {"vision": False, "audio": False},
    }


def _lib_version() -> str:
    from llama_lib import library
    raw = library().llama_version()
    return raw.decode() if raw else "?"


def generation_settings(state, engine, params, options) -> dict:
    out = {"n_ctx": engine.n_ctx_slot, "model": state.model_id}
    out.update(params.to_json())
    if options is not None:
        out.update({"n_predict": options.n_predict, "n_keep": options.n_keep, "stop": options.stop,
                    "stream": options.stream, "n_probs": options.n_probs,
                    "cache_prompt": options.cache_prompt, "ignore_eos": options.ignore_eos,
                    "id_slot": options.id_slot})
    else:
        out.update({"n_predict": state.settings.n_predict, "n_keep": state.settings.keep,
                    "stop": [], "stream": False})
    return out
