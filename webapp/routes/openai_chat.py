"""``POST /v1/chat/completions`` (and ``/chat/completions``), and ``POST /apply-template``.

The messages are validated (``normalize_messages``), rendered with the template the server
chose at startup (``state.chat_template``), and tokenized with special tokens parsed. When
the last message is the assistant's, its text is a prefill: the reply continues it.

Tool calls and reasoning go through the template's *chat format* (``webapp/chat_formats``,
detected once from the template): ``tools`` reach the template (or, for templates without
tool support, a system-message description: the generic format); ``tool_choice``
"required" or a named function constrains the output with a grammar built from the tools'
schemas, "auto" with a lazy grammar that starts at the format's call marker; the reply is
parsed into ``content``, ``reasoning_content`` and ``tool_calls``, streamed as deltas that
add up to the whole message. With ``n`` > 1 the choices generate together and a stream
interleaves their chunks as they come.

:class:`ChatCall` is the one entry point: the Anthropic Messages and OpenAI Responses
routes build an OpenAI chat body and read the same results.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Iterator

from flask import Blueprint, Response, jsonify, stream_with_context

from llama_lib.engine import FinalEvent, Status, TokenEvent

from ..chat_formats import ChatFormat, ChatMessage, FormatError, MessageStream, ParseOptions
from ..chat_formats.base import REASONING_FORMATS, GrammarPlan, arguments_json
from ..chat_formats.grammar import regex_escape
from ..chat_formats.stream import finalize_ids
from ..chat_formats.tools import parse_parallel, parse_tool_choice, parse_tools
from ..chat_template import ChatTemplateError, normalize_messages
from ..completion import json_body, raise_for_failure
from ..errors import ApiError, BadRequest
from ..media import chat_media
from ..media import tokenize as tokenize_media
from ..sse import Frames, sse_data, sse_done
from .openai import (Generation, check_known_fields, collect_choices, completion_id, finish_reason,
                     fingerprint, now, open_stream, parse_max_tokens, parse_n, response_model,
                     submit_choices, token_logprobs, top_logprobs_of, usage_of)

__all__ = ["make_blueprint", "ChatCall", "chat_setup", "response_format_schema", "stream_flags"]

KNOWN_FIELDS = frozenset({
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "stop",
    "n", "seed", "temperature", "top_p", "presence_penalty", "frequency_penalty", "logit_bias",
    "logprobs", "top_logprobs", "response_format", "user", "tools", "tool_choice",
    "parallel_tool_calls", "chat_template_kwargs", "reasoning_format", "reasoning_effort",
    "reasoning_budget_tokens", "thinking_budget_tokens", "enable_thinking",
})
# Template variables a request may not replace through chat_template_kwargs.
_RESERVED_VARS = frozenset({"messages", "add_generation_prompt", "tools", "bos_token", "eos_token"})
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def make_blueprint(state) -> Blueprint:
    bp = Blueprint("openai_chat", __name__)

    @bp.post("/v1/chat/completions")
    @bp.post("/chat/completions")
    def chat_completions():
        body = json_body()
        check_known_fields(body, KNOWN_FIELDS, "chat/completions")
        call = ChatCall(state, body)
        if not call.stream:
            return jsonify(call.response())
        return Response(stream_with_context(_sse(call.chunks(encoded=True))),
                        mimetype="text/event-stream", headers=SSE_HEADERS)

    @bp.post("/apply-template")
    def apply_template():
        engine = state.ready_engine()
        setup = chat_setup(state, engine.vocab, json_body(), tokenize=False)
        return jsonify({"prompt": setup.prompt})

    return bp


def _sse(chunks: Iterator[dict | bytes]):
    try:
        for chunk in chunks:
            yield chunk if isinstance(chunk, bytes) else sse_data(chunk)
    except ApiError as exc:
        yield sse_data(exc.body())
        return
    yield sse_done()


# --- the request ------------------------------------------------------------------------------

@dataclass
class ChatSetup:
    """Everything decided about a chat request before it is submitted."""
    prompt: str
    tokens: list[int]
    fmt: ChatFormat
    parse: ParseOptions
    grammar: GrammarPlan | None
    budget: int                 # reasoning tokens before the end marker is forced (-1: none)
    thinking_open: bool         # the prompt ends inside an opened reasoning block
    media: dict | None = None   # the prompt's images/audio by placeholder key (webapp/media.py)


def stream_flags(body: dict) -> tuple[bool, bool]:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object")
    include_usage = (options or {}).get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise BadRequest("'stream_options.include_usage' must be a boolean")
    return bool(stream), bool(include_usage)


def _template_kwargs(state, body: dict) -> dict:
    """--chat-template-kwargs, then --reasoning / --reasoning-effort, then the request's
    chat_template_kwargs and reasoning_effort (later wins)."""
    settings = state.settings
    merged = dict(state.template_kwargs)
    if settings.reasoning == "on":
        merged.setdefault("enable_thinking", True)
    elif settings.reasoning == "off":
        merged.setdefault("enable_thinking", False)
    if settings.reasoning_effort and settings.reasoning_effort != "default":
        merged.setdefault("reasoning_effort", settings.reasoning_effort)
    extra = body.get("chat_template_kwargs")
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise BadRequest("'chat_template_kwargs' must be an object")
    bad = sorted(k for k in extra if not k.isidentifier() or k in _RESERVED_VARS)
    if bad:
        raise BadRequest(f"'chat_template_kwargs' may not set {', '.join(bad)}")
    merged.update(extra)
    if "enable_thinking" in body:
        merged["enable_thinking"] = body["enable_thinking"]
    if "enable_thinking" in merged and not isinstance(merged["enable_thinking"], bool):
        raise BadRequest("'enable_thinking' must be a boolean (true or false), got "
                         f"{json.dumps(merged['enable_thinking'])}")
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in REASONING_EFFORTS:
            raise BadRequest(f"'reasoning_effort' must be one of {', '.join(REASONING_EFFORTS)}")
        merged["reasoning_effort"] = effort
    if merged.get("reasoning_effort") == "none":
        merged.pop("reasoning_effort")
        merged["enable_thinking"] = False
    return merged


def _reasoning_budget(state, body: dict) -> int:
    value = -1 if state.settings.reasoning_budget is None else state.settings.reasoning_budget
    for key in ("reasoning_budget_tokens", "thinking_budget_tokens"):
        v = body.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < -1:
            raise BadRequest(f"'{key}' must be an integer >= -1 (-1: no budget)")
        value = v
    return value


def _history(messages: list[dict], fmt: ChatFormat) -> list[dict]:
    """Past tool calls with their arguments as the template wants them (an object for most
    templates; OpenAI clients send a JSON string)."""
    for m in messages:
        calls = m.get("tool_calls")
        if not calls:
            continue
        out = []
        for j, call in enumerate(calls):
            fn = call.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise BadRequest(f"a tool call in the history needs 'function.name' (tool_calls[{j}])")
            args = fn.get("arguments", {})
            if isinstance(args, str):
                try:
                    parsed = json.loads(args) if args.strip() else {}
                except ValueError:
                    parsed = None
                if fmt.arguments_as_object and isinstance(parsed, dict):
                    args = parsed
            elif not isinstance(args, dict):
                raise BadRequest(f"tool_calls[{j}].function.arguments must be a JSON string or an object")
            elif not fmt.arguments_as_object:
                args = arguments_json(args)
            out.append({**call, "type": call.get("type", "function"),
                        "function": {**fn, "arguments": args}})
        m["tool_calls"] = out
    return messages


def _single_token(vocab):
    def single(text: str) -> bool:
        return len(vocab.tokenize(text, add_special=False, parse_special=True)) == 1
    return single


def _after_reasoning(plan: GrammarPlan, end: str) -> GrammarPlan:
    """A full grammar for a prompt that opened a reasoning block: let the model think, then
    constrain from the end marker on (the grammar starts with it)."""
    if plan.lazy:
        return plan
    gbnf = plan.gbnf.replace("root ::=", "call-root ::=", 1)
    from ..chat_formats.grammar import lit
    gbnf = f'root ::= {lit(end)} ws-after-reasoning call-root\nws-after-reasoning ::= [ \\t\\n]{{0,4}}\n' + gbnf
    return GrammarPlan(gbnf, lazy=True, trigger_patterns=["(" + regex_escape(end) + ")"])


def chat_setup(state, vocab, body: dict, tokenize: bool = True) -> ChatSetup:
    template = state.chat_template
    try:
        messages = normalize_messages(body.get("messages"))
    except ChatTemplateError as exc:
        raise BadRequest(str(exc)) from None
    fmt = state.chat_format
    try:
        tools = parse_tools(body.get("tools"))
        choice = parse_tool_choice(body.get("tool_choice"), tools)
        # a named function is called once (as OpenAI does); "required" allows several calls
        parallel = parse_parallel(body.get("parallel_tool_calls")) and choice.mode != "named"
    except FormatError as exc:
        raise BadRequest(str(exc)) from None
    reasoning_format = body.get("reasoning_format", state.settings.reasoning_format or "auto")
    if reasoning_format not in REASONING_FORMATS:
        raise BadRequest(f"'reasoning_format' must be one of {', '.join(REASONING_FORMATS)}")
    calling = bool(tools) and choice.mode != "none"
    if calling and any(body.get(k) is not None for k in ("grammar", "json_schema")):
        raise BadRequest("'tools' cannot be combined with 'grammar' or 'json_schema'; "
                         "use tool_choice \"none\" or leave the grammar out")
    if calling and response_format_schema(body) is not None:
        raise BadRequest("'tools' cannot be combined with a JSON 'response_format'")
    kwargs = _template_kwargs(state, body)
    messages = _history(messages, fmt)
    prefill = ""
    if messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls"):
        prefill = messages.pop()["content"]
    tool_dicts = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                     "parameters": t.parameters}} for t in tools]
    template_tools = tool_dicts if calling else None
    prepare = getattr(fmt, "prepare_messages", None)
    if prepare is not None and getattr(fmt, "describes_tools", False):
        messages = prepare(messages, tools if calling else [], choice)
        template_tools = None
    try:
        text = template.render(messages, add_generation_prompt=True, tools=template_tools, **kwargs)
    except ChatTemplateError as exc:
        if not getattr(fmt, "describes_tools", False) or messages[0]["role"] != "system":
            raise BadRequest(str(exc)) from None
        # a template that refuses the system role (Gemma 2) gets the tools' description in
        # front of the first user message instead
        from ..chat_formats.generic import fold_system_message
        try:
            text = template.render(fold_system_message(messages), add_generation_prompt=True,
                                   tools=None, **kwargs)
        except ChatTemplateError:
            raise BadRequest(str(exc)) from None
    prompt = text + prefill
    start = fmt.reasoning_start
    thinking_open = bool(start) and not prefill and text.rstrip().endswith(start)
    if prefill and start and start in prefill and fmt.reasoning_end not in prefill:
        thinking_open = True
    parse = ParseOptions(reasoning_format=reasoning_format, thinking_forced_open=thinking_open,
                         parse_tool_calls=calling, tool_names=frozenset(t.name for t in tools))
    parse = _with_schemas(parse, tools)
    grammar = None
    if calling:
        try:
            grammar = fmt.tool_grammar(tools, choice, parallel, _single_token(vocab))
        except FormatError as exc:
            raise BadRequest(str(exc)) from None
        if grammar is not None and thinking_open and fmt.reasoning_end:
            grammar = _after_reasoning(grammar, fmt.reasoning_end)
    tokens: list[int] = []
    if tokenize:
        # The template may write BOS itself; then the tokenizer must not add another.
        has_bos = bool(template.bos_token) and prompt.startswith(template.bos_token)
        tokens = vocab.tokenize(prompt, add_special=not has_bos, parse_special=True)
    return ChatSetup(prompt, tokens, fmt, parse, grammar, _reasoning_budget(state, body), thinking_open)


def _setup_with_media(state, engine, body: dict) -> ChatSetup:
    """chat_setup, with image and audio parts read and the prompt tokenized by libmtmd."""
    body, files, names = chat_media(engine, state.settings, body)
    setup = chat_setup(state, engine.vocab, body, tokenize=not files)
    if not files:
        return setup
    template = state.chat_template
    has_bos = bool(template.bos_token) and setup.prompt.startswith(template.bos_token)
    got = tokenize_media(engine, setup.prompt, files, names, add_special=not has_bos)
    return dataclasses.replace(setup, tokens=got.tokens, media=got.media)


def _with_schemas(parse: ParseOptions, tools) -> ParseOptions:
    if "tool_schemas" in {f.name for f in dataclasses.fields(ParseOptions)}:
        return dataclasses.replace(parse, tool_schemas={t.name: t.parameters for t in tools})
    return parse


def response_format_schema(body: dict):
    """The JSON Schema that ``response_format`` asks for, or None for free text."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise BadRequest("'response_format' must be an object")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = fmt.get("schema", {"type": "object"})
    elif kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise BadRequest("'response_format.json_schema' must be an object with a 'schema'")
        schema = spec.get("schema", {})
    else:
        raise BadRequest("'response_format.type' must be 'text', 'json_object' or 'json_schema'")
    if not isinstance(schema, (dict, bool)):
        raise BadRequest("the schema in 'response_format' must be a JSON Schema object")
    return schema


