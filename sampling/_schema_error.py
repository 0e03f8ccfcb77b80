"""The error the JSON Schema converter raises, in a module of its own so that the converter
modules and ``json_schema`` (which re-exports it) do not import each other."""
from __future__ import annotations

__all__ = ["SchemaError"]


class SchemaError(ValueError):
    """A schema that is invalid or that the converter cannot enforce. The message is meant
    for the client; ``keyword`` and ``path`` (a JSON pointer, ``#/...``) say where."""

    def __init__(self, message: str, keyword: str | None = None, path: str = "#"):
        super().__init__(message)
        self.keyword = keyword
        self.path = path
