"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /openapi.json``.

The document is built from tables: one row per request field (name, JSON Schema,
description), a few named response shapes, and one row per operation (method, paths,
request body, success answer, error statuses). It depends on the settings only where the
routes do: ``--path`` adds the ``GET /{name}`` file route, and API keys add the security
schemes and 401 answers. ``tests/unit/test_openapi.py`` validates it against the OpenAPI 3.1
meta-schema and compares its (path, method) pairs with the routes the app registers;
``tests/integration/test_fuzz.py`` sends requests generated from it to the real server.

Left out on purpose: HEAD (Flask answers it for every GET route) and OPTIONS (the CORS
middleware answers it on every path, before routing). Router mode (``webapp/router``) is
another app: it proxies the operations below that need a model (so a route added here is
proxied there too) and has routes of its own (``/models/load``, ``/models/unload``),
described in docs/server.md, not here.

Request schemas describe what the routes accept, not a wish list: where a route treats
``null`` as "not given", the field is nullable; token ids are integers >= 0 (the upper
bound is the model's vocabulary, checked by the route: a 400). Fields a route does not
know are ignored, so no request object forbids additional properties.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from importlib import metadata

from llama_lib.engine import FinishReason
from sampling.params import INT32_MAX, INT32_MIN, SAMPLER_NAMES

from .errors import STATUS_OF_TYPE

__all__ = ["build_openapi", "Operation", "OPERATIONS", "SAMPLING_FIELDS", "OPENAPI_VERSION"]

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
SSE = "text/event-stream"


# --- JSON Schema helpers ------------------------------------------------------------------

STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
NULL = {"type": "null"}
OBJECT = {"type": "object"}
ANY: dict = {}


def integer(lo: int | None = None, hi: int | None = None) -> dict:
    schema = {"type": "integer"}
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    return schema


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict:
    schema = {"type": "number"}
    if lo is not None:
        schema["exclusiveMinimum" if lo_open else "minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    return schema


def array(items: dict, min_items: int = 0) -> dict:
    schema = {"type": "array", "items": items}
    if min_items:
        schema["minItems"] = min_items
    return schema


def any_of(*schemas: dict) -> dict:
    return {"anyOf": list(schemas)}


def const(value) -> dict:
    return {"const": value}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def fields(rows, *, required=(), nullable: bool = False) -> dict:
    """An object schema from (name, schema, description) rows. ``nullable``: the route takes
    null for "not given" in every optional field."""
    props = {}
    for name, schema, description in rows:
        if nullable and name not in required:
            schema = any_of(schema, NULL)
        props[name] = dict(schema, description=description) if description else schema
    out = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    return out


def rows_of(*tables) -> list:
    """Concatenate field tables; a later row replaces an earlier one of the same name."""
    merged = {}
    for table in tables:
        for row in table:
            merged[row[0]] = row
    return list(merged.values())


def without(table, *names: str) -> list:
    return [row for row in table if row[0] not in names]


# --- request fields -----------------------------------------------------------------------

TOKEN = integer(0)
TEXT_AND_TOKENS = array(any_of(STRING, TOKEN))
PIECES = any_of(STRING, TEXT_AND_TOKENS)
# --mmproj: llama-server's multimodal prompt object, one media marker (/props) per file
MULTIMODAL_PROMPT = fields([("prompt_string", STRING, "the text, with the media marker where each file goes"),
                            ("multimodal_data", array(STRING), "base64 image or audio files, in marker order")],
                           required=["prompt_string"])
PROMPT = any_of(STRING, TEXT_AND_TOKENS, MULTIMODAL_PROMPT, array(any_of(PIECES, MULTIMODAL_PROMPT)))
STOP = any_of(STRING, array(STRING))
BIAS = any_of(number(), const(False))
LOGIT_BIAS = any_of(
    array({"type": "array", "prefixItems": [any_of(TOKEN, STRING), BIAS], "minItems": 2, "maxItems": 2}),
    {"type": "object", "additionalProperties": BIAS})
SAMPLERS = any_of(array({"enum": sorted(SAMPLER_NAMES)}), STRING)
SCHEMA = any_of(OBJECT, BOOLEAN)
INT32 = integer(INT32_MIN, INT32_MAX)   # llama-server's int32_t fields


def int32(lo: int) -> dict:
    return integer(lo, INT32_MAX)


# The rows of sampling/params.py's FIELDS (test_openapi checks that none is missing).
SAMPLING_FIELDS = [
    ("temperature", number(), "sampling temperature (<= 0: greedy)"),
    ("temp", number(), "alias of temperature"),
    ("dynatemp_range", number(0), "dynamic temperature range (0: off)"),
    ("dynatemp_exponent", number(0), "dynamic temperature exponent"),
    ("top_k", INT32, "top-k (<= 0: off)"),
    ("top_p", number(0, 1), "top-p (1: off)"),
    ("min_p", number(0, 1), "min-p (0: off)"),
    ("tfs_z", number(0, 1), "tail-free sampling z (1: off)"),
    ("typical_p", number(0, 1), "locally typical p (1: off)"),
    ("repeat_penalty", number(0, lo_open=True), "repeat penalty (1: off)"),
    ("repeat_last_n", int32(-1), "tokens considered for penalties (0: off, -1: context)"),
    ("penalize_nl", BOOLEAN, "penalize newlines too"),
    ("presence_penalty", number(-2, 2), "presence penalty"),
    ("frequency_penalty", number(-2, 2), "frequency penalty"),
    ("penalty_prompt", any_of(STRING, array(INT32)), "text or tokens that count as already seen"),
    ("mirostat", integer(0, 2), "Mirostat mode (0: off)"),
    ("mirostat_tau", number(0), "Mirostat target entropy"),
    ("mirostat_eta", number(0), "Mirostat learning rate"),
    ("seed", integer(), "RNG seed (-1 or 4294967295: random; larger: its low 64 bits)"),
    ("logit_bias", LOGIT_BIAS, "[[token id or text, bias or false], ...] or {\"token id\": bias}"),
    ("n_probs", integer(0, 100), "top candidates to report per generated token"),
    ("min_keep", int32(0), "candidates every sampler keeps at least"),
    ("samplers", SAMPLERS, "sampler order: names, or one letter per stage"),
    ("dry_multiplier", number(0), "DRY multiplier (0: off)"),
    ("dry_base", number(1), "DRY base"),
    ("dry_allowed_length", int32(0), "DRY allowed length"),
    ("dry_penalty_last_n", int32(-1), "DRY window (-1: context)"),
    ("dry_sequence_breakers", array(STRING, 1), "DRY sequence breakers"),
    ("xtc_probability", number(0, 1), "XTC probability (0: off)"),
    ("xtc_threshold", number(0, 1), "XTC threshold"),
    ("top_n_sigma", number(), "top-n-sigma (< 0: off)"),
    ("ignore_eos", BOOLEAN, "keep generating after end of stream"),
]

# llama.cpp's own generation options, taken by every generation route.
GENERATION_FIELDS = [
    ("n_predict", integer(-1), "tokens to generate at most (-1: no limit; capped by -n)"),
    ("n_keep", integer(-1), "prompt tokens kept on context shift (-1: all)"),
    ("stop", STOP, "stop strings (never part of the output)"),
    ("stream", BOOLEAN, "answer with server-sent events"),
    ("cache_prompt", BOOLEAN, "reuse the longest common prefix of the slot's cache"),
    ("id_slot", integer(-1), "slot to use (-1: any idle slot)"),
    ("t_max_predict_ms", number(-1), "time limit for generation after the first newline (<= 0: none)"),
    ("n_discard", int32(0), "tokens a context shift drops after n_keep (0: half of the rest)"),
    ("post_sampling_probs", BOOLEAN, "n_probs reports the candidates the sampler chain kept (prob, "
                                     "top_probs) instead of the model's top n (logprob, top_logprobs)"),
    ("timings_per_token", BOOLEAN, "every streamed chunk carries the timings so far"),
    ("return_progress", BOOLEAN, "streams report prompt_progress {total, cache, processed, "
                                 "time_ms} while the prompt is evaluated"),
    ("lora", array(fields([("id", integer(0), None), ("scale", number(), None)])),
     "LoRA scales for this request only (adapters left out: 0; []: the server's)"),
    ("grammar", STRING, "GBNF grammar constraining the output"),
    ("json_schema", SCHEMA, "JSON Schema constraining the output (not with grammar)"),
]

SYSTEM_PROMPT = any_of(STRING, fields([
    ("prompt", STRING, None), ("anti_prompt", STRING, None), ("assistant_name", STRING, None),
    ("system_prompt", OBJECT, "the same three fields, wrapped"),
]))

COMPLETION_REQUEST = fields(rows_of(
    [("prompt", PROMPT, "a string, token ids and strings mixed, a multimodal prompt object, "
                        "or a list of such prompts"),
     ("image_data", array(fields([("data", STRING, "base64"), ("id", integer(), "[img-ID] in the prompt")])),
      "the seed's images (--mmproj): [img-ID] in a string prompt stands for the one with that id")],
    GENERATION_FIELDS, SAMPLING_FIELDS,
    [("system_prompt", SYSTEM_PROMPT, "replace the server-wide system prompt"),
     ("n_cmpl", integer(1), "completions per prompt, at most the slots (results indexed "
                            "prompt * n_cmpl + j; they share one prompt evaluation)"),
     ("n", integer(1), "alias of n_cmpl"),
     ("return_tokens", BOOLEAN, "put the generated token ids in the result's tokens (default false)"),
     ("response_fields", array(STRING), "keep only these keys of each result; a/b takes b of a, "
                                        "named a/b; missing ones are left out")],
), required=["prompt"], nullable=True)

INFILL_REQUEST = fields(rows_of(
    [("input_prefix", PIECES, "code before the cursor: text, or text and token ids"),
     ("input_suffix", PIECES, "code after the cursor"),
     ("input_extra", array(fields([("filename", STRING, "default: tmp"), ("text", STRING, None)],
                                  required=["text"])), "extra context chunks"),
     ("prompt", STRING, "start of the answer, placed after the middle token")],
    GENERATION_FIELDS, SAMPLING_FIELDS,
), required=["input_prefix", "input_suffix"], nullable=True)

TOKENIZE_REQUEST = fields([
    ("content", STRING, "text to tokenize (special tokens are parsed)"),
    ("add_special", BOOLEAN, "add BOS when the model asks for it"),
    ("with_pieces", BOOLEAN, "answer [{id, piece}] instead of ids"),
], required=["content"])

DETOKENIZE_REQUEST = fields([("tokens", array(TOKEN), "token ids (default: [])")])

# The OpenAI routes also take llama.cpp's options and every sampling field; n_probs is
# theirs to set (from logprobs), so a request's own is ignored.
NATIVE_EXTRAS = without(rows_of(GENERATION_FIELDS, SAMPLING_FIELDS), "n_probs", "stream",
                        "post_sampling_probs", "timings_per_token", "return_progress")
OPENAI_COMMON = [
    ("model", STRING, "echoed back; the server runs its one model"),
    ("stream", BOOLEAN, "answer with server-sent events, ending with data: [DONE]"),
    ("stream_options", fields([("include_usage", any_of(BOOLEAN, NULL), None)]), None),
    ("max_tokens", integer(0), "tokens to generate at most (n_predict wins)"),
    ("n", integer(1), "choices, one slot each (at most -np)"),
    ("user", STRING, "accepted and ignored"),
]

CONTENT = any_of(STRING, array(any_of(
    fields([("type", const("text"), None), ("text", STRING, None)], required=["type", "text"]),
    # --mmproj: a data:, http(s):// or file:// (under --media-path) URL, or base64
    fields([("type", const("image_url"), None),
            ("image_url", any_of(STRING, fields([("url", STRING, None)], required=["url"])), None)],
           required=["type", "image_url"]),
    fields([("type", const("input_audio"), None),
            ("input_audio", fields([("data", STRING, "base64"), ("format", {"enum": ["wav", "mp3", "flac"]}, None)],
                                   required=["data"]), None)],
           required=["type", "input_audio"]))))
MESSAGE_EXTRAS = [("name", STRING, None), ("tool_call_id", STRING, None),
                  ("tool_calls", array(OBJECT), None)]
MESSAGE = any_of(   # only an assistant message may leave out its content (e.g. it holds tool calls)
    fields([("role", {"enum": ["system", "user", "tool", "developer"]}, "developer is taken as system"),
            ("content", CONTENT, "text, or text parts (joined with newlines)")] + MESSAGE_EXTRAS,
           required=["role", "content"], nullable=True),
    fields([("role", const("assistant"), None), ("content", CONTENT, None)] + MESSAGE_EXTRAS,
           required=["role"], nullable=True))

RESPONSE_FORMAT = any_of(
    fields([("type", const("text"), None)], required=["type"]),
    fields([("type", const("json_object"), None), ("schema", SCHEMA, "default: any object")],
           required=["type"]),
    fields([("type", const("json_schema"), None),
            ("json_schema", fields([("name", STRING, None), ("schema", SCHEMA, None),
                                    ("strict", BOOLEAN, None)]), None)],
           required=["type", "json_schema"]),
)

CHAT_REQUEST = fields(rows_of(NATIVE_EXTRAS, OPENAI_COMMON, [
    ("messages", array(MESSAGE, 1), "the conversation; a last assistant message is a prefill"),
    ("max_completion_tokens", integer(0), "tokens to generate at most"),
    ("logprobs", BOOLEAN, "report log-probabilities of the generated tokens"),
    ("top_logprobs", integer(0, 20), "alternatives per token (needs logprobs)"),
    ("response_format", RESPONSE_FORMAT, "constrain the reply to JSON"),
    ("tools", array(fields([("type", const("function"), None),
                            ("function", fields([("name", STRING, None), ("description", STRING, None),
                                                 ("parameters", SCHEMA, "JSON Schema of the arguments")],
                                                required=["name"]), None)],
                           required=["function"])),
     "function tools: the model may call them (message.tool_calls)"),
    ("tool_choice", any_of({"enum": ["auto", "none", "required"]},
                           fields([("type", const("function"), None),
                                   ("function", fields([("name", STRING, None)], required=["name"]), None)],
                                  required=["type", "function"])),
     "auto (default with tools), none, required, or one named function (honoured)"),
    ("parallel_tool_calls", BOOLEAN, "allow several calls in one reply (default true)"),
    ("chat_template_kwargs", OBJECT, "extra chat template variables, merged over --chat-template-kwargs"),
    ("reasoning_format", {"enum": ["none", "deepseek", "deepseek-legacy", "auto"]},
     "where thoughts go (default: --reasoning-format)"),
    ("reasoning_effort", {"enum": ["none", "minimal", "low", "medium", "high", "xhigh", "max"]},
     "given to the template; none turns thinking off"),
    ("enable_thinking", BOOLEAN, "the template's enable_thinking"),
    ("reasoning_budget_tokens", integer(-1), "reasoning tokens before the end marker is forced"),
    ("thinking_budget_tokens", integer(-1), "the same as reasoning_budget_tokens"),
]), required=["messages"], nullable=True)

APPLY_TEMPLATE_REQUEST = fields([
    ("messages", array(MESSAGE, 1), "the conversation"),
    ("tools", array(OBJECT), "function tools, as in chat completions"),
    ("tool_choice", ANY, "as in chat completions"),
    ("chat_template_kwargs", OBJECT, "extra chat template variables"),
    ("reasoning_effort", STRING, "as in chat completions"),
], required=["messages"], nullable=True)

OPENAI_COMPLETION_REQUEST = fields(rows_of(NATIVE_EXTRAS, OPENAI_COMMON, [
    ("prompt", any_of(STRING, array(STRING, 1), array(TOKEN, 1), array(array(TOKEN, 1), 1),
                      MULTIMODAL_PROMPT, array(MULTIMODAL_PROMPT, 1)),
     "a string, strings (one choice each), token ids, lists of token ids, or multimodal prompt "
     "objects (--mmproj)"),
    ("logprobs", integer(0, 20), "legacy log-probabilities with this many alternatives"),
    ("echo", BOOLEAN, "put the prompt in front of each choice"),
    ("suffix", NULL, "not supported: any value is a 400"),
    ("best_of", const(1), "not supported beyond 1"),
]), required=["prompt"], nullable=True)

EMBED_INPUT = any_of(STRING, array(TOKEN, 1), array(PIECES, 1))
EMBD_NORMALIZE = ("embd_normalize", integer(-1),
                  "-1 none, 0 max-abs, 1 taxicab, 2 Euclidean (default), p: p-norm")
EMBEDDING_REQUEST = dict(fields([
    ("content", EMBED_INPUT, "one input (text or token ids) or a list of inputs"),
    ("input", EMBED_INPUT, "the same as content, used when content is absent"),
    EMBD_NORMALIZE,
]), anyOf=[{"required": ["content"]}, {"required": ["input"]}])
OPENAI_EMBEDDING_REQUEST = fields([
    ("input", EMBED_INPUT, "one input or a list of inputs"),
    ("model", any_of(STRING, NULL), None),
    ("encoding_format", any_of({"enum": ["float", "base64"]}, NULL), "default: float"),
    ("dimensions", NULL, "not supported: any value is a 400"),
    ("user", ANY, "accepted and ignored"),
    EMBD_NORMALIZE,
], required=["input"])

RERANK_REQUEST = dict(fields([
    ("query", STRING, "what the documents are scored against"),
    ("documents", any_of(array(STRING, 1), NULL), "the documents to score (Jina / Cohere style)"),
    ("texts", array(STRING, 1), "the same, Hugging Face TEI style: the answer is TEI's bare array"),
    ("top_n", any_of(integer(0), NULL), "keep the best N results (default: all)"),
    ("return_text", BOOLEAN, "TEI style only: add each document's text to its result"),
    ("model", any_of(STRING, NULL), "echoed in the answer (default: the server's model)"),
], required=["query"]), anyOf=[{"required": ["documents"]}, {"required": ["texts"]}])

# Anthropic's Messages API (routes/anthropic.py)
ANTHROPIC_TEXT = fields([("type", const("text"), None), ("text", STRING, None)], required=["type", "text"])
ANTHROPIC_BLOCK = fields([
    ("type", {"enum": ["text", "image", "thinking", "redacted_thinking", "tool_use", "tool_result"]},
     "thinking, redacted_thinking and tool_use on assistant turns; image and tool_result on user turns"),
    ("text", STRING, None), ("thinking", STRING, None), ("id", STRING, "tool_use"),
    ("name", STRING, "tool_use"), ("input", OBJECT, "tool_use"),
    ("tool_use_id", STRING, "tool_result: a tool_use id of an earlier assistant turn"),
    ("content", any_of(STRING, array(OBJECT)), "tool_result"), ("is_error", BOOLEAN, "tool_result"),
    ("source", OBJECT, "image: {type: base64, media_type, data} or {type: url, url}"),
], required=["type"])
ANTHROPIC_REQUEST = fields([
    ("model", STRING, "echoed back; the server runs its one model"),
    ("messages", array(fields([("role", {"enum": ["user", "assistant"]}, None),
                               ("content", any_of(STRING, array(ANTHROPIC_BLOCK)), None)],
                              required=["role", "content"]), 1),
     "the conversation; a last assistant turn is continued"),
    ("system", any_of(STRING, array(ANTHROPIC_TEXT)), "the system prompt"),
    ("max_tokens", integer(0), "tokens to generate at most (default 4096)"),
    ("stop_sequences", array(STRING), "strings that end the reply (stop_reason stop_sequence)"),
    ("stream", BOOLEAN, "answer with Anthropic's named server-sent events"),
    ("temperature", number(), None), ("top_p", number(0, 1), None), ("top_k", INT32, None),
    ("tools", array(fields([("name", STRING, None), ("description", STRING, None),
                            ("input_schema", OBJECT, "JSON Schema of the input"),
                            ("type", STRING, "a server tool's type: left out")], required=["name"])),
     "client tools the model may call (tool_use blocks)"),
    ("tool_choice", fields([("type", {"enum": ["auto", "any", "tool", "none"]}, None),
                            ("name", STRING, "with type tool"),
                            ("disable_parallel_tool_use", BOOLEAN, None)], required=["type"]),
     "any: some tool must be called; tool: that one"),
    ("thinking", fields([("type", {"enum": ["enabled", "adaptive", "disabled"]}, None),
                         ("budget_tokens", integer(0), "with enabled: thinking tokens before the "
                                                      "end of thinking is forced")], required=["type"]),
     "the template's enable_thinking, and a reasoning budget"),
    ("output_config", fields([("effort", STRING, "as reasoning_effort"),
                              ("format", fields([("type", const("json_schema"), None),
                                                 ("schema", OBJECT, None)]), "constrain the text to JSON")]),
     None),
    ("metadata", OBJECT, "accepted and ignored"),
    ("chat_template_kwargs", OBJECT, "llama.cpp's extension: extra chat template variables"),
], required=["messages"])
ANTHROPIC_COUNT_REQUEST = dict(ANTHROPIC_REQUEST, description="as POST /v1/messages; nothing is generated")

# OpenAI's Responses API (routes/responses.py)
RESPONSES_REQUEST = fields([
    ("model", STRING, "echoed back; the server runs its one model"),
    ("input", any_of(STRING, array(dict(OBJECT, description=(
        "a message {role, content}, a function_call, a function_call_output or a reasoning item")), 1)),
     "one user message, or the conversation as items"),
    ("instructions", STRING, "the system prompt"),
    ("max_output_tokens", integer(0), "tokens to generate at most"),
    ("temperature", number(), None), ("top_p", number(0, 1), None),
    ("stream", BOOLEAN, "answer with response.* server-sent events"),
    ("tools", array(fields([("type", STRING, "function (other types are left out)"),
                            ("name", STRING, None), ("description", STRING, None),
                            ("parameters", OBJECT, "JSON Schema of the arguments"),
                            ("strict", BOOLEAN, None)], required=["type"])), "function tools"),
    ("tool_choice", any_of({"enum": ["auto", "none", "required"]},
                           fields([("type", const("function"), None), ("name", STRING, None)],
                                  required=["type", "name"])), None),
    ("parallel_tool_calls", BOOLEAN, None),
    ("reasoning", fields([("effort", STRING, "as reasoning_effort")]), None),
    ("text", fields([("format", fields([("type", {"enum": ["text", "json_object", "json_schema"]}, None),
                                        ("schema", OBJECT, "with json_schema")], required=["type"]),
                      None)]), "constrain the reply to JSON"),
    ("store", BOOLEAN, "accepted; nothing is stored"),
    ("metadata", OBJECT, "echoed back"),
    ("previous_response_id", NULL, "not supported (stateless): any value is a 400"),
], required=["input"])

LORA_REQUEST = array(fields([("id", integer(0), "adapter index"), ("scale", number(), "new scale")],
                            required=["id", "scale"]))
SLOT_FILE_REQUEST = fields([("filename", STRING, "a plain file name in --slot-save-path")])


# --- response shapes (components/schemas) -------------------------------------------------

COUNT = integer(0)
TIMINGS = fields([(name, number(), None) for name in (
    "prompt_n", "prompt_ms", "prompt_per_token_ms", "prompt_per_second",
    "predicted_n", "predicted_ms", "predicted_per_token_ms", "predicted_per_second")] + [
    ("draft_n", COUNT, "speculative decoding: draft tokens verified (only once the request drafted)"),
    ("draft_n_accepted", COUNT, "speculative decoding: draft tokens accepted")])
USAGE = fields([("prompt_tokens", COUNT, None), ("completion_tokens", COUNT, None),
                ("total_tokens", COUNT, None),
                ("prompt_tokens_details", fields([("cached_tokens", COUNT, None)]), None)],
               required=["prompt_tokens", "completion_tokens", "total_tokens"])
PROB_ROWS = [("id", TOKEN, None), ("token", STRING, "its text (the valid UTF-8 part)"),
             ("bytes", array(integer(0, 255)), None),
             ("logprob", number(), "log-probability before sampling"),
             ("prob", number(0, 1), "with post_sampling_probs: the probability among the "
                                    "chain's candidates")]
PROBS = fields(PROB_ROWS + [
    ("top_logprobs", array(fields(PROB_ROWS)), "the model's top n_probs before sampling"),
    ("top_probs", array(fields(PROB_ROWS)), "with post_sampling_probs: the chain's top candidates"),
    ("content", STRING, "the seed's format: the token's text"),
    ("probs", array(fields([("tok_str", STRING, None), ("prob", number(0, 1), None)])),
     "the seed's format: the chain's top candidates")])
TOKEN_LOGPROB = fields([("token", STRING, None), ("logprob", number(), None),
                        ("bytes", array(integer(0, 255)), None), ("top_logprobs", array(OBJECT), None)])
NEXT_TOKEN = fields([("has_next_token", BOOLEAN, None), ("n_remain", integer(), None),
                     ("n_decoded", COUNT, None), ("stopped_eos", BOOLEAN, None),
                     ("stopped_word", BOOLEAN, None), ("stopped_limit", BOOLEAN, None),
                     ("stopping_word", STRING, None)])
SLOT_ROWS = [(name, integer(), None) for name in (
    "id", "id_task", "n_ctx", "state", "n_predict", "n_past", "n_cache_tokens", "n_prompt_tokens",
    "n_prompt_tokens_processed", "n_prompt_tokens_cache")] + [
    ("speculative", BOOLEAN, None), ("speculative.type", STRING, "the --spec-type in use (\"none\": off)"),
    ("is_processing", BOOLEAN, None), ("prompt", STRING, None),
    ("params", ref("GenerationSettings"), None), ("next_token", NEXT_TOKEN, None)]
COMPLETION_ROWS = [
    ("content", STRING, "the generated text"), ("index", COUNT, "the prompt's position"),
    ("tokens", array(TOKEN), "the generated token ids with return_tokens, else []"),
    ("id_slot", integer(), None), ("stop", const(True), None), ("model", STRING, None),
    ("prompt", STRING, None), ("generation_settings", ref("GenerationSettings"), None),
    ("tokens_predicted", COUNT, None), ("tokens_evaluated", COUNT, None),
    ("tokens_cached", COUNT, None), ("truncated", BOOLEAN, None), ("stopped_eos", BOOLEAN, None),
    ("stopped_word", BOOLEAN, None), ("stopped_limit", BOOLEAN, None),
    ("stopping_word", any_of(STRING, NULL), None), ("timings", ref("Timings"), None),
    ("completion_probabilities", array(PROBS), "with n_probs > 0"),
]
FINISH_REASON = {"enum": sorted(set(FinishReason.OPENAI.values()))}
CHOICE_META = [("index", COUNT, None), ("finish_reason", FINISH_REASON, None)]
OPENAI_META = [("id", STRING, None), ("created", integer(), None), ("model", STRING, None),
               ("system_fingerprint", STRING, None), ("usage", ref("Usage"), None),
               ("timings", ref("Timings"), None)]
LEGACY_LOGPROBS = fields([("tokens", array(STRING), None),
                          ("token_logprobs", array(any_of(number(), NULL)), None),
                          ("top_logprobs", array(any_of(OBJECT, NULL)), None),
                          ("text_offset", array(COUNT), None)])
MODEL_CARD = fields([
    ("id", STRING, None), ("aliases", array(STRING), "--alias"), ("tags", array(STRING), None),
    ("object", const("model"), None), ("created", integer(), None), ("owned_by", STRING, None),
    ("meta", fields([(name, integer(), None) for name in ("vocab_type", "n_vocab", "n_ctx",
                                                          "n_ctx_train", "n_embd", "n_params", "size")]
                    + [("ftype", STRING, "the file type, e.g. Q8_0")]), None),
], required=["id", "object"])
OLLAMA_MODEL = fields([("name", STRING, None), ("model", STRING, None),
                       ("capabilities", array(STRING), None), ("details", OBJECT, None)],
                      required=["name", "model"])
VECTOR = array(number())

SCHEMAS = {
    "Error": fields([("error", fields([
        ("code", integer(400, 599), "the HTTP status"),
        ("message", STRING, None),
        ("type", {"enum": sorted(STATUS_OF_TYPE)}, None),
    ], required=["code", "message", "type"]), None)], required=["error"]),
    "Timings": TIMINGS,
    "Usage": USAGE,
    "GenerationSettings": fields(
        [("n_ctx", integer(), None), ("model", STRING, None), ("n_predict", integer(), None),
         ("n_keep", integer(), None), ("stop", array(STRING), None), ("stream", BOOLEAN, None)]
        + [(name, ANY, None) for name, _s, _d in SAMPLING_FIELDS if name != "temp"]),
    "Slot": fields(SLOT_ROWS, required=["id", "is_processing"]),
    "Health": fields([("status", {"enum": ["ok", "no slot available"]}, None),
                      ("slots_idle", COUNT, None), ("slots_processing", COUNT, None),
                      ("slots", array(ref("Slot")), "with ?include_slots")],
                     required=["status", "slots_idle", "slots_processing"]),
    "Completion": fields(COMPLETION_ROWS, required=[
        "content", "stop", "model", "tokens_predicted", "tokens_evaluated", "generation_settings",
        "stopped_eos", "stopped_word", "stopped_limit", "truncated"]),
    "Props": fields([
        ("default_generation_settings", fields([
            ("params", ref("GenerationSettings"), "the defaults of a generation request"),
            ("n_ctx", COUNT, "a slot's context")], required=["params", "n_ctx"]),
         "llama-server's shape; the seed's flat GenerationSettings fields too"),
        ("total_slots", COUNT, None), ("model_path", any_of(STRING, NULL), None),
        ("model_alias", STRING, None), ("model_ftype", STRING, None),
        ("modalities", fields([(m, BOOLEAN, None) for m in ("vision", "video", "audio")]), None),
        ("media_marker", STRING, None), ("endpoint_slots", BOOLEAN, None),
        ("endpoint_props", BOOLEAN, None), ("endpoint_metrics", BOOLEAN, None),
        ("ui", BOOLEAN, None), ("ui_settings", OBJECT, None), ("chat_template", STRING, None),
        ("chat_template_caps", {"type": "object", "additionalProperties": BOOLEAN},
         "supports_tools, supports_system_role, ... from probe renders"),
        ("bos_token", STRING, None), ("eos_token", STRING, None), ("build_info", STRING, None),
        ("is_sleeping", BOOLEAN, "the model is unloaded (--sleep-idle-seconds)"),
        ("cors_proxy_enabled", BOOLEAN, None), ("system_prompt", STRING, None),
        ("assistant_name", STRING, None), ("user_name", STRING, None), ("n_ctx", COUNT, None),
    ], required=["default_generation_settings", "total_slots", "n_ctx", "is_sleeping"]),
    "SelectedFields": dict(OBJECT, description="a result shaped by response_fields"),
    "Tokenized": fields([("tokens", array(any_of(TOKEN, fields([
        ("id", TOKEN, None), ("piece", any_of(STRING, array(integer(0, 255))), None)],
        required=["id", "piece"]))), None)], required=["tokens"]),
    "Detokenized": fields([("content", STRING, None)], required=["content"]),
    "Model": MODEL_CARD,
    "ModelList": fields([("models", array(OLLAMA_MODEL), "Ollama's shape"),
                         ("object", const("list"), None), ("data", array(ref("Model")), None)],
                        required=["object", "data"]),
    "ChatCompletion": fields(OPENAI_META + [
        ("object", const("chat.completion"), None),
        ("choices", array(fields(CHOICE_META + [
            ("message", fields([("role", const("assistant"), None), ("content", STRING, None),
                                ("reasoning_content", STRING, "the model's thoughts (reasoning formats)"),
                                ("tool_calls", array(fields([
                                    ("id", STRING, None), ("type", const("function"), None),
                                    ("function", fields([("name", STRING, None),
                                                         ("arguments", STRING, "a JSON object, as text")]),
                                     None)])), None)]), None),
            ("logprobs", any_of(fields([("content", array(TOKEN_LOGPROB), None)]), NULL), None)],
            required=["index", "message", "finish_reason"])), None),
    ], required=["id", "object", "created", "model", "choices", "usage"]),
    "TextCompletion": fields(OPENAI_META + [
        ("object", const("text_completion"), None),
        ("choices", array(fields(CHOICE_META + [
            ("text", STRING, None), ("logprobs", any_of(LEGACY_LOGPROBS, NULL), None)],
            required=["index", "text", "finish_reason"])), None),
    ], required=["id", "object", "created", "model", "choices", "usage"]),
    "Embedding": any_of(
        fields([("embedding", any_of(VECTOR, array(VECTOR)), "per token with --pooling none")],
               required=["embedding"]),
        array(fields([("index", COUNT, None), ("embedding", any_of(VECTOR, array(VECTOR)), None)],
                     required=["index", "embedding"]))),
    "EmbeddingList": fields([
        ("object", const("list"), None), ("model", STRING, None),
        ("data", array(fields([("object", const("embedding"), None), ("index", COUNT, None),
                               ("embedding", any_of(VECTOR, STRING), "a base64 string with "
                                                                     "encoding_format base64")],
                              required=["object", "index", "embedding"])), None),
        ("usage", fields([("prompt_tokens", COUNT, None), ("total_tokens", COUNT, None)]), None),
    ], required=["object", "data", "model", "usage"]),
    "RerankList": fields([
        ("model", STRING, None), ("object", const("list"), None),
        ("usage", fields([("prompt_tokens", COUNT, None), ("total_tokens", COUNT, None)]), None),
        ("results", array(fields([("index", COUNT, "the document's position in the request"),
                                  ("relevance_score", number(), None)],
                                 required=["index", "relevance_score"])), "best first"),
    ], required=["model", "object", "usage", "results"]),
    "TeiRanks": array(fields([("index", COUNT, None), ("score", number(), None),
                              ("text", STRING, "with return_text")], required=["index", "score"])),
    "ErrorAnthropic": fields([
        ("type", const("error"), None),
        ("error", fields([("type", STRING, "invalid_request_error, authentication_error, api_error, "
                                           "overloaded_error..."),
                          ("message", STRING, None), ("code", integer(400, 599), "the HTTP status")],
                         required=["type", "message"]), None),
        ("request_id", STRING, None)], required=["type", "error"]),
    "AnthropicMessage": fields([
        ("id", STRING, None), ("type", const("message"), None), ("role", const("assistant"), None),
        ("model", STRING, None),
        ("content", array(fields([("type", {"enum": ["thinking", "text", "tool_use"]}, None)],
                                 required=["type"])), "thinking, then text, then tool_use blocks"),
        ("stop_reason", {"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use"]}, None),
        ("stop_sequence", any_of(STRING, NULL), None),
        ("usage", fields([(name, COUNT, None) for name in (
            "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")],
            required=["input_tokens", "output_tokens"]), None),
    ], required=["id", "type", "role", "content", "stop_reason", "usage"]),
    "Response": fields([
        ("id", STRING, None), ("object", const("response"), None), ("created_at", integer(), None),
        ("status", {"enum": ["completed", "incomplete"]}, None), ("model", STRING, None),
        ("output", array(fields([("type", {"enum": ["reasoning", "message", "function_call"]}, None),
                                 ("id", STRING, None)], required=["type", "id"])), None),
        ("incomplete_details", any_of(fields([("reason", STRING, None)]), NULL), None),
        ("usage", fields([("input_tokens", COUNT, None), ("output_tokens", COUNT, None),
                          ("total_tokens", COUNT, None)]), None),
    ], required=["id", "object", "created_at", "status", "model", "output"]),
    "SlotAction": any_of(
        fields([("id_slot", COUNT, None), ("filename", STRING, None), ("n_saved", COUNT, None),
                ("n_written", COUNT, None), ("timings", OBJECT, None)], required=["n_saved"]),
        fields([("id_slot", COUNT, None), ("filename", STRING, None), ("n_restored", COUNT, None),
                ("n_read", COUNT, None), ("timings", OBJECT, None)], required=["n_restored"]),
        fields([("id_slot", COUNT, None), ("n_erased", COUNT, None)], required=["n_erased"])),
    "LoraAdapter": fields([("id", COUNT, None), ("path", STRING, None), ("scale", number(), None)],
                          required=["id", "path", "scale"]),
    "Success": fields([("success", const(True), None)], required=["success"]),
}


# --- operations ---------------------------------------------------------------------------

def json_answer(schema: dict, stream: bool = False) -> dict:
    """media type -> schema of a 200 answer; ``stream``: also server-sent events."""
    out = {JSON: schema}
    if stream:
        out[SSE] = None   # data: {json} events (docs/server.md); OpenAPI 3.1 cannot describe them
    return out


def query(name: str, schema: dict, description: str, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


def path_param(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": STRING, "description": description}


FLAG = STRING   # a query flag: given (any value but "", "0" or "false" for fail_on_no_slot) or not
FILE = {"*/*": ANY}
ENGINE = (500, 503)     # the model failed to load (500); loading or shutting down (503)


@dataclass(frozen=True)
class Operation:
    method: str
    paths: tuple[str, ...]
    summary: str
    answer: dict                     # media type -> schema of the 200 answer (None: not described)
    body: dict | None = None         # JSON request body
    body_required: bool = True
    params: tuple[dict, ...] = ()
    errors: tuple[int, ...] = ()     # statuses answered in the error shape
    public: bool = False             # needs no API key
    tag: str = "native"
    when: str | None = None          # the settings attribute that adds this route
    error_schema: str = "Error"      # the components/schemas entry of its error answers


OPERATIONS = [
    Operation("get", ("/health", "/v1/health"), "Server health", json_answer(ref("Health")),
              params=(query("fail_on_no_slot", FLAG, "503 with status 'no slot available' when every "
                            "slot is busy (the Health shape, not an error)"),
                      query("include_slots", FLAG, "add the slots")),
              errors=ENGINE, public=True),
    Operation("post", ("/completion", "/completions"), "Complete a prompt (llama.cpp's API)",
              json_answer(any_of(ref("Completion"), array(ref("Completion")), ref("SelectedFields"),
                                 array(ref("SelectedFields"))), stream=True),
              body=COMPLETION_REQUEST, errors=(400,) + ENGINE),
    Operation("post", ("/tokenize",), "Tokenize text", json_answer(ref("Tokenized")),
              body=TOKENIZE_REQUEST, errors=(400,) + ENGINE),
    Operation("post", ("/detokenize",), "Turn token ids into text", json_answer(ref("Detokenized")),
              body=DETOKENIZE_REQUEST, errors=(400,) + ENGINE),
    Operation("get", ("/props",), "Server properties", json_answer(ref("Props")), errors=ENGINE),
    Operation("post", ("/props",), "Change server properties (with --props)",
              json_answer(ref("Success")), body=OBJECT, errors=(400, 501) + ENGINE),
    Operation("post", ("/infill",), "Fill in the middle (code models)",
              json_answer(ref("Completion"), stream=True), body=INFILL_REQUEST,
              errors=(400, 501) + ENGINE),
    Operation("get", ("/v1/models", "/models"), "The model", json_answer(ref("ModelList")),
              errors=ENGINE, tag="openai"),
    Operation("get", ("/v1/models/{model}", "/models/{model}"), "The model, by id",
              json_answer(ref("Model")), params=(path_param("model", "the model id"),),
              errors=(404,) + ENGINE, tag="openai"),
    Operation("post", ("/v1/chat/completions", "/chat/completions"), "Chat completion",
              json_answer(ref("ChatCompletion"), stream=True), body=CHAT_REQUEST,
              errors=(400, 501) + ENGINE, tag="openai"),
    Operation("post", ("/apply-template",), "Render a chat as the prompt the model would get",
              json_answer(fields([("prompt", STRING, None)], required=["prompt"])),
              body=APPLY_TEMPLATE_REQUEST, errors=(400,) + ENGINE),
    Operation("post", ("/v1/messages",), "Anthropic Messages API",
              json_answer(ref("AnthropicMessage"), stream=True), body=ANTHROPIC_REQUEST,
              errors=(400, 501) + ENGINE, tag="anthropic", error_schema="ErrorAnthropic"),
    Operation("post", ("/v1/messages/count_tokens",), "Anthropic Messages API: count a prompt's tokens",
              json_answer(fields([("input_tokens", COUNT, None)], required=["input_tokens"])),
              body=ANTHROPIC_COUNT_REQUEST, errors=(400, 501) + ENGINE, tag="anthropic",
              error_schema="ErrorAnthropic"),
    Operation("post", ("/v1/responses", "/responses"), "OpenAI Responses API (stateless)",
              json_answer(ref("Response"), stream=True), body=RESPONSES_REQUEST,
              errors=(400, 501) + ENGINE, tag="openai"),
    Operation("post", ("/v1/responses/input_tokens", "/responses/input_tokens"),
              "OpenAI Responses API: count a prompt's tokens",
              json_answer(fields([("object", const("response.input_tokens"), None),
                                  ("input_tokens", COUNT, None)], required=["object", "input_tokens"])),
              body=RESPONSES_REQUEST, errors=(400, 501) + ENGINE, tag="openai"),
    Operation("post", ("/v1/completions",), "Text completion (OpenAI's legacy API)",
              json_answer(ref("TextCompletion"), stream=True), body=OPENAI_COMPLETION_REQUEST,
              errors=(400, 501) + ENGINE, tag="openai"),
    Operation("post", ("/v1/embeddings",), "Embeddings (with --embeddings)",
              json_answer(ref("EmbeddingList")), body=OPENAI_EMBEDDING_REQUEST,
              errors=(400, 501) + ENGINE, tag="openai"),
    Operation("post", ("/embedding", "/embeddings"), "Embeddings, llama.cpp's shape (with --embeddings)",
              json_answer(ref("Embedding")), body=EMBEDDING_REQUEST, errors=(400, 501) + ENGINE),
    Operation("post", ("/rerank", "/reranking", "/v1/rerank", "/v1/reranking"),
              "Score documents against a query (with --reranking)",
              json_answer(any_of(ref("RerankList"), ref("TeiRanks"))), body=RERANK_REQUEST,
              errors=(400, 501) + ENGINE),
    Operation("get", ("/slots",), "The slots", json_answer(array(ref("Slot"))),
              params=(query("fail_on_no_slot", FLAG, "503 when no slot is idle"),),
              errors=(501,) + ENGINE, tag="operations"),
    Operation("post", ("/slots/{id_slot}",), "Save, restore or erase a slot (with --slot-save-path)",
              json_answer(ref("SlotAction")), body=SLOT_FILE_REQUEST, body_required=False,
              params=(path_param("id_slot", "a slot number"),
                      query("action", {"enum": ["save", "restore", "erase"]}, "what to do", True)),
              errors=(400, 501) + ENGINE, tag="operations"),
    Operation("get", ("/metrics",), "Prometheus metrics (with --metrics)",
              {"text/plain": dict(STRING, description="text format 0.0.4")},
              errors=(501,) + ENGINE, tag="operations"),
    Operation("get", ("/lora-adapters",), "The LoRA adapters", json_answer(array(ref("LoraAdapter"))),
              errors=ENGINE, tag="operations"),
    Operation("post", ("/lora-adapters",), "Set the LoRA adapters' scales", json_answer(ref("Success")),
              body=LORA_REQUEST, errors=(400,) + ENGINE, tag="operations"),
    Operation("get", ("/openapi.json",), "This document", json_answer(OBJECT), public=True,
              tag="operations"),
    Operation("get", ("/", "/index.html"), "The web front end", {"text/html": STRING},
              errors=(404,), public=True, tag="ui"),
    Operation("get", ("/completion.js",), "llama-server's JavaScript helper module",
              {"text/javascript": STRING}, errors=(404,), public=True, tag="ui"),
    Operation("get", ("/favicon.ico",), "The icon", FILE, errors=(404,), public=True, tag="ui"),
    Operation("get", ("/static/{name}",), "The front end's files", FILE,
              params=(path_param("name", "a file name under webapp/static (may contain /)"),),
              errors=(404,), public=True, tag="ui"),
    Operation("get", ("/{name}",), "A file under --path (API routes win)", FILE,
              params=(path_param("name", "a path relative to --path (may contain /)"),),
              errors=(404,), public=True, tag="ui", when="path"),
]

ERROR_TEXT = {400: "bad request", 401: "missing or wrong API key", 404: "not found",
              500: "server error (the model failed to load, or a bug)",
              501: "not supported by this server or model",
              503: "unavailable (loading, busy, shutting down)"}


def _responses(op: Operation, auth: bool) -> dict:
    content = {t: {"schema": s} if s is not None else {} for t, s in op.answer.items()}
    out = {"200": {"description": "success", "content": content}}
    statuses = sorted(set(op.errors) | ({401} if auth and not op.public else set()))
    for status in statuses:
        schema = ref(op.error_schema)
        if status == 503 and "/health" in op.paths:
            schema = any_of(ref("Error"), ref("Health"))
        out[str(status)] = {"description": ERROR_TEXT[status], "content": {JSON: {"schema": schema}}}
    return out


def _operation(op: Operation, path: str, auth: bool) -> dict:
    name = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
    out = {"operationId": f"{op.method}_{name}",
           "summary": op.summary, "tags": [op.tag], "responses": _responses(op, auth)}
    if op.params:
        out["parameters"] = list(op.params)
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": {JSON: {"schema": op.body}}}
    if auth and op.public:
        out["security"] = []
    return out


def _version() -> str:
    try:
        return metadata.version("llama-server-py")
    except metadata.PackageNotFoundError:   # a source checkout that was never installed
        return "0"


def build_openapi(settings) -> dict:
    """The document for a server started with these settings (a copy: the tables above share
    their small schema dicts, and a caller may change what it gets)."""
    auth = bool(getattr(settings, "api_key", None) or getattr(settings, "api_key_file", None))
    paths: dict[str, dict] = {}
    for op in OPERATIONS:
        if op.when is not None and not getattr(settings, op.when, None):
            continue
        for path in op.paths:
            paths.setdefault(path, {})[op.method] = _operation(op, path, auth)
    doc = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "llama-server-py", "version": _version(),
                 "description": "A Python drop-in replacement for llama.cpp's llama-server. "
                                "Every error answers {\"error\": {\"code\", \"message\", \"type\"}}."},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
    if auth:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
        }
        doc["security"] = [{"bearer": []}, {"apiKey": []}]
    return copy.deepcopy(doc)
