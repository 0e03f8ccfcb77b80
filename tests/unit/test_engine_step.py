"""The engine step's cheap paths (issue #16): the generating slots' tokens written into the
batch at once, ignore_eos without a copy, and the wait for the web side as a policy."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from llama_lib import Batch
from llama_lib.engine import Engine, EngineConfig
from llama_lib.engine.bridge import ThreadBridge

from .engine_fakes import FakeContext, gen_request, greedy_factory, wait_final
from .fakes import FakeVocab


def test_add_singles_writes_what_per_token_adds_write():
    a, b = Batch(8), Batch(8)
    a.add([5, 6], 0, 3, False)
    b.add([5, 6], 0, 3, False)
    first = a.add_singles([7, 8, 9], [10, 20, 30], [0, 1, 2])
    for tok, pos, seq in ((7, 10, 0), (8, 20, 1), (9, 30, 2)):
        b.add([tok], pos, seq, True)
    assert first == 2 and a.n_tokens == b.n_tokens == 5
    for name in ("tokens", "pos", "seq", "logits"):
        assert np.array_equal(getattr(a, name)[:5], getattr(b, name)[:5]), name


class CountingBridge(ThreadBridge):
    def __init__(self):
        self.waits = 0

    def wait_drained(self, timeout: float) -> None:
        self.waits += 1


def run_engine(n_requests=2, **config):
    ctx = FakeContext(n_ctx=256, n_seq=2, n_batch=64)
    bridge = CountingBridge()
    engine = Engine(SimpleNamespace(vocab=FakeVocab(), n_embd=4), ctx,
                    EngineConfig(n_slots=2, n_batch=64, **config), greedy_factory, bridge=bridge)
    engine.start()
    try:
        reqs = [engine.submit(gen_request(n_prompt=4, n_predict=6, first=10 + 20 * i, ignore_eos=True))
                for i in range(n_requests)]
        results = [wait_final(r) for r in reqs]
    finally:
        engine.stop()
    return [[ev.token for ev in toks] for toks, _ in results], bridge


@pytest.mark.parametrize("wait, expect_waits", [(True, True), (False, False)],
                         ids=["cpu-waits-for-the-web-side", "gpu-does-not-wait"])
def test_the_wait_for_the_web_side_is_a_policy(wait, expect_waits):
    tokens, bridge = run_engine(wait_for_web=wait)
    assert (bridge.waits > 0) is expect_waits
    assert all(len(t) == 6 for t in tokens)


def test_several_generating_slots_get_their_own_next_tokens():
    tokens, _ = run_engine()
    # the fake model counts upwards from each prompt's last token
    assert tokens == [list(range(14, 20)), list(range(34, 40))]
