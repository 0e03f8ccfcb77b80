"""JSON Schema -> GBNF grammar, for structured output (``json_schema`` in a request).

``schema_to_grammar(schema)`` checks the schema against its meta-schema, then converts it
with the converter (``_json_schema`` and ``_json_schema_scalars``: one plain-Python source
that Cython compiles in pure-Python mode). ``impl="cython"`` (the default) runs the compiled
build; ``impl="python"`` runs the same source interpreted, which the tests compare with it.
Anything the grammar cannot enforce is refused with a SchemaError that names the keyword and
where it is, rather than turned into a looser grammar.

Command line: ``python -m sampling.json_schema schema.json`` (or ``-`` for stdin) prints the
grammar.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import sys
from pathlib import Path

import jsonschema

from ._schema_error import SchemaError

__all__ = ["schema_to_grammar", "SchemaError", "check_schema", "main"]

log = logging.getLogger(__name__)


def check_schema(schema) -> None:
    """Raise SchemaError unless ``schema`` is valid under its meta-schema."""
    if not isinstance(schema, (dict, bool)):
        raise SchemaError(f"a JSON Schema must be an object or a boolean, not "
                          f"{type(schema).__name__}")
    cls = jsonschema.validators.validator_for(schema)
    if cls is jsonschema.Draft3Validator:
        raise SchemaError("JSON Schema draft 3 is not supported; use draft 4 or later",
                          "$schema", "#")
    error = jsonschema.exceptions.best_match(_meta_validator(cls).iter_errors(schema))
    if error is not None:
        parts = [str(p).replace("~", "~0").replace("/", "~1") for p in error.path]
        path = "#" + "".join("/" + p for p in parts)
        keyword = parts[-1] if parts and not parts[-1].isdigit() else None
        raise SchemaError(f"invalid JSON Schema at {path}: {error.message}", keyword, path)


@functools.lru_cache(maxsize=None)
def _meta_validator(cls):
    # What cls.check_schema does, minus building the meta-schema validator on every call
    # (that was most of the ~4 ms a corpus schema took to check).
    meta = jsonschema.validators.validator_for(cls.META_SCHEMA, default=cls)
    return meta(cls.META_SCHEMA, format_checker=meta.FORMAT_CHECKER)


_warned = False


def _converter(impl: str):
    global _warned
    if impl == "python":
        return _interpreted().convert
    if impl != "cython":
        raise ValueError(f"impl must be 'cython' or 'python', not {impl!r}")
    from . import _json_schema
    if not _json_schema.COMPILED and not _warned:   # not built (e.g. a plain checkout)
        log.warning("sampling._json_schema is not built; using the interpreted converter")
        _warned = True
    return _json_schema.convert


@functools.lru_cache(maxsize=None)
def _interpreted():
    """The converter's .py sources run by the interpreter, even where the compiled build is
    installed (whose extension modules shadow them): loaded from their files as
    ``sampling._json_schema_scalars_py`` and ``sampling._json_schema_py``.

    While the walker loads, ``sampling._json_schema_scalars`` in ``sys.modules`` names the
    interpreted scalars, so that its ``from ._json_schema_scalars import ...`` takes them and
    the whole build is interpreted (CPython's tests load pure-Python modules beside their C
    accelerators the same way: ``test.support.import_helper.import_fresh_module``). Only
    ``impl="python"`` (tests, benchmarks, the command line) gets here, never the server."""
    name = f"{__package__}._json_schema_scalars"
    real = sys.modules.get(name)
    sys.modules[name] = _load_source("_json_schema_scalars")
    try:
        return _load_source("_json_schema")
    finally:
        if real is None:
            del sys.modules[name]
        else:
            sys.modules[name] = real


def _load_source(stem: str):
    """sampling/<stem>.py executed as the module ``sampling.<stem>_py``."""
    name = f"{__package__}.{stem}_py"
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(stem + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def schema_to_grammar(schema: dict | bool, *, impl: str = "cython") -> str:
    """The GBNF grammar (root rule ``root``) whose documents all validate against ``schema``."""
    try:
        # Clients tend to send the same schema with every request. The key keeps key order,
        # which the grammar follows.
        key = json.dumps(schema, ensure_ascii=False)
    except (TypeError, ValueError):
        key = None
    if key is None:
        check_schema(schema)
        return _converter(impl)(schema)
    return _cached(key, impl)


@functools.lru_cache(maxsize=256)
def _cached(key: str, impl: str) -> str:
    schema = json.loads(key)
    check_schema(schema)
    return _converter(impl)(schema)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sampling.json_schema",
        description="Print the GBNF grammar for a JSON Schema.")
    parser.add_argument("schema", help="path of a JSON Schema file, or - to read stdin")
    parser.add_argument("--impl", choices=("cython", "python"), default="cython",
                        help="converter to use (default: cython)")
    args = parser.parse_args(argv)
    try:
        if args.schema == "-":
            text = sys.stdin.read()
        else:
            with open(args.schema, encoding="utf-8") as f:
                text = f.read()
        schema = json.loads(text)
    except (OSError, ValueError) as e:
        print(f"error: cannot read a JSON schema from {args.schema}: {e}", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(schema_to_grammar(schema, impl=args.impl))
    except SchemaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
