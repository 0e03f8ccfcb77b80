"""SamplingParams: a request's sampling settings, parsed and validated once.

Every field is described by one row of ``FIELDS``: its JSON name, type, default, and the
constraint it must meet. A bad value raises ``ParamError`` naming the field, which the web
layer turns into a 400. Server-wide defaults (``--temp``, ``--top-k``, ...) are passed as
``defaults`` and replace the row defaults.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

__all__ = ["SamplingParams", "ParamError", "parse_sampling_params", "SAMPLER_NAMES",
           "DEFAULT_SAMPLERS", "FIELDS", "INT32_MIN", "INT32_MAX"]

# Accepted names in `samplers` -> canonical stage name. Like llama.cpp, every name with an
# underscore also has a kebab-case and a no-dash spelling ("top-k", "topk"), and a string
# instead of a list is read one letter per stage ("kfypmt").
_SAMPLER_SPELLINGS = {
    "top_k": ("top_k", "k"),
    "tfs_z": ("tfs_z", "tfs", "f"),
    "typical_p": ("typical_p", "typ_p", "typical", "typ", "y"),
    "top_p": ("top_p", "p", "nucleus"),
    "min_p": ("min_p", "m"),
    "temperature": ("temperature", "temp", "t"),
    "penalties": ("penalties", "e"),
    "dry": ("dry", "d"),
    "xtc": ("xtc", "x"),
    "top_n_sigma": ("top_n_sigma", "s"),
}
SAMPLER_NAMES = {
    alias: canonical
    for canonical, names in _SAMPLER_SPELLINGS.items()
    for name in names
    for alias in {name, name.replace("_", "-"), name.replace("_", "")}
}
DEFAULT_SAMPLERS = ("penalties", "dry", "top_n_sigma", "top_k", "tfs_z", "typical_p", "top_p",
                    "min_p", "xtc", "temperature")


class ParamError(ValueError):
    def __init__(self, name: str, message: str):
        super().__init__(f"'{name}': {message}")
        self.field = name


def _number(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ParamError(name, "must be a number")
    if not math.isfinite(v):
        raise ParamError(name, "must be finite")
    return float(v)


def _integer(v, name):
    if isinstance(v, bool):
        raise ParamError(name, "must be an integer")
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int):
        raise ParamError(name, "must be an integer")
    return v


# llama-server keeps these fields (and token ids) in int32_t; the compiled chain keeps them
# in C integers, where a larger Python int raised OverflowError (a 500) at submission.
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1


def _int32(v, name):
    v = _integer(v, name)
    if not INT32_MIN <= v <= INT32_MAX:
        raise ParamError(name, f"must be between {INT32_MIN} and {INT32_MAX}")
    return v


def _boolean(v, name):
    if not isinstance(v, bool):
        raise ParamError(name, "must be a boolean")
    return v


def _range(lo=None, hi=None, lo_open=False):
    def check(v, name):
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise ParamError(name, f"must be {'>' if lo_open else '>='} {lo}")
        if hi is not None and v > hi:
            raise ParamError(name, f"must be <= {hi}")
        return v
    return check


def _samplers(v, name):
    if isinstance(v, str):   # "kfypmt", or the --samplers flag's "top_k;temperature"
        v = v.split(";") if ";" in v else list(v)
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ParamError(name, "must be a list of sampler names")
    out = []
    for s in v:
        canonical = SAMPLER_NAMES.get(s.strip().lower())
        if canonical is None:
            raise ParamError(name, f"unknown sampler {s!r}; known: {', '.join(sorted(set(SAMPLER_NAMES.values())))}")
        out.append(canonical)
    return tuple(out)


def _logit_bias(v, name):
    """[[token|string, bias|false], ...] or {"token": bias} (OpenAI); kept as given pairs."""
    if isinstance(v, dict):
        items = list(v.items())
    elif isinstance(v, list):
        items = []
        for i, pair in enumerate(v):
            if not isinstance(pair, list) or len(pair) != 2:
                raise ParamError(name, f"entry {i} must be a [token, bias] pair")
            items.append((pair[0], pair[1]))
    else:
        raise ParamError(name, "must be a list of [token, bias] pairs or an object")
    out = []
    for key, bias in items:
        if isinstance(key, str) and key.lstrip("-").isdigit() and isinstance(v, dict):
            key = int(key)
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise ParamError(name, "tokens must be ids or strings")
        if bias is False:
            bias = -math.inf
        elif isinstance(bias, bool) or not isinstance(bias, (int, float)) or math.isnan(bias):
            raise ParamError(name, "bias must be a number or false")
        out.append((key, float(bias)))
    return tuple(out)


def _breakers(v, name):
    if not isinstance(v, list) or not v or not all(isinstance(s, str) for s in v):
        raise ParamError(name, "must be a non-empty list of strings")
    return tuple(v)


def _penalty_prompt(v, name):
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, list) and all(isinstance(t, int) and not isinstance(t, bool)
                                   and INT32_MIN <= t <= INT32_MAX for t in v):
        return tuple(v)
    raise ParamError(name, "must be a string or a list of token ids")


def _chain(*checks: Callable):
    def run(v, name):
        for check in checks:
            v = check(v, name)
        return v
    return run


# (field, JSON names, default, parser)
FIELDS: list[tuple[str, tuple[str, ...], Any, Callable]] = [
    ("temperature", ("temperature", "temp"), 0.8, _number),
    ("dynatemp_range", ("dynatemp_range",), 0.0, _chain(_number, _range(0))),
    ("dynatemp_exponent", ("dynatemp_exponent",), 1.0, _chain(_number, _range(0))),
    ("top_k", ("top_k",), 40, _int32),
    ("top_p", ("top_p",), 0.95, _chain(_number, _range(0, 1))),
    ("min_p", ("min_p",), 0.05, _chain(_number, _range(0, 1))),
    ("tfs_z", ("tfs_z",), 1.0, _chain(_number, _range(0, 1))),
    ("typical_p", ("typical_p",), 1.0, _chain(_number, _range(0, 1))),
    ("repeat_penalty", ("repeat_penalty",), 1.0, _chain(_number, _range(0, lo_open=True))),
    ("repeat_last_n", ("repeat_last_n",), 64, _chain(_int32, _range(-1))),
    ("penalize_nl", ("penalize_nl",), False, _boolean),
    ("presence_penalty", ("presence_penalty",), 0.0, _chain(_number, _range(-2, 2))),
    ("frequency_penalty", ("frequency_penalty",), 0.0, _chain(_number, _range(-2, 2))),
    ("penalty_prompt", ("penalty_prompt",), None, _penalty_prompt),
    ("mirostat", ("mirostat",), 0, _chain(_int32, _range(0, 2))),
    ("mirostat_tau", ("mirostat_tau",), 5.0, _chain(_number, _range(0))),
    ("mirostat_eta", ("mirostat_eta",), 0.1, _chain(_number, _range(0))),
    ("seed", ("seed",), -1, _integer),          # any integer: the RNG takes its low 64 bits
    ("logit_bias", ("logit_bias",), (), _logit_bias),
    ("n_probs", ("n_probs",), 0, _chain(_int32, _range(0, 100))),
    ("min_keep", ("min_keep",), 0, _chain(_int32, _range(0))),
    ("samplers", ("samplers",), DEFAULT_SAMPLERS, _samplers),
    ("dry_multiplier", ("dry_multiplier",), 0.0, _chain(_number, _range(0))),
    ("dry_base", ("dry_base",), 1.75, _chain(_number, _range(1))),
    ("dry_allowed_length", ("dry_allowed_length",), 2, _chain(_int32, _range(0))),
    ("dry_penalty_last_n", ("dry_penalty_last_n",), -1, _chain(_int32, _range(-1))),
    ("dry_sequence_breakers", ("dry_sequence_breakers",), ("\n", ":", "\"", "*"), _breakers),
    ("xtc_probability", ("xtc_probability",), 0.0, _chain(_number, _range(0, 1))),
    ("xtc_threshold", ("xtc_threshold",), 0.1, _chain(_number, _range(0, 1))),
    ("top_n_sigma", ("top_n_sigma",), -1.0, _number),
    ("ignore_eos", ("ignore_eos",), False, _boolean),
]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    tfs_z: float = 1.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    penalize_nl: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_prompt: Any = None
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    seed: int = -1
    logit_bias: tuple = ()
    n_probs: int = 0
    min_keep: int = 0
    samplers: tuple = DEFAULT_SAMPLERS
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1
    dry_sequence_breakers: tuple = ("\n", ":", "\"", "*")
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    top_n_sigma: float = -1.0
    ignore_eos: bool = False
    grammar: str | None = None      # GBNF text (set by the structured-output layer)
    # A lazy grammar constrains only once a trigger fires (tool calls in "auto" mode):
    # a trigger token, or a pattern (ECMAScript regex; ^...$ = the whole text so far).
    grammar_lazy: bool = False
    grammar_trigger_patterns: tuple = ()
    grammar_trigger_tokens: tuple = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0 and self.mirostat == 0

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["samplers"] = list(self.samplers)
        out["logit_bias"] = [[k, (False if b == -math.inf else b)] for k, b in self.logit_bias]
        out["dry_sequence_breakers"] = list(self.dry_sequence_breakers)
        if isinstance(self.penalty_prompt, tuple):
            out["penalty_prompt"] = list(self.penalty_prompt)
        return out

    def with_(self, **changes) -> "SamplingParams":
        return replace(self, **changes)


def parse_sampling_params(body: dict, defaults: SamplingParams | None = None) -> SamplingParams:
    """Read the sampling fields of a request body over the server's defaults."""
    base = defaults or SamplingParams()
    values = {}
    for name, keys, _default, parser in FIELDS:
        for key in keys:
            if key in body and body[key] is not None:
                values[name] = parser(body[key], key)
                break
    return replace(base, **values)


def defaults_from_table() -> dict[str, Any]:
    return {name: default for name, _keys, default, _p in FIELDS}


