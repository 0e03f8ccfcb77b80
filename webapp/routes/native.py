"""llama-server's native routes: /health, /completion, /tokenize, /detokenize, /props."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request, stream_with_context

from llama_lib.engine import FinalEvent, Status, TokenEvent

from ..auth import has_valid_key
from ..completion import (collect_all, json_body, new_request, parse_options, probs_seed_format,
                          raise_for_failure, sampling_for, submit, tokenize_prompt)
from ..errors import ApiError, BadRequest, error_body
from ..sse import sse_data
from ..system_prompt import update_from_request
from ..props import generation_settings, props_body
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
        if state.status != "ok" or state.engine is None:
            return jsonify(error_body(f"Model failed to load: {state.error}", "server_error", 500)), 500
        engine = state.engine
        if engine.failure:      # the engine loop stopped: the process is about to exit
            return jsonify(error_body(engine.failure, "unavailable_error", 503)), 503
        idle = engine.config.n_slots - engine.n_processing
        body = {"status": "ok", "slots_idle": idle, "slots_processing": engine.n_processing}
        # /health is public, the slots (every slot's last prompt) are not: embed them only where
        # GET /slots itself would answer (endpoint on, a valid key when keys are configured).
        if "include_slots" in request.args and state.settings.slots_endpoint and has_valid_key():
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
        engine = state.ready_engine()
        return jsonify(props_body(state, engine))

    @bp.post("/props")
    def set_props():
        if not state.settings.props_post:
            raise ApiError("this server does not allow changing properties (start it with --props)",
                           "not_supported_error", 501)
        state.ready_engine()
        json_body()
        return jsonify({"success": True})

    return bp


def _prompts(body):
    """A single prompt, or several (a list of strings and/or token lists)."""
    prompt = body["prompt"]
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt) \
            and (len(prompt) > 1 and all(isinstance(p, str) for p in prompt) or any(isinstance(p, list) for p in prompt)):
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
        "prompt": prompt if isinstance(prompt, str) else engine.vocab.detokenize(req.prompt_tokens),
        "truncated": final.truncated,
        "stopped_eos": final.status is Status.FINISHED_EOS,
        "stopped_word": final.status is Status.FINISHED_STOP,
        "stopped_limit": final.status in (Status.FINISHED_LIMIT, Status.FINISHED_CONTEXT),
        "stopping_word": final.stopping_word,
        "tokens_cached": final.n_cached,
        "timings": final.timings,
    }


def run_completion(state, engine, body):
    prompts, multiple = _prompts(body)
    options = parse_options(body, state.settings)
    params = sampling_for(body, state, engine.vocab)
    update_from_request(state, engine, body)
    token_lists = [tokenize_prompt(engine.vocab, p) for p in prompts]
    return respond(state, engine, token_lists, prompts, multiple, options, params)


def respond(state, engine, token_lists, prompts, multiple, options, params, *, system_prompt=True):
    """Submit prepared prompts and answer in the seed's format (one result, an array of
    them, or a stream); shared with /infill, whose FIM layout must not get the system prompt."""
    if options.stream:
        if multiple:
            raise BadRequest("streaming supports one prompt per request")
        req = new_request(engine, token_lists[0], options, params, system_prompt=system_prompt)
        group = submit(engine, [req])
        return Response(stream_with_context(_stream(state, engine, group, params, prompts[0])),
                        mimetype="text/event-stream", headers={"Cache-Control": "no-cache",
                                                               "X-Accel-Buffering": "no"})
    reqs = [new_request(engine, tokens, options, params, system_prompt=system_prompt)
            for tokens in token_lists]
    results = []
    for i, (req, prompt, got) in enumerate(zip(reqs, prompts, collect_all(engine, reqs))):
        result = {"content": got.text}
        result.update(final_fields(state, engine, req, params, got.final, prompt))
        result["index"] = i
        if options.n_probs:
            result["completion_probabilities"] = [probs_seed_format(engine.vocab, t, p) for t, p in got.probs]
        results.append(result)
    return jsonify(results if multiple else results[0])


def _stream(state, engine, group, params, prompt):
    req = group.requests[0]
    with group:
        yield from _stream_events(state, engine, group, req, params, prompt)


def _stream_events(state, engine, group, req, params, prompt):
    vocab = engine.vocab
    for _i, events in group:
        tokens = [ev for ev in events if isinstance(ev, TokenEvent)]
        final = next((ev for ev in events if isinstance(ev, FinalEvent)), None)
        if tokens:
            chunk = {"content": "".join(ev.text for ev in tokens), "stop": False,
                     "id_slot": req.slot_id, "multimodal": False, "index": 0}
            if req.options.n_probs:
                chunk["completion_probabilities"] = [probs_seed_format(vocab, ev.token, ev.probs)
                                                     for ev in tokens if ev.probs is not None]
            yield sse_data(chunk)
        if final is not None:
            try:
                raise_for_failure(final)
            except ApiError as exc:
                yield sse_data(exc.body())
                return
            chunk = {"content": final.text}
            chunk.update(final_fields(state, engine, req, params, final, prompt))
            yield sse_data(chunk)
