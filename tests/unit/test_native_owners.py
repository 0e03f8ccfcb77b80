"""Owner classes over the real library: lifetimes and the checks made at load."""
from __future__ import annotations

import gc

import pytest

import llama_lib
from llama_lib import _raw


def test_a_vocab_keeps_its_model_alive(model_path):
    vocab = llama_lib.Model(model_path).vocab
    gc.collect()
    assert vocab.tokenize("Hello world", add_special=False) == [19556, 905]


def test_closing_twice_is_harmless(model_path):
    model = llama_lib.Model(model_path)
    ctx = llama_lib.Context(model, llama_lib.ContextParams(n_ctx=256, n_threads=1, n_threads_batch=1))
    ctx.close()
    ctx.close()
    model.close()
    model.close()
    with pytest.raises(ValueError):
        _ = model.handle


def test_a_missing_symbol_becomes_a_stub_that_names_it():
    class Empty:
        pass
    bound = _raw.Bound(Empty(), [("llama_not_a_function", [], None)], "/nowhere/libllama.so")
    assert bound.missing == ["llama_not_a_function"]
    with pytest.raises(llama_lib.MissingSymbolError, match="llama_not_a_function"):
        bound.llama_not_a_function()


def test_a_library_folder_without_libllama_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_CPP_LIB_PATH", str(tmp_path))
    with pytest.raises(llama_lib.LibraryNotFound, match="LLAMA_CPP_LIB_PATH"):
        llama_lib.find_library_dir()


def test_a_missing_model_file_raises_a_typed_error(tmp_path):
    with pytest.raises(llama_lib.ModelLoadError, match="not found"):
        llama_lib.Model(str(tmp_path / "absent.gguf"))


def test_decode_return_codes_map_to_typed_errors():
    from llama_lib.errors import decode_error
    assert isinstance(decode_error(1), llama_lib.NoKvSlotError)
    assert isinstance(decode_error(2), llama_lib.DecodeAborted)
    err = decode_error(-3)
    assert type(err) is llama_lib.DecodeError and err.code == -3


def test_libllama_log_lines_are_kept_for_errors(model_path):
    from llama_lib.native_sampler import NativeSampler
    model = llama_lib.Model(model_path)
    with pytest.raises(llama_lib.GrammarError) as exc:
        NativeSampler.grammar(model.vocab, "root ::= (")
    assert any("parse" in line for line in exc.value.log_tail)
    model.close()
