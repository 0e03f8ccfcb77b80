"""The generation settings and server properties that /props, /completion and /slots report.

``GET /props`` and ``GET /models`` answer while the model sleeps (``--sleep-idle-seconds``),
so what they say about the model comes from ``ModelFacts``, read from the engine while it is
loaded and kept across sleep, never from the engine itself.
"""
from __future__ import annotations

import functools
import os
import re
import secrets
import string
from dataclasses import dataclass

__all__ = ["props_body", "generation_settings", "default_generation_settings", "ModelFacts",
           "chat_template_caps", "MEDIA_MARKER"]

# llama-server's placeholder for media in multimodal prompts: random per process unless
# LLAMA_MEDIA_MARKER pins it. With --mmproj it is the projector's marker (webapp/media.py).
MEDIA_MARKER = os.environ.get("LLAMA_MEDIA_MARKER") or (
    "<__media_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32)) + "__>")


@dataclass(frozen=True)
class ModelFacts:
    """What /props and /models say about the loaded model and its context."""
    n_slots: int
    n_ctx_slot: int
    n_ctx_train: int
    n_embd: int
    n_params: int
    size: int
    n_vocab: int
    vocab_type: int          # libllama's enum llama_vocab_type (1 SPM, 2 BPE, 3 WPM, ...)
    ftype: str               # llama_ftype_name(), e.g. "Q8_0" or "Q4_K - Medium"
    bos_token: str
    eos_token: str
    build_info: str
    vision: bool = False     # --mmproj: what the projector takes
    audio: bool = False

    @classmethod
    def of(cls, engine) -> "ModelFacts":
        from llama_lib import library
        model, vocab = engine.model, engine.vocab
        media = getattr(engine, "media", None)
        version = library().llama_version()
        return cls(
            n_slots=engine.config.n_slots, n_ctx_slot=engine.n_ctx_slot,
            n_ctx_train=model.n_ctx_train, n_embd=model.n_embd, n_params=model.n_params,
            size=model.size, n_vocab=vocab.n_tokens,
            vocab_type=int(library().llama_vocab_type(vocab.handle)),
            ftype=_ftype_name(model.description()),
            bos_token=_special_text(vocab, vocab.bos), eos_token=_special_text(vocab, vocab.eos),
            build_info="llama-server-py over libllama " + (version.decode() if version else "?"),
            vision=bool(media and media.mtmd.vision), audio=bool(media and media.mtmd.audio))


# llama_model_desc() is "<arch> <type> <ftype name>"; a type name may carry a parenthesised
# nickname ("17Bx16E (Scout)"), an ftype name may start with "(guessed) ".
_DESC = re.compile(r"\S+ \S+(?: \((?!guessed\))[^)]*\))? (?P<ftype>.+)")


def _ftype_name(description: str) -> str:
    """The file type's name as libllama's llama_ftype_name() spells it, read from the model's
    description (our bindings do not declare llama_model_ftype / llama_ftype_name)."""
    found = _DESC.fullmatch(description)
    return found.group("ftype") if found else ""


def _special_text(vocab, token: int) -> str:
    return vocab.piece(token, special=True).decode("utf-8", "replace") if token >= 0 else ""


def props_body(state) -> dict:
    """llama-server's GET /props fields (its README and server-context.cpp at 0c1e570), plus
    the seed's system_prompt / assistant_name / user_name / n_ctx."""
    facts, settings = state.model_facts(), state.settings
    template = state.chat_template
    return {
        "default_generation_settings": default_generation_settings(state),
        "total_slots": facts.n_slots,
        "model_alias": state.model_id,
        "model_ftype": facts.ftype,
        "model_path": settings.model,
        "modalities": {"vision": facts.vision, "video": False, "audio": facts.audio},
        "media_marker": MEDIA_MARKER,
        "endpoint_slots": bool(settings.slots_endpoint),
        "endpoint_props": bool(settings.props_post),
        "endpoint_metrics": bool(settings.metrics),
        "ui": bool(settings.webui),
        "ui_settings": {},
        "chat_template": state.chat_template_source(),
        "chat_template_caps": chat_template_caps(template) if template is not None else {},
        "bos_token": facts.bos_token,
        "eos_token": facts.eos_token,
        "build_info": facts.build_info,
        "is_sleeping": state.is_sleeping,
        "cors_proxy_enabled": False,
        "system_prompt": state.system_prompt or "",
        "assistant_name": state.assistant_name or "",
        "user_name": state.user_name or "",
        "n_ctx": facts.n_ctx_slot,
    }


def default_generation_settings(state) -> dict:
    """llama-server's shape, ``{"params": {...}, "n_ctx": N}``. The seed's flat fields stay
    beside them: completion.js's ``llamaModelInfo()`` and older clients read those."""
    flat = generation_settings(state, None, state.defaults, None)
    params = {k: v for k, v in flat.items() if k not in ("n_ctx", "model")}
    params["max_tokens"] = params["n_predict"]
    return {"params": params, **flat}


def generation_settings(state, engine, params, options) -> dict:
    """``engine`` None: the model may be asleep; the slot size comes from ModelFacts."""
    n_ctx = engine.n_ctx_slot if engine is not None else state.model_facts().n_ctx_slot
    out = {"n_ctx": n_ctx, "model": state.model_id}
    out.update(params.to_json())
    if options is not None:
        out.update({"n_predict": options.n_predict, "n_keep": options.n_keep, "stop": options.stop,
                    "stream": options.stream, "n_probs": options.n_probs,
                    "cache_prompt": options.cache_prompt, "ignore_eos": options.ignore_eos,
                    "id_slot": options.id_slot, "n_discard": options.n_discard,
                    "timings_per_token": options.timings_per_token,
                    "post_sampling_probs": options.post_sampling_probs,
                    "lora": [{"id": i, "scale": scale} for i, scale in enumerate(options.lora or ())]})
    else:
        out.update({"n_predict": state.settings.n_predict, "n_keep": state.settings.keep,
                    "stop": [], "stream": False})
    return out


# --- chat_template_caps --------------------------------------------------------------------
# llama-server runs its own Jinja engine over probe conversations and records which inputs the
# template reads (common/jinja/caps.cpp). Ours renders probe conversations carrying unique
# markers and looks for them in the output: a template that does not print a value has no
# use for it.

_MARK = "CAPS_PROBE_"
_TOOL = {"type": "function", "function": {
    "name": _MARK + "tool", "description": "Tool description",
    "parameters": {"type": "object", "properties": {"arg": {"type": "string", "description": "Arg"}},
                   "required": ["arg"]}}}


# the variables templates read to keep earlier turns' reasoning (llama-server sets the same)
_PRESERVE = {"preserve_thinking": True, "clear_thinking": False, "truncate_history_thinking": False,
             "drop_thinking": False}


_EFFORTS = (None, "none", "minimal", "low", "medium", "high", "max")


def _call(n: int, arguments) -> dict:
    return {"id": f"call0000{n}", "type": "function",
            "function": {"name": f"{_MARK}call{n}", "arguments": arguments}}


def _tool_history(calls: list[dict]) -> list[dict]:
    return [{"role": "user", "content": "User message"},
            {"role": "assistant", "content": "", "tool_calls": calls},
            {"role": "tool", "content": "Tool response", "tool_call_id": calls[0]["id"]},
            {"role": "assistant", "content": "The tool response was 'tool response'"},
            {"role": "user", "content": "User message"}]


def _render(template, messages, tools=(), **extra) -> str | None:
    """None when the template refuses. As in llama-server's probes, ``tools`` is an empty
    list unless the probe has tools."""
    from .chat_template import ChatTemplateError
    try:
        return template.render(messages, add_generation_prompt=True, tools=list(tools), **extra)
    except ChatTemplateError:
        return None


@functools.lru_cache(maxsize=8)
def chat_template_caps(template) -> dict[str, bool]:
    """The keys of llama-server's ``chat_template_caps`` (its ``caps::to_map()``), from probe
    renders of ``template`` (a ChatTemplate; cached per template object)."""
    text = _MARK + "text"
    user = _render(template, [{"role": "user", "content": text}]) or ""
    typed = _render(template, [{"role": "user", "content": [{"type": "text", "text": text}]}]) or ""
    system = _render(template, [{"role": "system", "content": _MARK + "system"},
                                {"role": "user", "content": "User message"}]) or ""
    tools = _render(template, [{"role": "user", "content": "User message"}], tools=[_TOOL]) or ""
    arg = _MARK + "arg"
    object_call = _render(template, _tool_history([_call(1, {"arg": arg})]), tools=[_TOOL]) or ""
    string_call = _render(template, _tool_history([_call(1, '{"arg": "value"}')]), tools=[_TOOL]) or ""
    object_arguments = arg in object_call
    calls = [_call(1, {"arg": "value"} if object_arguments else '{"arg": "value"}'),
             _call(2, {"arg": "value"} if object_arguments else '{"arg": "value"}')]
    parallel = _render(template, _tool_history(calls), tools=[_TOOL]) or ""
    reasoning = _MARK + "reasoning"
    history = _render(template, [
        {"role": "user", "content": "User message"},
        {"role": "assistant", "content": "Assistant message", "reasoning_content": reasoning},
        {"role": "user", "content": "User message"},
        {"role": "assistant", "content": "Assistant message", "reasoning_content": "Reasoning content"},
        {"role": "user", "content": "User message"}], enable_thinking=True, **_PRESERVE) or ""
    question = [{"role": "user", "content": "User message"}]
    # llama-server records whether reasoning_effort is read at all; templates compare it with
    # a few values of their own ("max", "none", ...): any of them changing the prompt counts
    efforts = {_render(template, question, enable_thinking=True, reasoning_effort=level,
                       reasoning_strength=level) for level in _EFFORTS}
    return {
        "supports_object_arguments": object_arguments,
        "supports_parallel_tool_calls": f"{_MARK}call2" in parallel,
        "supports_preserve_reasoning": reasoning in history,
        "supports_reasoning_effort": len(efforts - {None}) > 1,
        "supports_string_content": text in user,
        "supports_system_role": _MARK + "system" in system,
        "supports_tool_calls": f"{_MARK}call1" in object_call or f"{_MARK}call1" in string_call,
        "supports_tools": _MARK + "tool" in tools,
        # the parts' text printed, and not the list itself (a template that prints
        # {{ content }} shows the marker inside the list's repr)
        "supports_typed_content": text in typed and "'type'" not in typed and '"type"' not in typed,
    }
