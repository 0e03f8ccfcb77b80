"""The DRY sequence-breaker tables are cached per vocabulary, within bounds: the default
list's table for good, a few recent custom lists' besides, however many distinct lists
clients send."""
from __future__ import annotations

import gc

from sampling import SamplingParams
from sampling.sampler import DRY_CACHE_SIZE, Dry, _dry_cache, build_plan, dry_breakers

DEFAULT = list(SamplingParams().dry_sequence_breakers)


class ByteVocab:
    """One token per byte."""
    n_tokens = 256
    nl = 10

    def piece(self, token, special=True):
        return bytes([token])

    def tokenize(self, text, add_special=False, parse_special=False):
        return list(text.encode()) if isinstance(text, str) else list(text)


def table_for(vocab, breakers):
    """The table a request with these breakers samples with (through the plan)."""
    params = SamplingParams(dry_multiplier=0.8, dry_sequence_breakers=tuple(breakers))
    (dry,) = [s for s in build_plan(params, vocab.n_tokens, (), vocab).stages if isinstance(s, Dry)]
    return dry.breakers


def test_many_distinct_breaker_lists_keep_the_cache_bounded():
    vocab = ByteVocab()
    default = table_for(vocab, DEFAULT)
    first = table_for(vocab, ["x0"])
    kept = table_for(vocab, ["kept"])
    for i in range(1, 20 * DRY_CACHE_SIZE):
        table_for(vocab, [f"x{i}", "y"])
        if i % (DRY_CACHE_SIZE // 2) == 0:
            assert table_for(vocab, ["kept"]) is kept      # used often: never the oldest
        assert len(_dry_cache[vocab]) <= DRY_CACHE_SIZE + 1
    assert len(_dry_cache[vocab]) == DRY_CACHE_SIZE + 1     # the custom lists, plus the default
    assert table_for(vocab, DEFAULT) is default             # the default list's table stays
    again = table_for(vocab, ["x0"])                         # dropped long ago: built again,
    assert again is not first and again.heads == first.heads   # the same table


def test_a_cached_table_is_the_one_a_fresh_scan_builds():
    vocab = ByteVocab()
    breakers = ["ab", "\n", "b"]
    cached = dry_breakers(vocab, breakers)
    assert dry_breakers(vocab, breakers) is cached
    fresh = dry_breakers(ByteVocab(), breakers)
    assert fresh.heads == cached.heads
    assert (fresh.head_off == cached.head_off).all() and (fresh.tails == cached.tails).all()


def test_each_vocabulary_has_its_own_tables():
    one, two = ByteVocab(), ByteVocab()
    for i in range(3 * DRY_CACHE_SIZE):
        table_for(one, [f"a{i}"])
    table_for(two, ["b"])
    assert len(_dry_cache[one]) == DRY_CACHE_SIZE and len(_dry_cache[two]) == 1
    tables = _dry_cache[two]
    del two                                  # a vocabulary's tables go with it
    gc.collect()
    assert all(t is not tables for t in _dry_cache.values())
