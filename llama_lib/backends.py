"""ggml's backend registry: devices, remote (RPC) workers, and what happens when ggml aborts.

- ``devices()`` lists the registered devices (CPU, GPUs, RPC workers) as ``Device`` records;
  ``device_handles(names)`` turns ``-dev`` names into the NULL-terminated array that
  ``llama_model_params.devices`` takes (``none``: no device, the CPU alone).
- ``add_rpc_servers(endpoints)`` registers ggml RPC workers (``--rpc``) before the model
  loads, as llama-server does; a worker that cannot be reached is a ``BackendError`` naming
  it, found with a plain TCP connect first, because ggml itself aborts the process there.
- ``start_rpc_server(...)`` serves this machine's devices to others (``llama-rpc-server``).
- ``install_abort_handler(...)``: ggml ends the process with abort() on errors it cannot
  return (an RPC worker that dies mid-request is one). The handler records the message
  (``fatal_error()``, which the engine reports as its failure), tells the server, and keeps
  the aborting thread parked so that the server can answer the requests in flight with a
  500 naming the device and then exit with status 1 itself.
"""
from __future__ import annotations

import ctypes
import logging
import os
import re
import socket
import sys
from dataclasses import dataclass

from . import _raw
from ._loader import library
from .errors import LlamaError

__all__ = ["Device", "BackendError", "devices", "device_handles", "add_rpc_servers",
           "supports_rpc", "start_rpc_server", "install_abort_handler", "fatal_error",
           "parse_endpoint"]

logger = logging.getLogger(__name__)

_TYPES = {_raw.GGML_BACKEND_DEVICE_TYPE_CPU: "cpu", _raw.GGML_BACKEND_DEVICE_TYPE_GPU: "gpu",
          _raw.GGML_BACKEND_DEVICE_TYPE_IGPU: "igpu", _raw.GGML_BACKEND_DEVICE_TYPE_ACCEL: "accel"}


class BackendError(LlamaError):
    """A device or RPC worker that cannot be used."""

    def __init__(self, message: str):
        super().__init__(message, log_tail=[])


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    type: str            # cpu | gpu | igpu | accel
    memory_free: int     # bytes
    memory_total: int


def _ggml():
    return library().ggml


def devices() -> list[Device]:
    ggml = _ggml()
    out = []
    for i in range(ggml.ggml_backend_dev_count()):
        dev = ggml.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        ggml.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append(Device((ggml.ggml_backend_dev_name(dev) or b"").decode(),
                          (ggml.ggml_backend_dev_description(dev) or b"").decode(),
                          _TYPES.get(ggml.ggml_backend_dev_type(dev), "other"),
                          free.value, total.value))
    return out


def device_handles(names: list[str]):
    """``-dev`` names -> a NULL-terminated ``ggml_backend_dev_t`` array for the model
    params (keep it referenced while the model loads). ``["none"]``: the CPU alone."""
    ggml = _ggml()
    handles = []
    for name in names:
        if name == "none":
            continue
        dev = ggml.ggml_backend_dev_by_name(name.encode())
        if not dev:
            known = ", ".join(d.name for d in devices() if d.type != "cpu") or "none"
            raise BackendError(f"invalid device: {name} (available: {known})")
        handles.append(dev)
    return (_raw.ggml_backend_dev_t * (len(handles) + 1))(*handles, None)


def supports_rpc() -> bool:
    lib = library()
    if "llama_supports_rpc" in lib.missing or not lib.llama_supports_rpc():
        return False
    return bool(_ggml().ggml_backend_reg_by_name(b"RPC"))


