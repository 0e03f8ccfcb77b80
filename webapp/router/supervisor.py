"""The child servers of router mode: one process per loaded model, started, watched, stopped.

Each model is an ``Instance`` in one of three states, as llama-server reports them:
``unloaded`` (no process; ``failed`` and ``exit_code`` say how the last one ended),
``loading`` (the process runs, its ``/health`` does not answer 200 yet) and ``loaded``.
A child is our own server (``python -m webapp.cli -m PATH --host 127.0.0.1 --port P`` plus
the forwarded flags) on a port the OS picked. One greenlet per child polls its ``/health``
until it is ready, then waits for the process to end; whatever ends it (an unload, a crash,
a kill) turns the model back to ``unloaded``, and the next request for it starts a new one.

Capacity: at most ``--models-max`` children run at once (0: no limit). A model that must
start when none is free unloads the least recently used loaded model that no request is
using or waiting for; when every loaded model is busy, requests wait (``acquire``) and
``POST /models/load`` answers 503. Unloading sends SIGTERM (the child drains like any
stopping server) and SIGKILL after the model's ``stop-timeout``.

Everything here runs on the gevent hub of the main thread, so the bookkeeping needs no lock:
a decision and the state change it makes happen with no switch between them.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import gevent
import gevent.event
import requests

from ..errors import ApiError, BadRequest, error_for
from .catalog import ModelSpec, render_args

__all__ = ["Supervisor", "Instance", "ClientGone", "UNLOADED", "LOADING", "LOADED", "CHILD_HOST"]

logger = logging.getLogger(__name__)

UNLOADED, LOADING, LOADED = "unloaded", "loading", "loaded"
CHILD_HOST = "127.0.0.1"       # children listen on loopback whatever --host the router has
_POLL_S = 0.1                  # /health polling of a loading child
_WAIT_S = 1.0                  # a waiting request checks its client this often
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ClientGone(Exception):
    """The client left while its request waited for a model."""


class Instance:
    """One model and its current child process, if any."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.status = UNLOADED
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.args: list[str] = []        # the last child's command line after the program
        self.stopping = False            # asked to stop; still counts as running until it exits
        self.in_flight = 0               # proxied requests being answered
        self.waiters = 0                 # requests waiting for it to be ready
        self.last_used = 0.0
        self.exit_code: int | None = None
        self.failed = False
        self.error: str | None = None    # why the last child failed to load, when it said
        self.info: dict = {}             # the child's own /v1/models card, once loaded

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def running(self) -> bool:
        return self.status in (LOADING, LOADED)

    @property
    def ready(self) -> bool:
        return self.status == LOADED and not self.stopping

    def status_json(self) -> dict:
        args = self.args or render_args(self.spec.values)
        out = {"value": self.status, "args": ["llama-server", *args]}
        if self.status == UNLOADED and self.failed:
            out.update(failed=True, exit_code=self.exit_code)
        return out


class _Changed:
    """Wakes every greenlet waiting for some instance to change state."""

    def __init__(self):
        self._event = gevent.event.Event()

    def notify(self) -> None:
        event, self._event = self._event, gevent.event.Event()
        event.set()

    def wait(self, timeout: float) -> None:
        self._event.wait(timeout)


