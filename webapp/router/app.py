"""The router's Flask app and its gevent server.

The app has the single-model server's cross-cutting parts (the error shape, CORS and request
ids, API keys) and web page, the router's own routes, and the proxy. ``serve_router`` lists
the models, starts those marked ``load-on-startup``, serves until SIGTERM/SIGINT, then stops
every child (each drains its requests) before returning.
"""
from __future__ import annotations

import logging
import signal
import time

__all__ = ["create_router_app", "serve_router", "RouterState"]

logger = logging.getLogger("webapp.router")


class RouterState:
    """What the shared parts of the app read (auth, the web page): the settings, the name
    shown before a model is picked, the sampling defaults of the page's settings form."""

    model_id = "llama-server"

    def __init__(self, settings):
        from ..state import sampling_defaults
        self.settings = settings
        self.defaults = sampling_defaults(settings)


def create_router_app(settings, supervisor):
    from flask import Flask

    from .. import _templates_dir
    from ..auth import install_auth
    from ..errors import register_error_handlers
    from ..middleware import install_middleware
    from ..routes import ui
    from . import proxy, routes

    state = RouterState(settings)
    app = Flask("webapp", static_folder=None, template_folder=_templates_dir())
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    register_error_handlers(app)
    install_middleware(app, state)
    install_auth(app, state)
    app.register_blueprint(routes.make_blueprint(supervisor))
    app.register_blueprint(proxy.make_blueprint(supervisor))
    app.register_blueprint(ui.make_blueprint(state))
    return app


def serve_router(settings) -> int:
    import gevent
    import gevent.event

    from ..server import make_wsgi_server
    from .catalog import CatalogError, find_models
    from .supervisor import Supervisor

    try:
        specs = find_models(settings)
    except CatalogError as exc:
        raise SystemExit(f"error: {exc}") from None
    supervisor = Supervisor(settings, specs)
    app = create_router_app(settings, supervisor)
    in_flight = [0]
    server = make_wsgi_server(settings, app, in_flight)
    server.start()
    logger.info("router mode: %d model%s (%s), at most %s loaded at once; listening on %s://%s:%d",
                len(specs), "" if len(specs) == 1 else "s", ", ".join(s.name for s in specs) or "none",
                settings.models_max or "all", "https" if server.ssl_enabled else "http",
                settings.host, server.server_port)
    supervisor.start_startup_models()

    stopped = gevent.event.Event()

    def shutdown(signum=None, _frame=None):
        if stopped.is_set():
            return
        stopped.set()
        logger.info("shutting down (signal %s)", signum)

    gevent.signal_handler(signal.SIGTERM, shutdown, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, shutdown, signal.SIGINT)
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    server.close()                  # no new connections; the children drain what they hold
    supervisor.stop_all()
    deadline = time.monotonic() + 5.0
    while in_flight[0] and time.monotonic() < deadline:
        gevent.sleep(0.02)
    logger.info("stopped")
    return 0
