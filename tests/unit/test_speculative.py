"""Speculative decoding and the host-RAM prompt cache without a model (issue #16): the
proposers, the engine's verification over a fake context, and the cache's choices."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from llama_lib.engine import Engine, EngineConfig
from llama_lib.engine.prompt_cache import PromptCache, lcp
from llama_lib.engine.speculative import NgramMod, NgramSimple, SpecConfig, Speculator

from .engine_fakes import FakeContext, gen_request, greedy_factory, wait_final
from .fakes import FakeVocab


# --- proposers ------------------------------------------------------------------------------
def test_ngram_simple_drafts_what_followed_the_last_occurrence_of_the_tail():
    tokens = [1, 2, 3, 4, 5, 6, 7, 9, 9, 1, 2, 3]
    assert NgramSimple(size_n=3, size_m=4).draft(tokens, 8) == [4, 5, 6, 7]
    assert NgramSimple(size_n=3, size_m=4).draft(tokens, 2) == [4, 5]


def test_ngram_simple_drafts_nothing_without_a_repeat():
    assert NgramSimple(size_n=3, size_m=4).draft(list(range(20)), 8) == []


def test_ngram_simple_prefers_the_latest_occurrence():
    tokens = [1, 2, 7, 1, 2, 8, 1, 2]
    assert NgramSimple(size_n=2, size_m=1).draft(tokens, 4) == [8]


def test_ngram_mod_walks_the_table_fed_by_the_prompt():
    mod = NgramMod(n_match=3, n_max=5, n_min=2, size=1 << 12)
    prompt = [5, 6, 7, 8, 9, 10, 11, 12]
    mod.begin(0, prompt)
    assert mod.draft(0, [1, 5, 6, 7], 10) == [8, 9, 10, 11, 12]
    assert mod.draft(0, [1, 5, 6, 7], 1) == [8]          # n_min gives way to a smaller budget
    assert mod.draft(0, [1, 2, 3, 4], 10) == []           # unknown n-gram


def test_ngram_mod_needs_n_min_tokens():
    mod = NgramMod(n_match=2, n_max=8, n_min=4, size=1 << 12)
    mod.begin(0, [1, 2, 3, 4])
    assert mod.draft(0, [1, 2], 8) == []                  # 3, 4: two tokens, fewer than n_min


# --- the engine's verification over a fake context --------------------------------------------
class ScriptedProposer:
    """Drafts ``right`` tokens the fake model will choose (it counts upwards), then ``wrong``
    ones it will not."""
    name = "scripted"

    def __init__(self, right: int, wrong: int):
        self.right, self.wrong = right, wrong
        self.calls = 0

    def begin(self, seq, prompt):
        pass

    def propose(self, wants):
        self.calls += 1
        out = {}
        for seq, (tokens, n) in wants.items():
            last = tokens[-1]
            draft = [last + 1 + i for i in range(self.right)] + [3] * self.wrong
            out[seq] = draft[:n]
        return out

    def accepted(self, seq, n_drafted, n_accepted):
        pass


def run(speculator, n_predict=12, n_requests=2):
    ctx = FakeContext(n_ctx=256, n_seq=2, n_batch=64)
    model = SimpleNamespace(vocab=FakeVocab(), n_embd=4)
    engine = Engine(model, ctx, EngineConfig(n_slots=2, n_batch=64), greedy_factory,
                    speculator=speculator)
    engine.start()
    try:
        reqs = [engine.submit(gen_request(n_prompt=5, n_predict=n_predict, first=10 + 20 * i))
                for i in range(n_requests)]
        results = [wait_final(r) for r in reqs]
        for slot in engine.scheduler.slots:     # the KV cache holds exactly the slot's tokens
            assert len(ctx.cells[slot.id]) == slot.n_past
        return [[ev.token for ev in toks] for toks, _ in results], [f for _, f in results], engine, ctx
    finally:
        engine.stop()


@pytest.mark.parametrize("right, wrong", [(3, 0), (2, 2), (0, 3)],
                         ids=["all-accepted", "half-accepted", "none-accepted"])
def test_speculation_changes_no_token_and_reports_its_drafts(right, wrong):
    plain, _, _, plain_ctx = run(None)
    proposer = ScriptedProposer(right, wrong)
    spec, finals, engine, ctx = run(Speculator([proposer], n_max=right + wrong))
    assert spec == plain
    assert all(len(tokens) == 12 for tokens in spec)
    for final in finals:
        t = final.timings
        assert t["draft_n"] > 0
        if wrong == 0:
            assert t["draft_n_accepted"] == t["draft_n"]
        elif right == 0:
            assert t["draft_n_accepted"] == 0
        else:
            assert 0 < t["draft_n_accepted"] < t["draft_n"]
    assert engine.n_draft_tokens == sum(f.timings["draft_n"] for f in finals)
    if right:
        assert ctx.n_decodes < plain_ctx.n_decodes      # fewer target decodes
    assert proposer.calls > 0


def test_drafts_never_go_past_the_token_limit():
    spec, finals, _, _ = run(Speculator([ScriptedProposer(8, 0)], n_max=8), n_predict=5, n_requests=1)
    assert len(spec[0]) == 5
    assert finals[0].n_predicted == 5


def test_without_drafts_the_timings_have_no_draft_fields():
    _, finals, _, _ = run(Speculator([ScriptedProposer(0, 0)], n_max=1), n_requests=1)
    assert "draft_n" not in finals[0].timings


def test_a_speculator_is_built_from_the_spec_types():
    spec = Speculator.from_config(SpecConfig(types=("ngram-simple", "ngram-mod")))
    assert spec.name == "ngram-simple,ngram-mod"
    assert Speculator.from_config(SpecConfig(types=())) is None
    with pytest.raises(ValueError, match="draft model"):
        Speculator.from_config(SpecConfig(types=("draft-simple",)))


# --- the prompt cache's choices --------------------------------------------------------------
def arr(*tokens):
    return np.asarray(tokens, dtype=np.int32)


def test_lcp_is_the_common_prefix():
    assert lcp(arr(1, 2, 3), arr(1, 2, 4)) == 2
    assert lcp(arr(1, 2), arr(1, 2, 4)) == 2
    assert lcp(arr(), arr(1)) == 0


def test_the_cache_restores_the_entry_that_serves_the_prompt_and_gives_it_up():
    cache = PromptCache(0)
    cache.save(arr(1, 2, 3, 4), None, lambda: bytearray(b"a" * 10))
    cache.save(arr(7, 8, 9), None, lambda: bytearray(b"b" * 10))
    entry = cache.take(arr(5, 5), arr(1, 2, 3, 4, 6), None)
    assert entry is not None and entry.tokens.tolist() == [1, 2, 3, 4]
    assert len(cache.entries) == 1                      # taken out of the cache


def test_the_cache_keeps_no_entry_for_a_prompt_that_would_use_little_of_it():
    cache = PromptCache(0)
    cache.save(arr(*range(1, 21)), None, lambda: bytearray(10))
    assert cache.take(arr(), arr(1, 2, 3, 99), None) is None     # 3 of 20 tokens: < 25 %


def test_the_cache_evicts_the_oldest_prompts_to_stay_under_its_limit():
    cache = PromptCache(25)
    for first in (10, 20, 30):
        cache.save(arr(first, first + 1), None, lambda: bytearray(10))
    assert [e.tokens[0] for e in cache.entries] == [20, 30]
    assert cache.bytes_held == 20 and cache.n_evicted == 1
    assert not cache.save(arr(1, 2), None, lambda: bytearray(30))    # larger than the limit


def test_the_cache_does_not_save_a_prompt_it_holds_and_drops_what_a_longer_one_contains():
    cache = PromptCache(0)
    cache.save(arr(1, 2), None, lambda: bytearray(4))
    assert not cache.save(arr(1, 2), None, lambda: bytearray(4))
    cache.save(arr(1, 2, 3), None, lambda: bytearray(4))
    assert [e.tokens.tolist() for e in cache.entries] == [[1, 2, 3]]


def test_a_state_computed_with_other_adapters_is_never_restored():
    cache = PromptCache(0)
    cache.save(arr(1, 2, 3, 4), (1.0,), lambda: bytearray(4))
    assert cache.take(arr(), arr(1, 2, 3, 4, 5), None) is None
    assert cache.take(arr(), arr(1, 2, 3, 4, 5), (1.0,)) is not None
