"""The import graph: lower layers never import upper ones (llama_lib < sampling < webapp),
and no two of the project's modules import each other, directly or around a longer loop,
even through imports placed inside functions (which hide a cycle without removing it)."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("llama_lib", "sampling", "webapp")
LAYER = {name: i for i, name in enumerate(PACKAGES)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            out[module_name(path)] = path
        for path in (ROOT / pkg).rglob("*.pyx"):
            out.setdefault(module_name(path), path)
    return out


def imports_of(name: str, path: Path, modules: dict) -> set[str]:
    """Project modules that ``name`` imports anywhere in its source (pyx: from/import lines)."""
    text = path.read_text()
    if path.suffix == ".pyx":   # Cython: keep only its Python import statements
        statements = re.findall(r"^[ \t]*(from[ \t]+\S+[ \t]+import[ \t]+(?:\([^)]*\)|[^\n]*)|import[ \t]+[^\n]+)",
                                text, re.M)
        text = "\n".join(st.strip() for st in statements if "cimport" not in st)
    tree = ast.parse(text)
    is_pkg = path.name == "__init__.py"
    base = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                mod = f"{anchor}.{node.module}" if node.module else anchor
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_lower_layers_never_import_upper_ones(graph):
    bad = [(a, b) for a, deps in graph.items() for b in deps
           if LAYER[b.split(".")[0]] > LAYER[a.split(".")[0]]]
    assert not bad, bad


def _is_ancestor_package(a: str, b: str) -> bool:
    # a package's __init__ importing its own submodules (and them importing names from the
    # package) is how packages publish their API, not a cycle between two modules
    return b.startswith(a + ".") or a.startswith(b + ".")


def test_no_import_cycles_between_modules(graph):
    edges = {a: {b for b in deps if not _is_ancestor_package(a, b)} for a, deps in graph.items()}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_alone_without_upper_layers(package):
    upper = [p for p in PACKAGES if LAYER[p] > LAYER[package]]
    code = (f"import sys, {package}; "
            f"bad = [m for m in sys.modules if m.split('.')[0] in {upper!r}]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
