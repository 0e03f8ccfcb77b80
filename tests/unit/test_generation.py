"""The per-request state and its stop conditions, one case each."""
from __future__ import annotations

from llama_lib.engine import GenerationOptions, Request, Status
from llama_lib.engine.generation import Generation, stop_string, time_limit, token_limit

from .engine_fakes import GreedySampler
from .fakes import FakeVocab


def gen(n_predict=-1, cap=-1, **opts) -> Generation:
    req = Request(prompt_tokens=[1, 2], options=GenerationOptions(n_predict=n_predict, **opts))
    return Generation(req, GreedySampler(), FakeVocab(), n_predict_cap=cap)


def test_the_server_cap_resolves_once():
    assert gen(-1, cap=5).n_predict == 5
    assert gen(10, cap=5).n_predict == 5
    assert gen(3, cap=5).n_predict == 3
    assert gen(-1, cap=-1).n_predict == -1


def test_stop_string_fires_once_the_string_is_complete():
    g = gen(stop=["ab"])
    _ev, status = g.take(ord("a") + 1)
    assert status is None and stop_string(g, "", 0.0) is None
    ev, status = g.take(ord("b") + 1)
    assert status is Status.FINISHED_STOP and g.tail() == ("", "ab")


def test_token_limit_counts_the_requests_tokens():
    g = gen(2)
    g.req.n_generated = 1
    assert token_limit(g, "", 0.0) is None
    g.req.n_generated = 2
    assert token_limit(g, "", 0.0) is Status.FINISHED_LIMIT


def test_time_limit_is_checked_at_a_new_line():
    g = gen(t_max_predict_ms=100)
    g.t_started = 10.0
    assert time_limit(g, "word", 10.5) is None            # past the limit, but no new line
    assert time_limit(g, "a\n", 10.05) is None           # a new line, within the limit
    assert time_limit(g, "a\n", 10.5) is Status.FINISHED_LIMIT
    assert time_limit in g.conditions and time_limit not in gen().conditions


def test_end_of_generation_unless_ignored():
    assert gen().ends_at(0) and not gen().ends_at(5)
    assert not gen(ignore_eos=True).ends_at(0)


def test_held_back_text_comes_out_at_the_end():
    g = gen(stop=["xyz"])
    ev, status = g.take(ord("x") + 1)
    assert ev.text == "" and status is None               # could start the stop string
    assert g.tail() == ("x", "")
