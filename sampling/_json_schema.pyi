"""Stub for the compiled JSON Schema -> GBNF converter (twin: ``_json_schema_py``)."""

def convert(schema: dict | bool) -> str:
    """The GBNF grammar (root rule ``root``) for a JSON Schema that passed its meta-schema.

    Raises ``sampling.json_schema.SchemaError`` for a schema the grammar cannot enforce.
    """
    ...