def _rpc_proc(name: str, proto):
    ggml = _ggml()
    reg = ggml.ggml_backend_reg_by_name(b"RPC")
    if not reg:
        raise BackendError("this libllama was built without the RPC backend "
                           "(rebuild it with -DGGML_RPC=ON)")
    address = ggml.ggml_backend_reg_get_proc_address(reg, name.encode())
    if not address:
        raise BackendError(f"the RPC backend lacks {name}")
    return proto(address)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BackendError(f"invalid RPC endpoint {endpoint!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def add_rpc_servers(endpoints: list[str], timeout: float = 5.0) -> list[Device]:
    """Register each ``HOST:PORT`` worker's devices; returns the devices added."""
    if not supports_rpc():
        raise BackendError("--rpc: this libllama was built without the RPC backend "
                           "(rebuild it with -DGGML_RPC=ON)")
    add_server = _rpc_proc("ggml_backend_rpc_add_server", _raw.ggml_backend_rpc_add_server_t)
    ggml = _ggml()
    before = {d.name for d in devices()}
    for endpoint in endpoints:
        host, port = parse_endpoint(endpoint)
        try:   # ggml aborts the process on a failed connect: find out first
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            raise BackendError(f"RPC worker {endpoint} cannot be reached: {exc}") from None
        reg = add_server(endpoint.strip().encode())
        if not reg:
            raise BackendError(f"RPC worker {endpoint} offers no device")
        ggml.ggml_backend_register(reg)
        _rpc_endpoints.append(endpoint.strip())
    added = [d for d in devices() if d.name not in before]
    for d in added:
        logger.info("RPC device %s (%s): %d MiB, %d MiB free", d.name, d.description,
                    d.memory_total >> 20, d.memory_free >> 20)
    return added


def start_rpc_server(endpoint: str, cache_dir: str | None, n_threads: int,
                     device_names: list[str] | None) -> None:
    """Serve this machine's devices on ``endpoint`` (blocks for as long as it serves).
    Default devices as llama.cpp's rpc-server: every non-CPU device, else the CPU."""
    start = _rpc_proc("ggml_backend_rpc_start_server", _raw.ggml_backend_rpc_start_server_t)
    ggml = _ggml()
    if device_names:
        handles = [h for h in device_handles(device_names) if h]
    else:
        all_devs = [ggml.ggml_backend_dev_get(i) for i in range(ggml.ggml_backend_dev_count())]
        handles = [d for d in all_devs if ggml.ggml_backend_dev_type(d) != _raw.GGML_BACKEND_DEVICE_TYPE_CPU]
        handles = handles or [d for d in all_devs if ggml.ggml_backend_dev_type(d) == _raw.GGML_BACKEND_DEVICE_TYPE_CPU][:1]
    if not handles:
        raise BackendError("no device to serve")
    array = (_raw.ggml_backend_dev_t * len(handles))(*handles)
    start(endpoint.encode(), cache_dir.encode() if cache_dir else None, n_threads, len(handles), array)


# --- ggml_abort -------------------------------------------------------------------------
_rpc_endpoints: list[str] = []     # the workers registered, named in a fatal error
_fatal: str | None = None
_on_fatal = None
_exit_at_once = True
_callback = None          # the ctypes callback, referenced for as long as ggml may call it


def fatal_error() -> str | None:
    """The message of a ggml abort that happened in this process, if any."""
    return _fatal


def install_abort_handler(on_fatal=None, exit_at_once: bool = True) -> None:
    """``exit_at_once``: print the message and exit 1 (start-up); otherwise record it, call
    ``on_fatal(message)`` and park the aborting thread (serving: the server answers what is
    in flight and exits 1)."""
    global _on_fatal, _exit_at_once, _callback
    _on_fatal, _exit_at_once = on_fatal, exit_at_once
    if _callback is None:
        _callback = _raw.ggml_abort_callback_t(_on_abort)
        ggml = _ggml()
        if "ggml_set_abort_callback" not in ggml.missing:
            ggml.ggml_set_abort_callback(_callback)


def _on_abort(message: bytes) -> None:
    global _fatal
    text = (message or b"ggml aborted").decode("utf-8", "replace").strip()
    text = re.sub(r"^\S+\.(?:c|cpp|h):\d+: ", "", text)     # ggml's source location
    _fatal = f"the compute backend failed: {text}"
    if _rpc_endpoints:
        _fatal += f" (RPC worker{'s' if len(_rpc_endpoints) > 1 else ''}: {', '.join(_rpc_endpoints)})"
    if _exit_at_once:
        print(f"error: {_fatal}", file=sys.stderr, flush=True)
        os._exit(1)
    logger.critical("%s", _fatal)
    if _on_fatal is not None:
        try:
            _on_fatal(_fatal)
        except Exception:
            logger.exception("fatal-error hook failed")
    # abort() follows as soon as this returns: park this thread instead, for good
    from .engine.bridge import real_lock
    lock = real_lock()
    lock.acquire()
    lock.acquire()
