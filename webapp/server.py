"""The production server: gevent WSGIServer, model loaded on a real thread, graceful stop."""
from __future__ import annotations

import logging
import signal

__all__ = ["serve"]

logger = logging.getLogger("webapp.server")


def serve(settings) -> int:
    import gevent
    from gevent.pool import Pool
    from gevent.pywsgi import WSGIHandler, WSGIServer

    from llama_lib.engine.bridge import start_real_thread

    from . import create_app
    from .state import ServerState

    state = ServerState(settings)
    app = create_app(settings, state=state)
    timeout = settings.timeout

    class Handler(WSGIHandler):
        def handle(self):
            if timeout and timeout > 0:
                self.socket.settimeout(timeout)
            super().handle()

        def log_request(self):   # one structured line per request comes from the app
            pass

    spawn = Pool(settings.threads_http) if settings.threads_http and settings.threads_http > 0 else "default"
    server = WSGIServer((settings.host, settings.port), app, handler_class=Handler, spawn=spawn,
                        log=None, error_log=logging.getLogger("webapp.wsgi"))
    server.start()
    logger.info("listening on http://%s:%d", settings.host, server.server_port)
    start_real_thread(state.load)

    stopping = {"done": False}

    def shutdown(signum=None, _frame=None):
        if stopping["done"]:
            return
        stopping["done"] = True
        logger.info("shutting down (signal %s)", signum)
        gevent.spawn(_graceful_stop, server, state)

    gevent.signal_handler(signal.SIGTERM, shutdown, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, shutdown, signal.SIGINT)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _graceful_stop(server, state) -> None:
    """Stop accepting, end in-flight requests with a final error event, then exit."""
    server.close()
    if state.engine is not None:
        state.status = "stopping"
        state.engine.stop(timeout=10)
    server.stop(timeout=5)
