"""One owner for "submit N requests, read them, abort what is left".

Every generating route (native, OpenAI chat and completions, embeddings) goes through a
``RequestGroup``: its requests share one wake-up event, so their events are read as they
come, interleaved; and any way out of the reading (the client went away, one request
failed, the consumer stopped early, an exception) aborts every request not finished yet.

    with RequestGroup(engine, requests, watch_client=True) as group:
        for i, events in group:          # (index of the request, its new events)
            ...

A non-streamed reader passes ``watch_client=True``: the client's socket is checked four
times a second, also while tokens keep arriving, so a client that left stops its
generation. A streamed response finds out on its next write instead, which closes the
generator and so the group.
"""
from __future__ import annotations

import time

from flask import request

from llama_lib.engine import FinalEvent, QueueFull, Request
from llama_lib.engine.bridge import Mailbox

from .errors import ApiError, error_for

__all__ = ["RequestGroup", "ClientGone", "WAIT_SLICE"]

WAIT_SLICE = 0.25    # seconds between checks of a waiting client (a select() on its socket)


class ClientGone(ApiError):
    """The client of a non-streamed request closed its connection (logged as nginx's 499)."""

    def __init__(self):
        super().__init__("the client closed the connection", "invalid_request_error", 499)


class RequestGroup:
    def __init__(self, engine, requests: list[Request], *, watch_client: bool = False):
        self.engine = engine
        self.requests = list(requests)
        self.watch_client = watch_client
        self.finals: list[FinalEvent | None] = [None] * len(self.requests)
        self._event = engine.bridge.new_event()
        self._submitted = False
        for req in self.requests:
            req.mailbox = Mailbox(engine.bridge, self._event)

    # --- submission ---------------------------------------------------------------------
    def submit(self) -> "RequestGroup":
        """Submit every request at once (one schedule sees them all); a full queue is a 503
        with Retry-After and nothing stays submitted."""
        try:
            self.engine.submit_many(self.requests)
        except QueueFull:
            raise error_for("unavailable_error", "the server is busy: the request queue is full") from None
        self._submitted = True
        return self

    # --- reading ------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return all(f is not None for f in self.finals)

    def __iter__(self):
        """(index, events) as they arrive, until every request has its final event. Leaving
        the loop early, by any path, aborts the unfinished requests (see close())."""
        next_check = time.monotonic() + WAIT_SLICE
        try:
            while not self.done:
                self._event.clear()
                got = False
                for i, req in enumerate(self.requests):
                    if self.finals[i] is not None:
                        continue
                    events = req.mailbox.drain()
                    if not events:
                        continue
                    got = True
                    for ev in events:
                        if isinstance(ev, FinalEvent):
                            self.finals[i] = ev
                    yield i, events
                if self.watch_client and time.monotonic() >= next_check:
                    next_check = time.monotonic() + WAIT_SLICE
                    if client_gone():
                        raise ClientGone()
                if not got and not self.done:
                    woke = self._event.wait(WAIT_SLICE)
                    if not woke and self.engine.failure:
                        # the engine is gone (stuck in a decode ggml aborted): no final
                        # event will come
                        raise error_for("server_error", self.engine.failure)
        finally:
            self.close()

    def close(self) -> None:
        """Abort every submitted request that has no final event yet (idempotent)."""
        if not self._submitted:
            return
        for req, final in zip(self.requests, self.finals):
            if final is None:
                self.engine.abort(req.id)
        self._submitted = False

    def __enter__(self) -> "RequestGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def client_gone() -> bool:
    """True when the client of a non-streamed request has closed its connection.

    The production server puts the connection's socket in the environ; a readable socket
    whose peek returns no bytes has been closed by the peer. (A streamed response finds out
    on its next write instead.)"""
    sock = request.environ.get("llama.socket")
    if sock is None:
        return False
    try:
        import select
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        import socket as _socket
        return sock.recv(1, _socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True
