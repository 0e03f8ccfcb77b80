"""Stub for the compiled scalar level of JSON Schema -> GBNF (twin: ``_json_schema_scalars_py``).

Its functions are C-level (cimported by ``_json_schema`` through the .pxd); from Python only
the Regex type is visible.
"""

class Regex:
    def __init__(self, conv: object, pattern: str, path: str, base: str) -> None: ...
