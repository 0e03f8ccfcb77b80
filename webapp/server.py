"""The production server: gevent WSGIServer, model loaded on a real thread, graceful stop."""
from __future__ import annotations

import logging
import signal
import socket
import time

__all__ = ["serve", "make_wsgi_server"]

logger = logging.getLogger("webapp.server")


def serve(settings) -> int:
    import gevent
    import gevent.event

    from llama_lib.engine.bridge import start_real_thread

    from . import create_app
    from .state import ServerState

    state = ServerState(settings)
    if settings.sleep_idle_seconds > 0:
        from .sleep import SleepMode
        # a reload that fails stops the server (shutdown is defined below, before any request)
        state.sleep = SleepMode(state, settings.sleep_idle_seconds, on_failure=lambda why: shutdown(why))
        gevent.spawn(state.sleep.watch)
    app = create_app(settings, state=state)
    in_flight = [0]      # requests being answered (idle keep-alive connections not counted)
    server = make_wsgi_server(settings, app, in_flight,
                              after_response=state.sleep.release if state.sleep is not None else None)
    server.start()
    logger.info("listening on %s://%s:%d", "https" if server.ssl_enabled else "http", settings.host,
                server.server_port)
    start_real_thread(state.load)

    stopped = gevent.event.Event()
    stopping = {"done": False}

    def shutdown(signum=None, _frame=None):
        if stopping["done"]:
            return
        stopping["done"] = True
        logger.info("shutting down (signal %s)", signum)
        gevent.spawn(_graceful_stop, server, state, in_flight).link(lambda _g: stopped.set())

    gevent.signal_handler(signal.SIGTERM, shutdown, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, shutdown, signal.SIGINT)
    gevent.spawn(_watch_engine, state, shutdown)
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    from llama_lib.backends import fatal_error
    failure = (state.engine.failure if state.engine is not None else None) or fatal_error() \
        or (state.sleep.failure if state.sleep is not None else None)
    if failure:
        logger.error("exiting with status 1: %s", failure)
        if fatal_error():
            # a thread is parked inside ggml for good: no orderly interpreter shutdown
            logging.shutdown()
            import os
            import sys
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        return 1
    logger.info("stopped")
    return 0


def make_wsgi_server(settings, app, in_flight: list, after_response=None):
    """The gevent WSGI server for ``app`` on --host/--port (TLS, --timeout, --threads-http),
    not started yet; ``in_flight[0]`` counts the requests being answered, and
    ``after_response(environ)`` is called once each answer is written (sleep mode's release
    of the engine). The router (webapp/router) serves its app with the same server."""
    from gevent.pool import Pool
    from gevent.pywsgi import WSGIHandler, WSGIServer

    timeout = settings.timeout

    class Handler(WSGIHandler):
        def handle(self):
            if timeout and timeout > 0:
                self.socket.settimeout(timeout)
            # pywsgi writes the headers and the body of a keep-alive connection's later answers
            # as two segments; with Nagle on, the body waited for the client's delayed ACK:
            # 44 ms per request instead of under 2 (measured on /health).
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle()

        def handle_one_response(self):
            in_flight[0] += 1
            try:
                return super().handle_one_response()
            finally:
                in_flight[0] -= 1
                if after_response is not None:
                    after_response(self.environ)

        def log_request(self):   # one structured line per request comes from the app
            pass

        def get_environ(self):
            env = super().get_environ()
            env["llama.socket"] = self.socket   # lets a waiting request notice a client that left
            return env

    spawn = Pool(settings.threads_http) if settings.threads_http and settings.threads_http > 0 else "default"
    return WSGIServer((settings.host, settings.port), app, handler_class=Handler, spawn=spawn,
                      log=None, error_log=logging.getLogger("webapp.wsgi"), **_tls_args(settings))


def _watch_engine(state, shutdown) -> None:
    """If the engine loop stops on an error, stop the server so that a supervisor restarts
    it: the engine has already failed what was in flight, /health answers 503 with the
    reason meanwhile, and serve() returns 1."""
    import gevent
    from llama_lib.backends import fatal_error
    while True:
        engine = state.engine
        failure = (engine.failure if engine is not None else None) or fatal_error()
        if failure:
            logger.error("the engine stopped: %s", failure)
            shutdown("engine failure")
            return
        gevent.sleep(0.25)


def _tls_args(settings) -> dict:
    """gevent's TLS arguments for --ssl-key-file/--ssl-cert-file, checked once here so that a
    bad pair stops startup with one line instead of failing every handshake."""
    key, cert = settings.ssl_key_file, settings.ssl_cert_file
    if not key and not cert:
        return {}
    if not key or not cert:
        raise SystemExit("error: TLS needs both --ssl-key-file and --ssl-cert-file")
    import ssl
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise SystemExit(f"error: TLS file not found: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise SystemExit(f"error: cannot use {cert} / {key} for TLS: {exc}") from None
    return {"keyfile": key, "certfile": cert}


def _graceful_stop(server, state, in_flight, drain_s: float = 5.0) -> None:
    """Stop accepting; new requests on open connections get 503; the engine ends every
    queued and running request with a final error event (streams get a last
    ``data: {"error": ...}``, others a 503 error body); wait (bounded) until those answers
    are written, then let serve() return."""
    import gevent
    server.close()
    state.status = "stopping"
    if state.engine is not None and not state.engine.failure:
        # on a pool thread: the hub keeps delivering the engine's final events meanwhile
        gevent.get_hub().threadpool.spawn(state.engine.stop, 10).get()
    deadline = time.monotonic() + drain_s
    while in_flight[0] and time.monotonic() < deadline:
        gevent.sleep(0.02)
