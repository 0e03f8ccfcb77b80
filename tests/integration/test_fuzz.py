"""Property-based fuzzing of the real server from its own OpenAPI document (schemathesis).

A short run: a few generated requests per operation and mode (positive: bodies the document
accepts; negative: bodies it rejects, including ones that are not JSON). ``python -m
bench.fuzz`` runs the same check with 500 per operation (not in CI). What is checked is in
bench/fuzz.py's docstring: no 5xx (501 for a feature the model lacks aside), every error in
the error shape, answers as documented, no request hanging, the server healthy afterwards.
"""
from __future__ import annotations

import pytest

from bench.fuzz import FEATURES, fuzz

pytestmark = pytest.mark.slow

EXAMPLES = 4          # per operation and mode: about 160 requests, under 20 s on two cores
TIMEOUT_S = 30        # one answer (a stream included); -n 16 keeps generation short


@pytest.fixture(scope="module")
def srv(server_factory, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-slots")
    features = [arg.replace("{tmp}", str(folder)) for arg in FEATURES]
    return server_factory("-np", "2", "-c", "1024", "-n", "16", *features)


def test_generated_requests_get_no_5xx_and_only_well_shaped_errors(srv):
    tally = fuzz(srv.url, examples=EXAMPLES, timeout=TIMEOUT_S,
                 modes=("positive", "negative", "surrogates", "deep"))
    print(tally.report())
    assert tally.ok, tally.report()
    assert tally.sent >= 100, "too few requests: did the document lose its operations?"
    assert srv.proc.poll() is None, srv.log_tail()
