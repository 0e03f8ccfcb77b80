"""Fill deploy/haproxy/haproxy.cfg in for a set of replicas.

    python deploy/haproxy/render.py [--bind ADDR] [--stats-bind ADDR] HOST:PORT...

Each block between ``# replicas begin`` and ``# replicas end`` becomes one server line per
replica, named r1, r2, ... and shaped like the block's first line (its options after the
address are kept, and ``track BACKEND/rN`` follows the new name). ``--bind`` replaces the
address the ``llm`` frontend listens on, ``--stats-bind`` the status page's. The result goes
to stdout (``render()`` returns it).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

__all__ = ["TEMPLATE", "render"]

TEMPLATE = Path(__file__).with_name("haproxy.cfg")
BEGIN, END = "# replicas begin", "# replicas end"


def render(replicas: list[str], bind: str | None = None, stats_bind: str | None = None,
           template: str | None = None) -> str:
    if not replicas:
        raise ValueError("at least one replica (HOST:PORT) is needed")
    text = TEMPLATE.read_text() if template is None else template
    out: list[str] = []
    block: list[str] | None = None
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not line[:1].isspace() and stripped and not stripped.startswith("#"):
            section = stripped                       # e.g. "frontend llm", "listen stats"
        if stripped == BEGIN:
            block = []
            out.append(line)
        elif stripped == END:
            if block is None or not block:
                raise ValueError(f"an empty or unopened replica block in section {section!r}")
            out.extend(_servers(block[0], replicas))
            out.append(line)
            block = None
        elif block is not None:
            if stripped.startswith("server "):
                block.append(line)
        elif stripped.startswith("bind ") and section == "frontend llm" and bind:
            out.append(_rebind(line, bind))
        elif stripped.startswith("bind ") and section == "listen stats" and stats_bind:
            out.append(_rebind(line, stats_bind))
        else:
            out.append(line)
    if block is not None:
        raise ValueError(f"{BEGIN!r} without {END!r}")
    return "\n".join(out) + "\n"


def _servers(pattern: str, replicas: list[str]) -> list[str]:
    indent = pattern[:len(pattern) - len(pattern.lstrip())]
    _server, _name, _addr, *options = pattern.split()
    lines = []
    for i, addr in enumerate(replicas, 1):
        name = f"r{i}"
        opts = [re.sub(r"^([\w.-]+)/[\w.-]+$", rf"\1/{name}", o) for o in options]
        lines.append(f"{indent}server {name} {addr} {' '.join(opts)}".rstrip())
    return lines


def _rebind(line: str, addr: str) -> str:
    indent = line[:len(line) - len(line.lstrip())]
    return f"{indent}bind {addr}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("replicas", nargs="+", metavar="HOST:PORT")
    ap.add_argument("--bind", help="address the llm frontend listens on (default: the template's)")
    ap.add_argument("--stats-bind", help="address of the status page (default: the template's)")
    args = ap.parse_args(argv)
    sys.stdout.write(render(args.replicas, args.bind, args.stats_bind))


if __name__ == "__main__":
    main()