def _grammar_fields(plan: GrammarPlan, vocab) -> dict:
    """The sampling fields of a grammar plan: trigger words that are one token become
    trigger tokens, the others patterns."""
    patterns = list(plan.trigger_patterns)
    tokens: list[int] = []
    for word in plan.trigger_words:
        ids = vocab.tokenize(word, add_special=False, parse_special=True)
        if len(ids) == 1:
            tokens.append(ids[0])
        else:
            patterns.append("(" + regex_escape(word) + ")")
    return {"grammar": plan.gbnf, "grammar_lazy": plan.lazy,
            "grammar_trigger_patterns": tuple(patterns), "grammar_trigger_tokens": tuple(tokens)}


class ChatCall:
    """One chat completion request, validated and built (not yet submitted).

    ``response()`` runs it and returns the OpenAI ``chat.completion`` object; ``chunks()``
    runs it streamed and yields ``chat.completion.chunk`` objects (an ApiError raised from
    it after the first chunk means the stream must end with that error)."""

    def __init__(self, state, body: dict):
        engine = state.ready_engine()
        self.state, self.engine, self.body = state, engine, body
        self.vocab = engine.vocab
        self.setup = setup = _setup_with_media(state, engine, body)
        self.stream, self.include_usage = stream_flags(body)
        logprobs = body.get("logprobs")
        if logprobs is not None and not isinstance(logprobs, bool):
            raise BadRequest("'logprobs' must be a boolean")
        self.top_n = top_logprobs_of(body)
        if body.get("top_logprobs") is not None and not logprobs:
            raise BadRequest("'top_logprobs' needs 'logprobs': true")
        grammar = _grammar_fields(setup.grammar, engine.vocab) if setup.grammar else None
        self.gen = Generation(n=parse_n(body, engine),
                              n_predict=parse_max_tokens(body, "max_completion_tokens", "max_tokens"),
                              logprobs=bool(logprobs), stream=self.stream,
                              json_schema=response_format_schema(body), grammar=grammar,
                              special=setup.fmt.needs_special_tokens,
                              wrap_sampler=self._budget_wrapper())
        self.requests = submit_choices(state, engine, body, [setup.tokens], self.gen,
                                       media=[setup.media])
        # each choice's final event once it is known (the translating routes read stop words)
        self.finals: list[FinalEvent | None] = [None] * self.gen.n
        self.meta = {"id": completion_id("chatcmpl"), "created": now(),
                     "model": response_model(body, state), "system_fingerprint": fingerprint()}

    def _budget_wrapper(self):
        setup = self.setup
        fmt = setup.fmt
        if setup.budget < 0 or not fmt.reasoning_start or not fmt.reasoning_end:
            return None
        from sampling.budget import ReasoningBudget
        vocab = self.vocab

        def wrap(sampler):
            return ReasoningBudget(sampler, vocab, fmt.reasoning_start, fmt.reasoning_end,
                                   setup.budget, setup.thinking_open)
        return wrap

    # --- whole answers -----------------------------------------------------------------
    def message(self, text: str) -> ChatMessage:
        return finalize_ids(self.setup.fmt.parse(text, False, self.setup.parse), fmt=self.setup.fmt)

    def response(self) -> dict:
        choices = collect_choices(self.engine, self.requests)
        finals = [c["final"] for c in choices]
        self.finals = finals
        out = []
        for i, c in enumerate(choices):
            msg = self.message(c["text"])
            out.append({
                "index": i,
                "message": message_dict(msg),
                "logprobs": self._logprobs(c["tokens"]) if self.gen.logprobs else None,
                "finish_reason": chat_finish_reason(c["final"], msg),
            })
        return {"id": self.meta["id"], "object": "chat.completion", "created": self.meta["created"],
                "model": self.meta["model"], "system_fingerprint": self.meta["system_fingerprint"],
                "choices": out, "usage": usage_of(finals, self.gen.n), "timings": finals[0].timings}

    def _logprobs(self, token_events) -> dict:
        return {"content": [token_logprobs(self.vocab, ev.token, ev.probs, self.top_n, chosen=ev.prob)
                            for ev in token_events]}

    # --- streams -----------------------------------------------------------------------
    def _chunk(self, choices: list, **extra) -> dict:
        m = self.meta
        return {"id": m["id"], "object": "chat.completion.chunk", "created": m["created"],
                "model": m["model"], "system_fingerprint": m["system_fingerprint"],
                "choices": choices, **extra}

    def chunks(self, encoded: bool = False) -> Iterator[dict | bytes]:
        """The stream's chunks as dicts; ``encoded``: the plain text deltas (content or
        reasoning, no logprobs) come as their SSE frames already, each encoding only its
        text over bytes made once per choice and field (sse.Frames)."""
        events = open_stream(self.engine, self.requests)
        setup = self.setup
        streams: dict[int, MessageStream] = {}
        texts: dict[int, list[str]] = {}
        finals: dict[int, FinalEvent | None] = {}       # choices arrive interleaved
        frames: dict[tuple[int, str], Frames] = {}

        def text_frame(i: int, field: str, text: str) -> bytes:
            f = frames.get((i, field))
            if f is None:
                f = frames[(i, field)] = Frames(self._chunk([{
                    "index": i, "delta": {field: ""}, "logprobs": None, "finish_reason": None}]),
                    ("choices", 0, "delta", field))
            return f.frame(text)

        def deltas(i, found, token_events=()):
            lp = self._logprobs(token_events) if self.gen.logprobs and token_events else None
            if not found and lp is not None:
                found = [{"content": ""}]
            for k, d in enumerate(found):
                if encoded and lp is None and len(d) == 1:
                    field, text = next(iter(d.items()))
                    if field in ("content", "reasoning_content") and isinstance(text, str):
                        yield text_frame(i, field, text)
                        continue
                yield self._chunk([{"index": i, "delta": d, "logprobs": lp if k == 0 else None,
                                    "finish_reason": None}])
        try:
            for i, batch in events:
                if i not in finals:
                    finals[i] = None
                    streams[i] = MessageStream(setup.fmt, setup.parse)
                    texts[i] = []
                    yield self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}])
                tokens = [ev for ev in batch if isinstance(ev, TokenEvent)]
                piece = "".join(ev.text for ev in tokens)
                if piece:
                    texts[i].append(piece)
                if piece or (self.gen.logprobs and tokens):
                    found = streams[i].push("".join(texts[i])) if piece else []
                    yield from deltas(i, found, tokens)
                final = next((ev for ev in batch if isinstance(ev, FinalEvent)), None)
                if final is None:
                    continue
                raise_for_failure(final)
                texts[i].append(final.text)
                found, msg = streams[i].finish("".join(texts[i]))
                yield from deltas(i, found)
                finals[i] = final
                self.finals[i] = final
                yield self._chunk([{"index": i, "delta": {}, "logprobs": None,
                                    "finish_reason": chat_finish_reason(final, msg)}],
                                  timings=final.timings)
            if self.include_usage:
                yield self._chunk([], usage=usage_of([finals[i] for i in sorted(finals)], self.gen.n))
        finally:
            events.close()


def message_dict(msg: ChatMessage) -> dict:
    out: dict = {"role": "assistant", "content": msg.content}
    if msg.reasoning_content:
        out["reasoning_content"] = msg.reasoning_content
    if msg.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": c.arguments}}
                             for c in msg.tool_calls]
    return out


def chat_finish_reason(final: FinalEvent, msg: ChatMessage) -> str:
    if msg.tool_calls and final.status in (Status.FINISHED_EOS, Status.FINISHED_STOP,
                                           Status.FINISHED_GRAMMAR):
        return "tool_calls"
    return finish_reason(final)
