"""Finds and loads libllama (and its ggml libraries) once per process.

Where we look, first hit wins:
1. the ``lib_path`` argument (the server's ``--lib-path``),
2. ``$LLAMA_CPP_LIB_PATH``,
3. the ``llama_cpp/lib`` folder that ``pip install llama-cpp-python`` built. The folder is
   found from the package's import spec; the ``llama_cpp`` Python module is never imported.

After loading, the bindings are checked against the library once: the functions the server
cannot run without must exist, and the default context parameters must read back as
llama.cpp sets them (a cheap guard against a struct layout that moved).
"""
from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys
import threading
from pathlib import Path

from . import _log, _raw, _raw_mtmd
from .errors import LibraryNotFound, LlamaError

__all__ = ["load", "find_library_dir", "library", "cpu_backend_has_amx"]

logger = logging.getLogger(__name__)

_EXT = ".dylib" if sys.platform == "darwin" else ".dll" if os.name == "nt" else ".so"
_REQUIRED = (
    "llama_backend_init", "llama_model_load_from_file", "llama_init_from_model",
    "llama_decode", "llama_tokenize", "llama_token_to_piece", "llama_get_logits_ith",
    "llama_memory_seq_rm", "llama_batch_init",
)

_lock = threading.Lock()
_loaded: _raw.Bound | None = None
_ggml_cpu: _raw.Bound | None = None
_handles: list[ctypes.CDLL] = []


def _packaged_dir() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "lib"
        if (candidate / f"libllama{_EXT}").exists():
            return candidate
    return None


def find_library_dir(lib_path: str | None = None) -> Path:
    for origin, value in (("--lib-path", lib_path),
                          ("LLAMA_CPP_LIB_PATH", os.environ.get("LLAMA_CPP_LIB_PATH"))):
        if value:
            path = Path(value)
            if path.is_file():
                path = path.parent
            if not (path / f"libllama{_EXT}").exists():
                raise LibraryNotFound(f"{origin} points at {value}, which holds no libllama{_EXT}",
                                      log_tail=[])
            return path
    packaged = _packaged_dir()
    if packaged is None:
        raise LibraryNotFound(
            "libllama not found: run `make install` (pip builds llama-cpp-python==0.3.36), "
            "or set LLAMA_CPP_LIB_PATH / --lib-path to a folder with a libllama build",
            log_tail=[])
    return packaged


def _preload_ggml(folder: Path) -> None:
    """ggml's libraries first, global, so a build without an rpath still resolves. The CPU
    backend's own functions (what it was compiled with) are bound from its handle."""
    names = sorted(p.name for p in folder.glob(f"libggml*{_EXT}"))
    order = [n for n in names if n.startswith("libggml-base")]
    order += [n for n in names if n not in order and n != f"libggml{_EXT}"]
    order += [n for n in names if n == f"libggml{_EXT}"]
    for name in order:
        try:
            handle = ctypes.CDLL(str(folder / name), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:  # an optional backend whose driver is absent (CUDA on a CPU box)
            logger.debug("skipping %s: %s", name, exc)
            continue
        _handles.append(handle)
        if name == f"libggml-cpu{_EXT}":
            global _ggml_cpu
            _ggml_cpu = _raw.bind(handle, str(folder / name), _raw.GGML_CPU_FUNCTIONS)


def _check(lib: _raw.Bound) -> None:
    missing = [name for name in _REQUIRED if name in lib.missing]
    if missing:
        raise LlamaError(f"{lib.path} lacks required functions: {', '.join(missing)}", log_tail=[])
    params = lib.llama_context_default_params()
    if not (params.n_batch == 2048 and params.n_ubatch == 512 and params.n_seq_max == 1):
        raise LlamaError(
            f"{lib.path}: llama_context_params does not match the bindings (written for llama.cpp "
            f"{_raw.BINDINGS_COMMIT}); rebuild the library at that commit", log_tail=[])
    if lib.missing:
        logger.info("libllama lacks optional functions: %s", ", ".join(lib.missing))


def load(lib_path: str | None = None) -> _raw.Bound:
    """Load, bind, check and initialise libllama; later calls return the same library."""
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        folder = find_library_dir(lib_path)
        _preload_ggml(folder)
        path = folder / f"libllama{_EXT}"
        try:
            cdll = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise LibraryNotFound(f"cannot load {path}: {exc}", log_tail=[]) from exc
        _handles.append(cdll)
        lib = _raw.bind(cdll, str(path))
        lib.ggml = _raw.bind(cdll, str(path), _raw.GGML_FUNCTIONS)
        _check(lib)
        _log.install(lib)
        lib.llama_backend_init()
        mtmd = folder / f"libmtmd{_EXT}"
        if mtmd.exists():
            try:
                mcdll = ctypes.CDLL(str(mtmd))
                _handles.append(mcdll)
                lib.mtmd = _raw.bind(mcdll, str(mtmd), _raw_mtmd.FUNCTIONS)
                _log.install_mtmd(lib.mtmd)
            except OSError as exc:
                logger.debug("libmtmd not loaded: %s", exc)
        logger.info("libllama %s from %s", (lib.llama_version() or b"?").decode(), folder)
        _loaded = lib
        return lib


def cpu_backend_has_amx() -> bool:
    """Whether the loaded ggml CPU backend was compiled with its AMX kernels (which register
    an extra weight buffer type on CPUs that have AMX). False when it cannot tell (no
    separate libggml-cpu, or a build that lacks the query)."""
    library()
    if _ggml_cpu is None or "ggml_cpu_has_amx_int8" in _ggml_cpu.missing:
        return False
    return bool(_ggml_cpu.ggml_cpu_has_amx_int8())


def library() -> _raw.Bound:
    """The loaded library (loading it from the default places if nobody has yet)."""
    return _loaded if _loaded is not None else load()
