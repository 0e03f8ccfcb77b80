"""llama-server's native routes: /health, /completion, /tokenize, /detokenize, /props."""
from __future__ import annotations

import dataclasses

from flask import Blueprint, Response, jsonify, request, stream_with_context

from llama_lib.engine import FinalEvent, ProgressEvent, Status, TokenEvent

from ..auth import has_valid_key
from ..completion import (choice_params, collect_all, json_body, new_request, parse_options,
                          probs_entry, raise_for_failure, sampling_for, submit)
from ..errors import ApiError, BadRequest, error_body
from ..sse import Frames, sse_data
from ..system_prompt import update_from_request
from ..media import completion_prompts, prompt_text
from ..props import MEDIA_MARKER, generation_settings, props_body
from .slots import slot_snapshot

__all__ = ["make_blueprint"]


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("native", __name__)

    @bp.get("/health")
    @bp.get("/v1/health")
    def health():
        if state.status in ("loading", "stopping"):
            message = "Loading model" if state.status == "loading" else "the server is shutting down"
            return jsonify(error_body(message, "unavailable_error", 503)), 503
        # /health is public, the slots (every slot's last prompt) are not: embed them only where
        # GET /slots itself would answer (endpoint on, a valid key when keys are configured).
        wants_slots = "include_slots" in request.args and state.settings.slots_endpoint and has_valid_key()
        if state.is_sleeping:   # --sleep-idle-seconds: healthy, every slot idle
            if not wants_slots:
                n_slots = state.model_facts().n_slots
                return jsonify({"status": "ok", "slots_idle": n_slots, "slots_processing": 0})
            state.ready_engine()    # the slots are the engine's: wake the model, as GET /slots does
        if state.status != "ok" or state.engine is None:
            return jsonify(error_body(f"Model failed to load: {state.error}", "server_error", 500)), 500
        engine = state.engine
        if engine.failure:      # the engine loop stopped: the process is about to exit
            return jsonify(error_body(engine.failure, "unavailable_error", 503)), 503
        idle = engine.config.n_slots - engine.n_processing
        body = {"status": "ok", "slots_idle": idle, "slots_processing": engine.n_processing}
        if wants_slots:
            body["slots"] = slot_snapshot(state)
        if idle == 0 and request.args.get("fail_on_no_slot") not in (None, "", "0", "false"):
            body["status"] = "no slot available"
            return jsonify(body), 503
        return jsonify(body)

    @bp.post("/completion")
    @bp.post("/completions")
    def completion():
        engine = state.ready_engine()
        body = json_body()
        if "prompt" not in body:
            raise BadRequest("'prompt' is required")
        return run_completion(state, engine, body)

    @bp.post("/tokenize")
    def tokenize():
        engine = state.ready_engine()
        body = json_body()
        content = body.get("content")
        if not isinstance(content, str):
            raise BadRequest("'content' must be a string")
        add_special = body.get("add_special", False)
        with_pieces = body.get("with_pieces", False)
        if not isinstance(add_special, bool) or not isinstance(with_pieces, bool):
            raise BadRequest("'add_special' and 'with_pieces' must be booleans")
        tokens = engine.vocab.tokenize(content, add_special=add_special, parse_special=True)
        if not with_pieces:
            return jsonify({"tokens": tokens})
        out = []
        for t in tokens:
            raw = engine.vocab.piece(t)
            try:
                piece = raw.decode("utf-8")
            except UnicodeDecodeError:
                piece = list(raw)
            out.append({"id": t, "piece": piece})
        return jsonify({"tokens": out})

    @bp.post("/detokenize")
    def detokenize():
        engine = state.ready_engine()
        body = json_body()
        tokens = body.get("tokens", [])
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise BadRequest("'tokens' must be a list of token ids")
        for t in tokens:
            if not 0 <= t < engine.vocab.n_tokens:
                raise BadRequest(f"token id {t} is out of range [0, {engine.vocab.n_tokens})")
        return jsonify({"content": engine.vocab.detokenize(tokens)})

    @bp.get("/props")
    def props():
        state.check_ready()      # answers while the model sleeps, without waking it
        return jsonify(props_body(state))

    @bp.post("/props")
    def set_props():
        if not state.settings.props_post:
            raise ApiError("This server does not support changing global properties. Start it with `--props`",
                           "not_supported_error", 501)
        state.ready_engine()
        json_body()              # llama-server has no property to change yet either
        return jsonify({"success": True})

    return bp


