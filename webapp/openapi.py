"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /openapi.json``.

The document is built from tables: one row per request field (name, JSON Schema,
description), a few named response shapes, and one row per operation (method, paths,
request body, success answer, error statuses). It depends on the settings only where the
routes do: ``--path`` adds the ``GET /{name}`` file route, and API keys add the security
schemes and 401 answers. ``tests/unit/test_openapi.py`` validates it against the OpenAPI 3.1
meta-schema and compares its (path, method) pairs with the routes the app registers;
``tests/integration/test_fuzz.py`` sends requests generated from it to the real server.

Left out on purpose: HEAD (Flask answers it for every GET route) and OPTIONS (the CORS
middleware answers it on every path, before routing).

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
PROMPT = any_of(STRING, TEXT_AND_TOKENS, array(PIECES))
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
    ("t_max_predict_ms", number(), "time limit for generation after the first newline (0: none)"),
    ("grammar", STRING, "GBNF grammar constraining the output"),
    ("json_schema", SCHEMA, "JSON Schema constraining the output (not with grammar)"),
]

SYSTEM_PROMPT = any_of(STRING, fields([
    ("prompt", STRING, None), ("anti_prompt", STRING, None), ("assistant_name", STRING, None),
    ("system_prompt", OBJECT, "the same three fields, wrapped"),
]))

COMPLETION_REQUEST = fields(rows_of(
    [("prompt", PROMPT, "a string, token ids and strings mixed, or a list of such prompts")],
    GENERATION_FIELDS, SAMPLING_FIELDS,
    [("system_prompt", SYSTEM_PROMPT, "replace the server-wide system prompt")],
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
NATIVE_EXTRAS = without(rows_of(GENERATION_FIELDS, SAMPLING_FIELDS), "n_probs", "stream")
OPENAI_COMMON = [
    ("model", STRING, "echoed back; the server runs its one model"),
    ("stream", BOOLEAN, "answer with server-sent events, ending with data: [DONE]"),
    ("stream_options", fields([("include_usage", any_of(BOOLEAN, NULL), None)]), None),
    ("max_tokens", integer(0), "tokens to generate at most (n_predict wins)"),
    ("n", integer(1), "choices, one slot each (at most -np)"),
    ("user", STRING, "accepted and ignored"),
]

CONTENT = any_of(STRING, array(fields([("type", const("text"), None), ("text", STRING, None)],
                                      required=["type", "text"])))
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
    ("tools", array(OBJECT), "tool definitions, handed to the chat template"),
    ("tool_choice", ANY, "accepted and ignored"),
    ("parallel_tool_calls", BOOLEAN, "accepted and ignored"),
    ("chat_template_kwargs", OBJECT, "extra chat template variables"),
]), required=["messages"], nullable=True)

