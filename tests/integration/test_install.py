"""A non-editable install carries everything the server needs: the project's wheel (built
here with pip, as `pip install .` builds it) holds the compiled Cython modules, the page
templates and the static files of the web front end."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q",
                    "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
                   check=True, timeout=600)
    [path] = out.glob("llama_server_py-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


@pytest.fixture(scope="module")
def wheel_names(wheel) -> set[str]:
    return set(wheel.namelist())


def test_the_wheel_holds_the_page_templates(wheel_names):
    for name in sorted(p.name for p in (ROOT / "templates").glob("*.html")):
        assert f"webapp/templates/{name}" in wheel_names


def test_the_wheel_holds_every_static_file(wheel_names):
    static = ROOT / "webapp" / "static"
    expected = {str(p.relative_to(ROOT)) for p in static.rglob("*") if p.is_file()}
    assert expected and expected <= wheel_names, sorted(expected - wheel_names)


def test_the_wheel_holds_every_python_module(wheel_names):
    """Every package of the source tree is in the wheel (a package missing from
    pyproject.toml's list is a server that fails to import once installed)."""
    expected = {str(p.relative_to(ROOT)) for top in ("llama_lib", "sampling", "webapp")
                for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts}
    assert expected and expected <= wheel_names, sorted(expected - wheel_names)


def test_the_wheel_holds_the_compiled_cython_modules(wheel_names):
    for pyx in sorted((ROOT / "sampling").glob("*.pyx")):
        stem = f"sampling/{pyx.stem}."
        assert any(n.startswith(stem) and n.endswith(".so") for n in wheel_names), pyx.name


def test_the_wheel_has_the_console_script(wheel, wheel_names):
    [entry_points] = [n for n in wheel_names if n.endswith(".dist-info/entry_points.txt")]
    assert "llama-server = webapp.cli:main" in wheel.read(entry_points).decode()