def _prompts(body):
    """A single prompt, or several (a list of strings and/or token lists)."""
    prompt = body["prompt"]
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list, dict)) for p in prompt) \
            and (len(prompt) > 1 and all(isinstance(p, str) for p in prompt)
                 or any(isinstance(p, (list, dict)) for p in prompt)):
        return prompt, True
    return [prompt], False


def final_fields(state, engine, req, params, final: FinalEvent, prompt) -> dict:
    return {
        "index": 0,
        "id_slot": final.slot_id,
        "stop": True,
        "model": state.model_id,
        "tokens_predicted": final.n_predicted,
        "tokens_evaluated": final.n_prompt,
        "generation_settings": generation_settings(state, engine, params, req.options),
        "prompt": prompt if isinstance(prompt, str) else prompt_text(engine.vocab, req.prompt_tokens, MEDIA_MARKER),
        "truncated": final.truncated,
        "stopped_eos": final.status is Status.FINISHED_EOS,
        "stopped_word": final.status is Status.FINISHED_STOP,
        "stopped_limit": final.status in (Status.FINISHED_LIMIT, Status.FINISHED_CONTEXT),
        "stopping_word": final.stopping_word,
        "tokens_cached": final.n_cached,
        "timings": final.timings,
    }


def parse_n_cmpl(body: dict, engine) -> int:
    """``n_cmpl`` (or, when absent, ``n``): completions per prompt, 1 to the number of slots
    (each takes one; the others share the first one's evaluated prompt)."""
    key = "n_cmpl" if body.get("n_cmpl") is not None else "n"
    value = body.get(key)
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (isinstance(value, float) and not value.is_integer()):
        raise BadRequest(f"'{key}' must be an integer")
    slots = engine.config.n_slots
    if not 1 <= value <= slots:
        raise BadRequest(f"'{key}' must be between 1 and {slots} (the number of slots), but got "
                         f"{int(value)}")
    return int(value)


def run_completion(state, engine, body):
    prompts, multiple = _prompts(body)
    options = parse_options(body, state.settings)
    params = sampling_for(body, state, engine.vocab)
    n_cmpl = parse_n_cmpl(body, engine)
    shape = ResponseShape.parse(body)
    update_from_request(state, engine, body)
    token_lists, media = completion_prompts(engine, state.settings, body, prompts)
    return respond(state, engine, token_lists, prompts, multiple, options, params, n_cmpl=n_cmpl,
                   shape=shape, media=media)


def _requests(engine, token_lists, options, params, n_cmpl, system_prompt, media=None) -> list:
    """n_cmpl requests per prompt, indexed ``prompt * n_cmpl + j``; choice j > 0 shares
    choice 0's evaluated prompt, samples with its own seed and takes any slot."""
    reqs = []
    child_options = dataclasses.replace(options, id_slot=-1)
    for n, tokens in enumerate(token_lists):
        chunks = media[n] if media else None
        first = new_request(engine, tokens, options, choice_params(params, 0),
                            system_prompt=system_prompt, media=chunks)
        reqs.append(first)
        for j in range(1, n_cmpl):
            child = new_request(engine, tokens, child_options, choice_params(params, j),
                                system_prompt=system_prompt, media=chunks)
            child.parent = first
            reqs.append(child)
    return reqs


def respond(state, engine, token_lists, prompts, multiple, options, params, *, system_prompt=True,
            n_cmpl: int = 1, shape: ResponseShape | None = None, media=None):
    """Submit prepared prompts and answer in llama-server's format (one result, an array of
    them, or a stream whose chunks carry each result's ``index``); shared with /infill,
    whose FIM layout must not get the system prompt."""
    shape = shape or ResponseShape()
    reqs = _requests(engine, token_lists, options, params, n_cmpl, system_prompt, media)
    prompt_of = [p for p in prompts for _ in range(n_cmpl)]
    if options.stream:
        group = submit(engine, reqs)
        return Response(stream_with_context(_stream(state, engine, group, params, prompt_of, shape)),
                        mimetype="text/event-stream", headers={"Cache-Control": "no-cache",
                                                               "X-Accel-Buffering": "no"})
    results = []
    for i, (req, prompt, got) in enumerate(zip(reqs, prompt_of, collect_all(engine, reqs))):
        result = {"content": got.text}
        result.update(final_fields(state, engine, req, params, got.final, prompt))
        result["index"] = i
        if options.n_probs:
            result["completion_probabilities"] = [
                probs_entry(engine.vocab, ev, options.post_sampling_probs)
                for ev in got.token_events if ev.probs is not None]
        results.append(shape.final(result, got.tokens))
    return jsonify(results if multiple or n_cmpl > 1 else results[0])


