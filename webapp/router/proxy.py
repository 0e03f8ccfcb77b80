"""Router mode's proxy: a request for a model goes to that model's child server.

The model is the JSON body's ``model`` field (POST), or the ``?model=`` query parameter (any
method; GET routes have no body); ``?autoload=true|false`` overrides --models-autoload for
one request. Every route of the single-model server that needs a model is proxied: the
routes of ``webapp.openapi.OPERATIONS`` less those the router answers itself (health, the
model list, ``/props`` without ``?model=``, the web page) and ``/openapi.json``.

Nothing is buffered: the child's answer is read with ``requests`` (``stream=True``) and each
piece is written to the client as it arrives, status and headers first. A client that goes
away is passed on: a streamed answer's next write fails, which closes the generator and with
it the connection to the child (the child then aborts the request, as it does for any client
that leaves); while the child has sent nothing yet, the client's socket is checked every
second and the connection to the child closed when it is gone.

A child that dies is noticed here too: a connection refused or cut before any answer, from a
child that has exited, makes the router start it again (autoload) and send the request once
more; a stream cut midway ends with a last ``data: {"error": ...}`` event.
"""
from __future__ import annotations

import json
import logging

import gevent
import requests
from flask import Blueprint, Response, g, request
from urllib3.exceptions import HTTPError as Urllib3Error

from ..errors import BadRequest, error_body, error_for
from ..group import client_gone
from ..openapi import OPERATIONS
from .supervisor import CHILD_HOST, ClientGone

__all__ = ["make_blueprint", "forward", "ROUTER_ROUTES"]

logger = logging.getLogger(__name__)

# answered by the router itself (webapp/router/routes.py; GET /props with ?model= comes back
# here), or not served in router mode (/openapi.json describes the single-model server)
ROUTER_ROUTES = frozenset(("get", path) for path in (
    "/health", "/v1/health", "/models", "/v1/models", "/models/{model}", "/v1/models/{model}",
    "/props", "/openapi.json"))
_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "trailers",
                  "transfer-encoding", "upgrade", "host", "content-length", "date", "server"})
_CHUNK = 4096


def make_blueprint(supervisor) -> Blueprint:
    bp = Blueprint("router_proxy", __name__)

    def view(**_params):
        return forward(supervisor, model_of_request())

    for op in OPERATIONS:
        if op.tag == "ui":    # the web page: the router serves its own
            continue
        for path in op.paths:
            if (op.method, path) in ROUTER_ROUTES:
                continue
            rule = path.replace("{", "<").replace("}", ">")
            bp.add_url_rule(rule, endpoint=f"{op.method}:{path}", view_func=view,
                            methods=[op.method.upper()])
    return bp


def model_of_request() -> str:
    name = request.args.get("model")
    if name is None and request.method == "POST" and request.get_data(cache=True):
        try:
            body = json.loads(request.get_data(cache=True))
        except ValueError:
            raise BadRequest("the body is not valid JSON") from None
        name = body.get("model") if isinstance(body, dict) else None
        if name is not None and not isinstance(name, str):
            raise BadRequest("'model' must be a string")
    if not name:
        raise BadRequest("model name is missing from the request")
    return name


def _autoload(supervisor) -> bool:
    raw = request.args.get("autoload")
    if raw is None or raw == "":
        return supervisor.autoload
    return raw.lower() in ("true", "1")


def forward(supervisor, name: str) -> Response:
    """Send the current request to model ``name``'s child and stream its answer back."""
    autoload = _autoload(supervisor)
    touch = request.method == "POST"      # as llama-server: only a POST counts as a use
    try:
        try:
            inst, upstream = _open(supervisor, name, autoload, touch)
        except _Died:                     # it died just before: once more, on a new child
            logger.warning("model %s: its server died; starting it again", name)
            inst, upstream = _open(supervisor, name, autoload, touch, may_retry=False)
    except ClientGone:
        return Response(status=499)       # nobody reads it
    return _relay(supervisor, inst, upstream)


class _Died(Exception):
    pass


def _open(supervisor, name: str, autoload: bool, touch: bool, may_retry: bool = True):
    """(instance, the child's answer with its headers read); the instance is released on any
    failure."""
    inst = supervisor.acquire(name, autoload, touch, client_gone)
    try:
        return inst, _send(inst, supervisor.settings.timeout)
    except requests.RequestException as exc:
        supervisor.release(inst)
        if may_retry and isinstance(exc, requests.ConnectionError) and supervisor.died(inst):
            raise _Died() from None
        raise error_for("unavailable_error", f"model '{name}': no answer from its server "
                                             f"({type(exc).__name__})") from None
    except BaseException:
        supervisor.release(inst)
        raise


def _send(inst, timeout: int) -> requests.Response:
    """The child's answer, headers read, body not; ClientGone when the client left first."""
    url = f"http://{CHILD_HOST}:{inst.port}{request.path}"
    if request.query_string:
        url += "?" + request.query_string.decode("latin-1")
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    headers["X-Request-Id"] = g.get("request_id", "")
    job = gevent.spawn(requests.request, request.method, url, data=request.get_data(cache=True),
                       headers=headers, stream=True, allow_redirects=False,
                       timeout=(10, timeout if timeout and timeout > 0 else None))
    while not job.ready():
        job.join(1.0)
        if not job.ready() and client_gone():
            job.kill()          # closes the connection: the child aborts the request
            raise ClientGone()
    return job.get()


def _relay(supervisor, inst, upstream: requests.Response) -> Response:
    event_stream = upstream.headers.get("Content-Type", "").startswith("text/event-stream")

    def body():
        try:
            # each piece as it comes: a chunked answer (every stream) yields chunk by chunk
            for chunk in upstream.raw.stream(_CHUNK, decode_content=False):
                yield chunk
        except (Urllib3Error, requests.RequestException, OSError) as exc:   # the child went away
            logger.warning("model %s: its server stopped mid-answer (%s)", inst.name, exc)
            if event_stream:
                message = f"model '{inst.name}': its server stopped while answering"
                yield ("data: " + json.dumps(error_body(message, "unavailable_error", 503))
                       + "\n\n").encode()
        finally:
            upstream.close()
            supervisor.release(inst)

    headers = [(k, v) for k, v in upstream.headers.items()
               if k.lower() not in _HOP and not k.lower().startswith("access-control-")
               and k.lower() != "x-request-id"]
    return Response(body(), status=upstream.status_code, headers=headers, direct_passthrough=True)
