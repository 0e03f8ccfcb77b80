"""Third-party test data read from the llama-cpp-python sdist the build downloads.

The sdist (``.wheels/sdist/llama_cpp_python-<version>.tar.gz``, kept by
``build_scripts/llama_wheel.sh``) vendors llama.cpp; its chat templates
(``models/templates/*.jinja``) and vocabulary GGUFs (``models/ggml-vocab-*.gguf``) serve as
test data. They are unpacked once per test session into a temporary folder, never committed.
"""
from __future__ import annotations

import functools
import os
import tarfile
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SDIST_GLOB = "llama_cpp_python-*.tar.gz"

__all__ = ["llama_cpp_dir", "template_path", "template_source", "vocab_gguf"]


@functools.cache
def _unpacked() -> Path | None:
    found = sorted((ROOT / ".wheels" / "sdist").glob(SDIST_GLOB))
    if not found:
        return None
    dest = Path(tempfile.mkdtemp(prefix="sdist-"))
    with tarfile.open(found[-1]) as tar:
        members = [m for m in tar.getmembers()
                   if "/vendor/llama.cpp/models/" in m.name and m.isfile()
                   and (m.name.endswith(".jinja") or "ggml-vocab-" in m.name)]
        tar.extractall(dest, members=members, filter="data")
    tops = [p for p in dest.iterdir() if p.is_dir()]
    return tops[0] / "vendor" / "llama.cpp" if tops else None


def llama_cpp_dir() -> Path:
    """The sdist's vendored llama.cpp folder (only models/ is unpacked); skips the test when
    the sdist is absent (it never is after `make install`; CI checks that)."""
    found = _unpacked()
    if found is None:
        if os.environ.get("CI_REQUIRE_SDIST"):
            raise RuntimeError("the llama-cpp-python sdist is missing from .wheels/sdist")
        pytest.skip("the llama-cpp-python sdist is not in .wheels/sdist (run make install)")
    return found


def template_path(name: str) -> Path:
    """models/templates/<name>.jinja (name with or without the extension)."""
    if not name.endswith(".jinja"):
        name += ".jinja"
    return llama_cpp_dir() / "models" / "templates" / name


def template_source(name: str) -> str:
    return template_path(name).read_text(encoding="utf-8")


def vocab_gguf(name: str) -> Path:
    """models/ggml-vocab-<name>.gguf, e.g. "qwen2", "llama-bpe"."""
    return llama_cpp_dir() / "models" / f"ggml-vocab-{name}.gguf"