def _stream(state, engine, group, params, prompts, shape):
    """Server-sent events: progress chunks (return_progress), token chunks, and each
    result's final chunk; every chunk carries its result's ``index``."""
    vocab = engine.vocab
    frames: dict[int, Frames] = {}      # per result: its plain token chunks (sse.Frames)
    with group:
        for i, events in group:
            req = group.requests[i]
            options = req.options
            tokens = [ev for ev in events if isinstance(ev, TokenEvent)]
            final = next((ev for ev in events if isinstance(ev, FinalEvent)), None)
            for ev in events:
                if isinstance(ev, ProgressEvent):
                    yield sse_data(_progress_chunk(req, i, ev))
            if tokens and not options.n_probs and tokens[-1].timings is None:
                f = frames.get(i)
                if f is None:
                    f = frames[i] = Frames({"content": "", "tokens": [], "stop": False,
                                            "id_slot": req.slot_id, "multimodal": False, "index": i},
                                           ("content",), ("tokens",))
                yield f.frame("".join(ev.text for ev in tokens), [ev.token for ev in tokens])
            elif tokens:
                chunk = {"content": "".join(ev.text for ev in tokens),
                         "tokens": [ev.token for ev in tokens], "stop": False,
                         "id_slot": req.slot_id, "multimodal": False, "index": i}
                if options.n_probs:
                    chunk["completion_probabilities"] = [
                        probs_entry(vocab, ev, options.post_sampling_probs)
                        for ev in tokens if ev.probs is not None]
                if tokens[-1].timings is not None:
                    chunk["timings"] = tokens[-1].timings
                yield sse_data(chunk)
            if final is not None:
                try:
                    raise_for_failure(final)
                except ApiError as exc:
                    yield sse_data(exc.body())
                    return
                chunk = {"content": final.text}
                chunk.update(final_fields(state, engine, req, params, final, prompts[i]))
                chunk["index"] = i
                yield sse_data(shape.final(chunk, ()))   # the tokens went out in the chunks


def _progress_chunk(req, index: int, ev: ProgressEvent) -> dict:
    chunk = {"content": "", "tokens": [], "stop": False, "id_slot": req.slot_id, "index": index,
             "tokens_predicted": 0, "tokens_evaluated": ev.total,
             "prompt_progress": {"total": ev.total, "cache": ev.cache, "processed": ev.processed,
                                 "time_ms": ev.time_ms}}
    if ev.timings is not None:
        chunk["timings"] = ev.timings
    return chunk


@dataclasses.dataclass(frozen=True)
class ResponseShape:
    """/completion's ``return_tokens`` (the generated token ids in ``tokens``; streamed chunks
    always carry theirs) and ``response_fields`` (keep only these keys of a final result;
    ``a/b`` pulls ``result["a"]["b"]`` up as the key ``"a/b"``; a missing one is left out),
    with llama-server's defaults: no tokens, every field."""
    return_tokens: bool = False
    response_fields: tuple[str, ...] = ()

    @classmethod
    def parse(cls, body: dict) -> "ResponseShape":
        return_tokens = body.get("return_tokens")
        if return_tokens is not None and not isinstance(return_tokens, bool):
            raise BadRequest("'return_tokens' must be a boolean")
        fields = body.get("response_fields")
        if fields is not None and (not isinstance(fields, list)
                                   or not all(isinstance(f, str) for f in fields)):
            raise BadRequest("'response_fields' must be a list of strings")
        return cls(bool(return_tokens), tuple(fields or ()))

    def final(self, result: dict, tokens) -> dict:
        result["tokens"] = list(tokens) if self.return_tokens else []
        return select_fields(result, self.response_fields) if self.response_fields else result


def select_fields(result: dict, paths) -> dict:
    """llama-server's json_get_nested_values: each path's value under the path itself."""
    out = {}
    for path in paths:
        value = result
        for key in path.split("/"):
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
        else:
            out[path] = value
    return out
