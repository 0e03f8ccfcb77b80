"""Start-up choices through the CLI: weight repacking (--repack / --no-repack / the AMX rule)
and the warmup decode (--warmup / --no-warmup), read from the server's log, with a real
completion to show the choice serves."""
from __future__ import annotations

import pytest

import llama_lib

pytestmark = pytest.mark.slow


def completes(srv) -> bool:
    r = srv.post("/completion", json={"prompt": "Building a website can be done in 10 simple steps:",
                                      "n_predict": 4, "temperature": 0})
    return r.status_code == 200 and r.json()["tokens_predicted"] == 4


@pytest.mark.parametrize("args, env, line", [
    pytest.param(("--no-repack",), None, "weight repacking off (--no-repack)", id="no-repack"),
    pytest.param(("-nr",), None, "weight repacking off (--no-repack)", id="nr-short"),
    pytest.param(("--repack",), None, "weight repacking on (--repack)", id="repack"),
    pytest.param((), {"LLAMA_ARG_REPACK": "0"}, "weight repacking off (--no-repack)", id="env-off"),
])
def test_the_repack_choice_is_applied_and_logged(server_factory, args, env, line):
    srv = server_factory("-np", "1", "-c", "256", *args, env=env, shared=False)
    assert completes(srv)
    assert line in srv.log_tail(20000)


def test_by_default_repacking_follows_the_cpu_backends_amx_kernels(server_factory):
    srv = server_factory("-np", "1", "-c", "256", shared=False)
    assert completes(srv)
    log = srv.log_tail(20000)
    llama_lib.load()
    if llama_lib.cpu_backend_has_amx():
        assert "weight repacking off: this libggml has AMX kernels" in log
    else:
        assert "weight repacking on" in log and "weight repacking off" not in log


def test_warmup_decodes_before_ready_unless_turned_off(server_factory):
    warm = server_factory("-np", "1", "-c", "256", shared=False)
    assert "warmup: decoding 2 tokens" in warm.log_tail(20000)
    cold = server_factory("-np", "1", "-c", "256", "--no-warmup", shared=False)
    assert completes(cold)
    assert "warmup:" not in cold.log_tail(20000)
