"""Request sampling fields are parsed once, against one table of constraints."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sampling.params import (DEFAULT_SAMPLERS, FIELDS, INT32_MAX, INT32_MIN, ParamError,
                             SamplingParams, parse_sampling_params)

BAD = [
    ("temperature", "hot"), ("temperature", True), ("temp", [1]),
    ("dynatemp_range", -0.1), ("dynatemp_exponent", -1.0),
    ("top_k", 4.5), ("top_k", "40"), ("top_p", 1.5), ("top_p", -0.1), ("min_p", 2.0),
    ("tfs_z", 1.01), ("typical_p", -0.5),
    ("repeat_penalty", 0.0), ("repeat_penalty", -1.0), ("repeat_last_n", -2),
    ("repeat_last_n", 1.5), ("penalize_nl", 1), ("presence_penalty", 2.5),
    ("frequency_penalty", -3.0), ("penalty_prompt", 12), ("penalty_prompt", [1, "a"]),
    ("penalty_prompt", [True]),
    ("mirostat", 3), ("mirostat", -1), ("mirostat_tau", -1.0), ("mirostat_eta", -0.5),
    ("seed", 1.5), ("seed", "42"),
    ("logit_bias", "x"), ("logit_bias", [[1, 2, 3]]), ("logit_bias", [[1, "big"]]),
    ("logit_bias", [[1, True]]), ("logit_bias", [[None, 1.0]]), ("logit_bias", [[1.5, 1.0]]),
    ("logit_bias", {"5": "x"}),
    ("n_probs", -1), ("n_probs", 101), ("min_keep", -1),
    ("samplers", ["top_k", "nonsense"]), ("samplers", 5), ("samplers", "kq"),
    ("dry_multiplier", -1.0), ("dry_base", 0.5), ("dry_allowed_length", -1),
    ("dry_penalty_last_n", -2), ("dry_sequence_breakers", []), ("dry_sequence_breakers", [1]),
    ("dry_sequence_breakers", "\n"),
    ("xtc_probability", 1.5), ("xtc_threshold", -0.1), ("top_n_sigma", "x"),
    ("ignore_eos", "yes"),
    # beyond llama-server's int32_t: these overflowed the compiled chain's C integers (a 500)
    ("top_k", 2**31), ("top_k", -10**30), ("min_keep", 10**30), ("repeat_last_n", 2**31),
    ("dry_allowed_length", 10**30), ("dry_penalty_last_n", 2**63), ("mirostat", 2**64),
    ("penalty_prompt", [1, 10**30]),
]


@pytest.mark.parametrize("field, value", BAD, ids=[f"{f}={v!r}" for f, v in BAD])
def test_bad_value_is_rejected_naming_the_field(field, value):
    with pytest.raises(ParamError) as info:
        parse_sampling_params({field: value})
    assert info.value.field == field
    assert f"'{field}'" in str(info.value)


@pytest.mark.parametrize("value", [math.inf, math.nan], ids=["inf", "nan"])
def test_non_finite_numbers_are_rejected(value):
    with pytest.raises(ParamError, match="temperature"):
        parse_sampling_params({"temperature": value})


def test_defaults_are_the_table_defaults():
    params = parse_sampling_params({})
    assert params == SamplingParams()
    for name, _keys, default, _parser in FIELDS:
        assert getattr(params, name) == default, name


def test_llama_server_defaults():
    p = SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_last_n, p.seed) == \
        (0.8, 40, 0.95, 0.05, 64, -1)
    assert p.samplers == DEFAULT_SAMPLERS and not p.greedy


def test_server_defaults_replace_the_table_and_requests_replace_both():
    server = SamplingParams(temperature=0.2, top_k=10, seed=7)
    assert parse_sampling_params({}, server) == server
    p = parse_sampling_params({"top_k": 3, "temperature": None}, server)
    assert (p.top_k, p.temperature, p.seed) == (3, 0.2, 7)


GOOD = [
    ({"temp": 0.5}, "temperature", 0.5),
    ({"temperature": 1}, "temperature", 1.0),
    ({"top_k": 5.0}, "top_k", 5),
    ({"repeat_last_n": -1}, "repeat_last_n", -1),
    ({"seed": -1}, "seed", -1),
    ({"penalty_prompt": "hello"}, "penalty_prompt", "hello"),
    ({"penalty_prompt": [1, 2]}, "penalty_prompt", (1, 2)),
    ({"logit_bias": [[15, 1.5], ["Hello", False]]}, "logit_bias",
     ((15, 1.5), ("Hello", -math.inf))),
    ({"logit_bias": {"15": -2, "hi": 1}}, "logit_bias", ((15, -2.0), ("hi", 1.0))),
    ({"samplers": ["top-k", "TopP", "typ_p", "temp"]}, "samplers",
     ("top_k", "top_p", "typical_p", "temperature")),
    ({"samplers": "kfypmt"}, "samplers",
     ("top_k", "tfs_z", "typical_p", "top_p", "min_p", "temperature")),
    ({"samplers": "dry;top_k;top_k;xtc"}, "samplers", ("dry", "top_k", "top_k", "xtc")),
    ({"samplers": []}, "samplers", ()),
    ({"dry_sequence_breakers": ["\n", "###"]}, "dry_sequence_breakers", ("\n", "###")),
    ({"top_n_sigma": 1.5}, "top_n_sigma", 1.5),
]


@pytest.mark.parametrize("body, field, expected", GOOD,
                         ids=[f"{next(iter(b))}={b[next(iter(b))]!r}" for b, _f, _e in GOOD])
def test_good_values_parse(body, field, expected):
    assert getattr(parse_sampling_params(body), field) == expected


@pytest.mark.parametrize("temperature, mirostat, greedy", [(0.0, 0, True), (-1.0, 0, True),
                                                           (0.0, 2, False), (0.1, 0, False)])
def test_temperature_at_or_below_zero_is_greedy_unless_mirostat(temperature, mirostat, greedy):
    assert SamplingParams(temperature=temperature, mirostat=mirostat).greedy is greedy


INT32_EDGES = [
    {"top_k": INT32_MAX}, {"top_k": INT32_MIN}, {"min_keep": INT32_MAX, "top_p": 0.5, "min_p": 0.5},
    {"repeat_penalty": 1.5, "repeat_last_n": INT32_MAX, "penalty_prompt": [INT32_MAX, INT32_MIN, 3]},
    {"dry_multiplier": 1.0, "dry_allowed_length": INT32_MAX, "dry_penalty_last_n": INT32_MAX},
    {"seed": 2**200},
]


@pytest.mark.parametrize("impl", ["cython", "reference"])
@pytest.mark.parametrize("body", INT32_EDGES, ids=lambda b: ",".join(f"{k}={v}" for k, v in b.items()))
def test_the_largest_accepted_values_build_a_working_sampler(body, impl):
    from sampling.sampler import make_sampler
    sampler = make_sampler(parse_sampling_params(body), 100, prompt_tokens=[1, 2, 3], n_ctx=64, impl=impl)
    logits = np.linspace(0.0, 1.0, 100, dtype=np.float32)
    assert all(0 <= sampler.sample(logits) < 100 for _ in range(3))


def test_to_json_round_trips():
    p = parse_sampling_params({"logit_bias": [[3, False]], "penalty_prompt": [1, 2],
                               "samplers": ["top_k"], "seed": 5})
    assert parse_sampling_params(p.to_json()) == p
