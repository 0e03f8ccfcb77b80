"""GreenWake: the gevent side's wake-up of a mailbox, with the Event semantics the readers
rely on (set before or during a wait, timeouts, clear, more than one waiter, a killed
waiter), and woken from a real OS thread the way the engine does it (GeventBridge)."""
from __future__ import annotations

import time

import gevent
import pytest

from llama_lib.engine.bridge import GeventBridge, GreenWake, Mailbox, start_real_thread


@pytest.fixture
def wake():
    return GreenWake(gevent.get_hub())


def test_a_wake_set_before_the_wait_returns_at_once(wake):
    wake.set()
    assert wake.is_set()
    t0 = time.monotonic()
    assert wake.wait(5) is True
    assert time.monotonic() - t0 < 0.5


def test_a_wait_with_nothing_set_times_out_with_false(wake):
    for timeout in (0.05, 0.05, 0.02):      # the timer is reused, and replaced
        t0 = time.monotonic()
        assert wake.wait(timeout) is False
        assert timeout * 0.8 <= time.monotonic() - t0 < timeout + 0.5


def test_a_set_from_another_greenlet_wakes_the_waiter(wake):
    waiter = gevent.spawn(wake.wait, 5)
    gevent.sleep(0.01)
    assert not waiter.ready()
    gevent.spawn_later(0.02, wake.set)
    assert waiter.get(timeout=2) is True


def test_clear_makes_the_next_wait_block_again(wake):
    wake.set()
    wake.clear()
    assert not wake.is_set()
    assert wake.wait(0.02) is False


def test_two_waiters_are_both_woken(wake):
    first, second = gevent.spawn(wake.wait, 5), gevent.spawn(wake.wait, 5)
    gevent.sleep(0.01)
    wake.set()
    assert first.get(timeout=2) is True and second.get(timeout=2) is True


def test_a_killed_waiter_leaves_the_wake_usable(wake):
    waiter = gevent.spawn(wake.wait, 5)
    gevent.sleep(0.01)
    waiter.kill()
    assert wake.wait(0.02) is False
    gevent.spawn_later(0.02, wake.set)
    assert wake.wait(2) is True


def test_the_bridge_wakes_readers_from_a_real_thread():
    """As the engine does: events put on an OS thread, marked together, flushed; every
    greenlet reader gets its events and the engine thread learns they were drained."""
    bridge = GeventBridge()
    boxes = [Mailbox(bridge) for _ in range(8)]
    got: list[list] = [[] for _ in boxes]

    def reader(i):
        while len(got[i]) < 3:
            got[i].extend(boxes[i].get(2))

    readers = [gevent.spawn(reader, i) for i in range(len(boxes))]
    gevent.sleep(0.01)
    drained = []

    def engine():
        for step in range(3):
            for box in boxes:
                box.put_quiet(step)
            bridge.mark_many(boxes)
            bridge.flush()
            t0 = time.monotonic()
            bridge.wait_drained(2)
            drained.append(time.monotonic() - t0 < 1.5)

    start_real_thread(engine)
    gevent.joinall(readers, timeout=5, raise_error=True)
    assert got == [[0, 1, 2]] * len(boxes)
    deadline = time.monotonic() + 2
    while len(drained) < 3 and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert drained == [True, True, True]


def test_the_bridge_says_the_web_side_is_busy_until_the_woken_greenlets_had_their_turn():
    bridge = GeventBridge()
    box = Mailbox(bridge)
    got = []
    reader = gevent.spawn(lambda: got.extend(box.get(2)))
    gevent.sleep(0.01)
    assert not bridge.web_busy
    state = {}

    def engine():
        box.put_quiet("token")
        bridge.mark_many([box])
        bridge.flush()
        state["after_flush"] = bridge.web_busy
        bridge.wait_drained(2)
        state["after_drain"] = bridge.web_busy
        bridge.flush()                      # nothing marked: nobody to wait for
        state["empty_flush"] = bridge.web_busy

    start_real_thread(engine)
    reader.join(timeout=5)
    deadline = time.monotonic() + 2
    while len(state) < 3 and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert got == ["token"]
    assert state == {"after_flush": True, "after_drain": False, "empty_flush": False}
