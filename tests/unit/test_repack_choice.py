"""The auto rule for weight repacking, over a fake answer to "does this ggml have AMX kernels"."""
from __future__ import annotations

import logging

import pytest

import llama_lib
from webapp.cli import parse_settings
from webapp.state import repack_choice


@pytest.mark.parametrize("argv, has_amx, expected", [
    pytest.param([], False, True, id="auto-without-amx-repacks"),
    pytest.param([], True, False, id="auto-with-amx-does-not"),
    pytest.param(["--repack"], True, True, id="explicit-repack-wins-over-amx"),
    pytest.param(["--no-repack"], False, False, id="explicit-no-repack"),
])
def test_repack_choice(monkeypatch, argv, has_amx, expected):
    monkeypatch.setattr(llama_lib, "cpu_backend_has_amx", lambda: has_amx)
    assert repack_choice(parse_settings(argv, environ={})) is expected


def test_turning_repack_off_for_amx_says_why(monkeypatch, caplog):
    monkeypatch.setattr(llama_lib, "cpu_backend_has_amx", lambda: True)
    with caplog.at_level(logging.INFO, logger="webapp.state"):
        repack_choice(parse_settings([], environ={}))
    assert any("AMX" in r.getMessage() and "--repack" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("environ, expected", [
    ({"LLAMA_ARG_REPACK": "1"}, True), ({"LLAMA_ARG_REPACK": "false"}, False),
    ({"LLAMA_ARG_NO_REPACK": "1"}, False), ({}, None),
])
def test_repack_from_the_environment(environ, expected):
    assert parse_settings([], environ=environ).repack is expected


def test_warmup_flags():
    assert parse_settings([], environ={}).warmup is True
    assert parse_settings(["--no-warmup"], environ={}).warmup is False
    assert parse_settings(["--warmup"], environ={}).warmup is True