class Supervisor:
    def __init__(self, settings, specs: list[ModelSpec]):
        self.settings = settings
        self.models = {spec.name: Instance(spec) for spec in specs}
        self.models_max = settings.models_max
        self.autoload = settings.models_autoload
        self._changed = _Changed()
        self._env = _child_env(settings)
        startup = [s.name for s in specs if s.load_on_startup]
        if self.models_max and len(startup) > self.models_max:
            raise SystemExit(f"error: {len(startup)} models have load-on-startup, more than "
                             f"--models-max {self.models_max}")
        self._startup = startup

    def get(self, name: str) -> Instance | None:
        return self.models.get(name)

    # --- what the routes ask --------------------------------------------------------------

    def start_startup_models(self) -> None:
        for name in self._startup:
            self._spawn(self.models[name])

    def load(self, name: str) -> None:
        """``POST /models/load``: start the model's child (making room first), do not wait
        for it to be ready."""
        inst = self.models.get(name)
        if inst is None:
            raise ApiError("model is not found", "not_found_error", 404)
        if inst.running and not inst.stopping:
            raise BadRequest("model is already running")
        while True:
            if inst.running:                      # its previous child is still stopping
                self._changed.wait(_WAIT_S)
                continue
            room = self._make_room(inst)
            if room == "start":
                self._spawn(inst)
                return
            if room == "full":
                raise error_for("unavailable_error", "model limit reached, try again later "
                                f"(--models-max {self.models_max}, every loaded model is busy)")
            self._changed.wait(_WAIT_S)

    def unload(self, name: str) -> None:
        inst = self.models.get(name)
        if inst is None:
            raise BadRequest("model is not found")
        if not inst.running or inst.stopping:
            raise BadRequest("model is not running")
        self._stop(inst)

    def acquire(self, name: str, autoload: bool, touch: bool, client_gone) -> Instance:
        """The model's instance, ready, with one more request in flight (``release`` it).
        Loads it first when it is not running and ``autoload`` allows; waits while it loads
        or while no room can be made; raises ClientGone when ``client_gone()`` says so."""
        inst = self.models.get(name)
        if inst is None:
            raise BadRequest(f"model '{name}' not found")
        inst.waiters += 1
        started = False          # a child this request saw starting (by it or by another)
        try:
            while not inst.ready:
                if inst.status == LOADING:
                    started = True
                elif inst.status == UNLOADED:
                    if started and inst.failed:
                        raise ApiError(f"model '{name}' failed to load: {self.failure(inst)}",
                                       "server_error", 500)
                    if not autoload:
                        raise BadRequest("model is not loaded")
                    if self._make_room(inst) == "start":
                        self._spawn(inst)
                        started = True
                        continue
                elif not autoload:       # loaded, but stopping
                    raise BadRequest("model is not loaded")
                if client_gone():
                    raise ClientGone()
                self._changed.wait(_WAIT_S)
            inst.in_flight += 1
            if touch:
                inst.last_used = time.monotonic()
            return inst
        finally:
            inst.waiters -= 1
            self._changed.notify()       # a model nobody waits for may now make room

    def release(self, inst: Instance) -> None:
        inst.in_flight -= 1
        self._changed.notify()

    def died(self, inst: Instance, timeout: float = 5.0) -> bool:
        """Whether the instance's child has exited (waiting briefly for the watcher to record
        it, so that the next ``acquire`` starts a new one)."""
        proc = inst.proc
        if proc is None or proc.poll() is None:
            return proc is None and inst.status == UNLOADED
        deadline = time.monotonic() + timeout
        while inst.proc is proc and time.monotonic() < deadline:
            self._changed.wait(0.05)
        return True

    def failure(self, inst: Instance) -> str:
        if inst.error:
            return inst.error
        return f"the child server exited with status {inst.exit_code}"

    def stop_all(self, timeout: float = 15.0) -> None:
        for inst in self.models.values():
            if inst.running and not inst.stopping:
                self._stop(inst)
        deadline = time.monotonic() + timeout
        while any(i.running for i in self.models.values()) and time.monotonic() < deadline:
            self._changed.wait(0.1)

    # --- capacity -------------------------------------------------------------------------

    def _make_room(self, inst: Instance) -> str:
        """"start" when ``inst`` may start now; "wait" when a slot is being freed (a victim
        was just asked to stop, or one is stopping); "full" when every running model is busy."""
        running = [i for i in self.models.values() if i.running]
        if not self.models_max or len(running) < self.models_max:
            return "start"
        if any(i.stopping for i in running):
            return "wait"
        idle = [i for i in running if i.ready and i is not inst and not i.in_flight and not i.waiters]
        if not idle:
            return "full"
        victim = min(idle, key=lambda i: i.last_used)
        logger.info("models_max (%d) reached: unloading the least recently used model %s",
                    self.models_max, victim.name)
        self._stop(victim)
        return "wait"

    # --- processes ------------------------------------------------------------------------

    def _spawn(self, inst: Instance) -> None:
        port = _free_port()
        inst.args = [*render_args(inst.spec.values), "--alias", inst.name,
                     "--host", CHILD_HOST, "--port", str(port)]
        argv = [sys.executable, "-m", "webapp.cli", *inst.args]
        inst.status, inst.port, inst.stopping = LOADING, port, False
        inst.failed, inst.exit_code, inst.error, inst.info = False, None, None, {}
        inst.last_used = time.monotonic()
        logger.info("starting model %s on port %d: %s", inst.name, port, " ".join(inst.args))
        try:
            inst.proc = subprocess.Popen(argv, env=self._env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)
        except OSError as exc:
            inst.status, inst.failed, inst.error, inst.proc = UNLOADED, True, str(exc), None
            logger.error("cannot start model %s: %s", inst.name, exc)
        else:
            gevent.spawn(_relay_log, inst.name, inst.proc.stdout, self.settings.log_format == "json")
            gevent.spawn(self._watch, inst, inst.proc)
            if inst.stopping:          # unloaded while Popen yielded, before it had a process
                gevent.spawn(self._terminate, inst.proc, inst.spec.stop_timeout)
        self._changed.notify()

    def _watch(self, inst: Instance, proc: subprocess.Popen) -> None:
        if self._wait_ready(inst, proc) and inst.proc is proc:
            inst.info = self._card(inst)
            inst.status = LOADED
            logger.info("model %s is loaded (port %d)", inst.name, inst.port)
            self._changed.notify()
        code = proc.wait()
        if inst.proc is not proc:
            return
        inst.status, inst.proc, inst.port, inst.info = UNLOADED, None, 0, {}
        inst.exit_code = code
        inst.failed = code != 0 or inst.error is not None
        log = logger.warning if inst.failed and not inst.stopping else logger.info
        log("model %s: its server exited with status %s%s", inst.name, code,
            "" if inst.stopping else " (unexpectedly)")
        inst.stopping = False
        self._changed.notify()

    def _wait_ready(self, inst: Instance, proc: subprocess.Popen) -> bool:
        url = f"http://{CHILD_HOST}:{inst.port}/health"
        while proc.poll() is None:
            try:
                r = requests.get(url, timeout=2)
            except requests.RequestException:
                r = None
            if r is not None and r.status_code == 200:
                return True
            if r is not None and r.status_code not in (503,):
                inst.error = _message(r)         # e.g. 500 "Model failed to load: ..."
                logger.error("model %s failed to load: %s", inst.name, inst.error)
                self._terminate(proc, inst.spec.stop_timeout)
                return False
            gevent.sleep(_POLL_S)
        return False

    def _card(self, inst: Instance) -> dict:
        """The child's /v1/models entry (its ``meta``: context, parameters, size...)."""
        try:
            r = requests.get(f"http://{CHILD_HOST}:{inst.port}/v1/models", timeout=5)
            return r.json()["data"][0] if r.status_code == 200 else {}
        except (requests.RequestException, ValueError, KeyError, IndexError, TypeError):
            return {}

    def _stop(self, inst: Instance) -> None:
        inst.stopping = True
        logger.info("unloading model %s", inst.name)
        if inst.proc is not None:
            gevent.spawn(self._terminate, inst.proc, inst.spec.stop_timeout)
        self._changed.notify()

    @staticmethod
    def _terminate(proc: subprocess.Popen, timeout: float) -> None:
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("a model server did not stop within %ss: killing it", timeout)
            proc.kill()


def _relay_log(name: str, pipe, as_json: bool) -> None:
    """A child's log lines into the router's log (its stderr, its --log-file), each marked
    with the model: ``[name] `` in front of a text line, a ``"model"`` field in a JSON one."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    for raw in pipe:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        if as_json:
            try:
                line = json.dumps(dict(json.loads(line), model=name), ensure_ascii=False)
            except (ValueError, TypeError):
                line = json.dumps({"model": name, "message": line}, ensure_ascii=False)
        else:
            line = f"[{name}] {line}"
        for handler in handlers:
            with handler.lock:
                handler.stream.write(line + "\n")
                handler.flush()
    pipe.close()


def _message(r: requests.Response) -> str:
    try:
        return str(r.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {r.status_code} from its /health"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((CHILD_HOST, 0))
        return s.getsockname()[1]


def _child_env(settings) -> dict:
    """The router's environment without what set the router's own flags (the child gets the
    forwarded ones on its command line) and with this project importable."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LLAMA_ARG_") and k != "LLAMA_API_KEY"}
    if settings.hf_token:
        env["HF_TOKEN"] = settings.hf_token
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
    return env


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the router dies, so a killed router leaves no
    server behind (Linux; elsewhere a no-op)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
