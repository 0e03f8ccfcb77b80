"""Router mode: several models behind one server, as llama-server does it.

Started without ``-m`` but with ``--models-dir`` and/or ``--models-preset``, the server lists
every model found (``catalog``), runs each loaded one in a child server process of its own on
a private loopback port (``supervisor``: at most ``--models-max`` at once, the least recently
used idle one unloaded first, a dead child reported and restarted on the next request) and
forwards each request to the child of the model it names (``proxy``), streaming the answer
through as it comes. ``routes`` answers what the router knows itself: ``/health``,
``/models`` with each model's state, ``/models/load``, ``/models/unload``, ``/props``.
"""
from __future__ import annotations

from .app import create_router_app, serve_router

__all__ = ["serve_router", "create_router_app"]