OPENAI_COMPLETION_REQUEST = fields(rows_of(NATIVE_EXTRAS, OPENAI_COMMON, [
    ("prompt", any_of(STRING, array(STRING, 1), array(TOKEN, 1), array(array(TOKEN, 1), 1)),
     "a string, strings (one choice each), token ids, or lists of token ids"),
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

LORA_REQUEST = array(fields([("id", integer(0), "adapter index"), ("scale", number(), "new scale")],
                            required=["id", "scale"]))
SLOT_FILE_REQUEST = fields([("filename", STRING, "a plain file name in --slot-save-path")])


# --- response shapes (components/schemas) -------------------------------------------------

COUNT = integer(0)
TIMINGS = fields([(name, number(), None) for name in (
    "prompt_n", "prompt_ms", "prompt_per_token_ms", "prompt_per_second",
    "predicted_n", "predicted_ms", "predicted_per_token_ms", "predicted_per_second")])
USAGE = fields([("prompt_tokens", COUNT, None), ("completion_tokens", COUNT, None),
                ("total_tokens", COUNT, None),
                ("prompt_tokens_details", fields([("cached_tokens", COUNT, None)]), None)],
               required=["prompt_tokens", "completion_tokens", "total_tokens"])
PROBS = fields([("content", STRING, None),
                ("probs", array(fields([("tok_str", STRING, None), ("prob", number(0, 1), None)])), None)])
TOKEN_LOGPROB = fields([("token", STRING, None), ("logprob", number(), None),
                        ("bytes", array(integer(0, 255)), None), ("top_logprobs", array(OBJECT), None)])
NEXT_TOKEN = fields([("has_next_token", BOOLEAN, None), ("n_remain", integer(), None),
                     ("n_decoded", COUNT, None), ("stopped_eos", BOOLEAN, None),
                     ("stopped_word", BOOLEAN, None), ("stopped_limit", BOOLEAN, None),
                     ("stopping_word", STRING, None)])
SLOT_ROWS = [(name, integer(), None) for name in (
    "id", "id_task", "n_ctx", "state", "n_predict", "n_past", "n_cache_tokens", "n_prompt_tokens",
    "n_prompt_tokens_processed", "n_prompt_tokens_cache")] + [
    ("speculative", BOOLEAN, None), ("is_processing", BOOLEAN, None), ("prompt", STRING, None),
    ("params", ref("GenerationSettings"), None), ("next_token", NEXT_TOKEN, None)]
COMPLETION_ROWS = [
    ("content", STRING, "the generated text"), ("index", COUNT, "the prompt's position"),
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
    ("id", STRING, None), ("object", const("model"), None), ("created", integer(), None),
    ("owned_by", STRING, None),
    ("meta", fields([(name, integer(), None) for name in ("n_ctx_train", "n_params", "size",
                                                          "n_vocab", "n_embd")]), None),
], required=["id", "object"])
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
        ("default_generation_settings", ref("GenerationSettings"), None), ("total_slots", COUNT, None),
        ("model_path", any_of(STRING, NULL), None), ("model_alias", STRING, None),
        ("chat_template", STRING, None), ("system_prompt", STRING, None),
        ("assistant_name", STRING, None), ("user_name", STRING, None), ("n_ctx", COUNT, None),
        ("build_info", STRING, None), ("modalities", OBJECT, None),
    ], required=["default_generation_settings", "total_slots", "n_ctx"]),
    "Tokenized": fields([("tokens", array(any_of(TOKEN, fields([
        ("id", TOKEN, None), ("piece", any_of(STRING, array(integer(0, 255))), None)],
        required=["id", "piece"]))), None)], required=["tokens"]),
    "Detokenized": fields([("content", STRING, None)], required=["content"]),
    "Model": MODEL_CARD,
    "ModelList": fields([("object", const("list"), None), ("data", array(ref("Model")), None)],
                        required=["object", "data"]),
    "ChatCompletion": fields(OPENAI_META + [
        ("object", const("chat.completion"), None),
        ("choices", array(fields(CHOICE_META + [
            ("message", fields([("role", const("assistant"), None), ("content", STRING, None)]), None),
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


OPERATIONS = [
    Operation("get", ("/health", "/v1/health"), "Server health", json_answer(ref("Health")),
              params=(query("fail_on_no_slot", FLAG, "503 with status 'no slot available' when every "
                            "slot is busy (the Health shape, not an error)"),
                      query("include_slots", FLAG, "add the slots")),
              errors=ENGINE, public=True),
    Operation("post", ("/completion", "/completions"), "Complete a prompt (llama.cpp's API)",
              json_answer(any_of(ref("Completion"), array(ref("Completion"))), stream=True),
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
    Operation("post", ("/v1/completions",), "Text completion (OpenAI's legacy API)",
              json_answer(ref("TextCompletion"), stream=True), body=OPENAI_COMPLETION_REQUEST,
              errors=(400, 501) + ENGINE, tag="openai"),
    Operation("post", ("/v1/embeddings",), "Embeddings (with --embeddings)",
              json_answer(ref("EmbeddingList")), body=OPENAI_EMBEDDING_REQUEST,
              errors=(400, 501) + ENGINE, tag="openai"),
    Operation("post", ("/embedding", "/embeddings"), "Embeddings, llama.cpp's shape (with --embeddings)",
              json_answer(ref("Embedding")), body=EMBEDDING_REQUEST, errors=(400, 501) + ENGINE),
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
        schema = ref("Error")
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
