"""``POST /v1/completions``: OpenAI's (legacy) text completions.

``/completions`` without the prefix stays llama-server's native handler (see native.py), as
in llama-server. ``prompt`` is a string, a list of strings (one choice each), a list of token
ids, or a list of token-id lists; with ``n`` each prompt gets n choices, indexed
``prompt * n + j``. ``logprobs`` is the legacy integer form and answers in the legacy shape
(``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``). With ``echo`` the prompt
text starts each choice; its tokens carry no log-probability (null), as this server does not
score prompts.
"""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, stream_with_context

from llama_lib.engine import FinalEvent, TokenEvent

from ..completion import json_body, raise_for_failure
from ..media import completion_prompts as media_prompts
from ..errors import ApiError, BadRequest
from ..sse import Frames, sse_data, sse_done
from .openai import (Generation, check_known_fields, collect_choices, completion_id, finish_reason,
                     fingerprint, now, open_stream, parse_max_tokens, parse_n, response_model,
                     submit_choices, token_logprobs, top_logprobs_of, usage_of)
from .openai_chat import SSE_HEADERS, stream_flags

__all__ = ["make_blueprint", "completion_prompts"]

KNOWN_FIELDS = frozenset({
    "model", "prompt", "stream", "stream_options", "max_tokens", "stop", "n", "seed", "temperature",
    "top_p", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "echo", "user",
    "suffix", "best_of",
})


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("openai_completions", __name__)

    @bp.post("/v1/completions")
    def completions():
        engine = state.ready_engine()
        body = json_body()
        check_known_fields(body, KNOWN_FIELDS, "v1/completions")
        if body.get("suffix") is not None:
            raise BadRequest("'suffix' is not supported")
        if body.get("best_of") not in (None, 1):
            raise BadRequest("'best_of' is not supported")
        echo = body.get("echo")
        if echo is not None and not isinstance(echo, bool):
            raise BadRequest("'echo' must be a boolean")
        vocab = engine.vocab
        prompts = completion_prompts(body)
        token_lists, media = media_prompts(engine, state.settings, body, prompts)
        if echo and any(media):
            raise BadRequest("'echo' is not supported with images or audio in the prompt")
        stream, include_usage = stream_flags(body)
        top_n = top_logprobs_of(body, "logprobs")
        gen = Generation(n=parse_n(body, engine), n_predict=parse_max_tokens(body, "max_tokens"),
                         logprobs=body.get("logprobs") is not None, stream=stream)
        requests = submit_choices(state, engine, body, token_lists, gen, media=media)
        echoes = [(p if isinstance(p, str) else vocab.detokenize(t)) if echo else ""
                  for p, t in zip(prompts, token_lists)]
        job = _Job(vocab, gen, top_n, echoes, token_lists, bool(echo), {
            "id": completion_id("cmpl"), "object": "text_completion", "created": now(),
            "model": response_model(body, state), "system_fingerprint": fingerprint()})
        if not stream:
            return jsonify(job.response(collect_choices(engine, requests)))
        events = open_stream(engine, requests)
        return Response(stream_with_context(job.stream(events, include_usage)),
                        mimetype="text/event-stream", headers=SSE_HEADERS)

    return bp


def completion_prompts(body: dict) -> list:
    """The prompts of the request: each a string, a list of token ids, or a multimodal
    prompt object (webapp/media.py)."""
    if "prompt" not in body:
        raise BadRequest("'prompt' is required")
    prompt = body["prompt"]
    if isinstance(prompt, (str, dict)):      # dict: {"prompt_string", "multimodal_data"}
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, dict) for p in prompt):
        return list(prompt)
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return [prompt]
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p)
               for p in prompt):
            return list(prompt)
    raise BadRequest("'prompt' must be a string, a list of strings, a list of token ids or a "
                     "list of non-empty token-id lists")


