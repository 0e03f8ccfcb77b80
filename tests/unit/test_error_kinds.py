"""One mapping from a failure's kind to the HTTP answer, over every kind."""
from __future__ import annotations

import pytest

from llama_lib.engine import FinalEvent, Status
from webapp.completion import raise_for_failure
from webapp.errors import ApiError


@pytest.mark.parametrize("status, error_type, http, retry", [
    (Status.FAILED, "exceed_context_size_error", 400, None),
    (Status.FAILED, "unavailable_error", 503, "1"),
    (Status.FAILED, "server_error", 500, None),
    (Status.FAILED, "", 500, None),
    (Status.FAILED, "something_new", 500, None),
    (Status.ABORTED, "unavailable_error", 503, "1"),
], ids=["context-too-long", "queue-full", "internal", "no-kind", "unknown-kind", "shutting-down"])
def test_each_kind_of_failure_has_its_status(status, error_type, http, retry):
    with pytest.raises(ApiError) as info:
        raise_for_failure(FinalEvent(status, error="what happened", error_type=error_type))
    err = info.value
    assert err.status == http and err.headers.get("Retry-After") == retry
    body = err.body()["error"]
    assert body["code"] == http and body["message"] == "what happened"
    assert body["type"] == (error_type if http != 500 else "server_error")


@pytest.mark.parametrize("status", [Status.FINISHED_EOS, Status.FINISHED_GRAMMAR, Status.FINISHED_LIMIT])
def test_finished_requests_raise_nothing(status):
    raise_for_failure(FinalEvent(status))


def test_a_client_abort_is_not_an_error():
    raise_for_failure(FinalEvent(Status.ABORTED))
