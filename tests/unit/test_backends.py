"""RPC endpoints and the library-without-RPC case, without a worker."""
from __future__ import annotations

import pytest

from llama_lib import backends
from webapp.cli import parse_settings, prepare_devices


@pytest.mark.parametrize("endpoint, expected", [
    ("127.0.0.1:50052", ("127.0.0.1", 50052)), (" host:1 ", ("host", 1)), ("[::1]:7", ("::1", 7)),
])
def test_endpoints_parse(endpoint, expected):
    assert backends.parse_endpoint(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["host", "host:", ":80", "host:0", "host:70000", "host:x"])
def test_bad_endpoints_are_refused(endpoint):
    with pytest.raises(backends.BackendError, match="HOST:PORT"):
        backends.parse_endpoint(endpoint)


def test_a_library_without_rpc_answers_rpc_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(backends, "supports_rpc", lambda: False)
    code = prepare_devices(parse_settings(["--rpc", "127.0.0.1:50052"], environ={}))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "built without the RPC backend" in err and "-DGGML_RPC=ON" in err


def test_the_default_build_has_rpc():
    assert backends.supports_rpc()
    assert any(d.type == "cpu" for d in backends.devices())


@pytest.mark.parametrize("argv, env, layers, draft", [
    (["-ngl", "all", "-ngld", "auto"], {}, -2, -1),
    (["--n-gpu-layers", "12", "--spec-draft-ngl", "all"], {}, 12, -2),
    ([], {"LLAMA_ARG_N_GPU_LAYERS": "all", "LLAMA_ARG_N_GPU_LAYERS_DRAFT": "3"}, -2, 3),
    ([], {}, -1, -1),
])
def test_gpu_layers_take_a_number_auto_or_all(argv, env, layers, draft):
    s = parse_settings(argv, environ=env)
    assert (s.n_gpu_layers, s.n_gpu_layers_draft) == (layers, draft)


def test_gpu_layers_refuse_other_words(capsys):
    with pytest.raises(SystemExit):
        parse_settings(["-ngl", "lots"], environ={})
    assert "-ngl" in capsys.readouterr().err