class _Job:
    """One request's choices: shapes their text and legacy log-probabilities."""

    def __init__(self, vocab, gen: Generation, top_n: int, echoes: list[str],
                 token_lists: list[list[int]], echo: bool, meta: dict):
        self.vocab, self.gen, self.top_n, self.meta = vocab, gen, top_n, meta
        self.echoes = echoes
        self.token_lists = token_lists
        self.echo = echo
        self._frames: dict[int, Frames] = {}       # per choice: its plain text chunks

    def prompt_of(self, i: int) -> int:
        return i // self.gen.n

    def _logprobs(self, token_events, offset: int, with_prompt_of: int | None = None) -> dict:
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        if with_prompt_of is not None:
            for t in self.token_lists[with_prompt_of]:
                piece = self.vocab.piece(t).decode("utf-8", "replace")
                out["tokens"].append(piece)
                out["token_logprobs"].append(None)
                out["top_logprobs"].append(None)
                out["text_offset"].append(offset)
                offset += len(piece)
        for ev in token_events:
            entry = token_logprobs(self.vocab, ev.token, ev.probs, self.top_n, chosen=ev.prob)
            top = {t["token"]: t["logprob"] for t in entry["top_logprobs"]}
            top.setdefault(entry["token"], entry["logprob"])   # the chosen token is always listed
            out["tokens"].append(entry["token"])
            out["token_logprobs"].append(entry["logprob"])
            out["top_logprobs"].append(top)
            out["text_offset"].append(offset)
            offset += len(entry["token"])
        return out

    def response(self, choices: list[dict]) -> dict:
        out = []
        for i, c in enumerate(choices):
            p = self.prompt_of(i)
            lp = None
            if self.gen.logprobs:
                lp = self._logprobs(c["tokens"], 0, p if self.echo else None)
            out.append({"text": self.echoes[p] + c["text"], "index": i, "logprobs": lp,
                        "finish_reason": finish_reason(c["final"])})
        finals = [c["final"] for c in choices]
        return {**self.meta, "choices": out, "usage": usage_of(finals, self.gen.n),
                "timings": finals[0].timings}

    def _chunk_dict(self, choices: list, **extra) -> dict:
        return {**self.meta, "choices": choices, **extra}

    def _chunk(self, choices: list, **extra) -> bytes:
        return sse_data(self._chunk_dict(choices, **extra))

    def stream(self, events, include_usage: bool):
        finals: dict[int, FinalEvent | None] = {}     # choices arrive interleaved
        offsets: dict[int, int] = {}
        try:
            for i, batch in events:
                if i not in finals:
                    finals[i] = None
                    offsets[i] = 0
                    if self.echo:
                        yield self._text(i, self.echoes[self.prompt_of(i)], (), offsets,
                                         with_prompt=True)
                tokens = [ev for ev in batch if isinstance(ev, TokenEvent)]
                text = "".join(ev.text for ev in tokens)
                if text or (self.gen.logprobs and tokens):
                    yield self._text(i, text, tokens, offsets)
                final = next((ev for ev in batch if isinstance(ev, FinalEvent)), None)
                if final is None:
                    continue
                try:
                    raise_for_failure(final)
                except ApiError as exc:
                    yield sse_data(exc.body())
                    return
                finals[i] = final
                yield self._chunk([{"text": final.text, "index": i, "logprobs": None,
                                    "finish_reason": finish_reason(final)}], timings=final.timings)
            if include_usage:
                yield self._chunk([], usage=usage_of([finals[i] for i in sorted(finals)], self.gen.n))
            yield sse_done()
        finally:
            events.close()

    def _text(self, i: int, text: str, tokens, offsets: dict[int, int], with_prompt: bool = False) -> bytes:
        lp = None
        if self.gen.logprobs and (tokens or with_prompt):
            lp = self._logprobs(tokens, offsets[i], self.prompt_of(i) if with_prompt else None)
            offsets[i] += sum(len(t) for t in lp["tokens"])
        if lp is None:      # the plain text chunk: only the text is encoded (sse.Frames)
            frames = self._frames.get(i)
            if frames is None:
                frames = self._frames[i] = Frames(self._chunk_dict(
                    [{"text": "", "index": i, "logprobs": None, "finish_reason": None}]),
                    ("choices", 0, "text"))
            return frames.frame(text)
        return self._chunk([{"text": text, "index": i, "logprobs": lp, "finish_reason": None}])
