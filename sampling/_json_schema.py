# cython: embedsignature=True
# (embedsignature: help(convert) shows its signature in the compiled build too)
"""JSON Schema -> GBNF: the schema walker.

``convert(schema) -> str`` is a pure function. It trusts that the schema already passed its
meta-schema (``json_schema.schema_to_grammar`` checks that first). This module walks the
schema; ``_json_schema_scalars`` spells numbers in ranges and strings matching patterns.

One source, two builds: plain Python, which Cython also compiles in pure-Python mode, typed
by ``_json_schema.pxd`` (which also cimports the scalar helpers). ``COMPILED`` says which
build this is; ``json_schema`` can load this file interpreted beside the compiled build, and
the tests compare the two.

Soundness comes first: every document the grammar accepts validates against the schema. The
grammar may be narrower than the schema (properties in schema order, no other keys unless
``additionalProperties`` asks for them, no exponent in bounded numbers, bounded whitespace),
never wider. A keyword whose meaning the grammar cannot carry raises SchemaError naming it.

How combinators become grammar:
  - ``allOf`` (and ``$ref`` with constraining siblings) is merged into one schema: types and
    enums intersect, bounds tighten, properties unite (a property named twice becomes the
    ``allOf`` of both). Two different ``pattern``/``format`` values cannot be intersected.
  - siblings of ``anyOf``/``oneOf`` are distributed into every alternative; alternatives that
    admit no value are dropped. ``oneOf`` needs alternatives that provably never match the
    same value (different JSON types, disjoint enums, a const discriminator, a required key
    the other cannot have); otherwise "exactly one" is unenforceable and it is an error.
  - a ``$ref`` becomes one rule per target, so recursion works; a target that reaches itself
    before any ``{`` or ``[`` is an error (it would match no finite value).
"""
from __future__ import annotations

import ipaddress
import json
import re
from datetime import date
from urllib.parse import unquote

import cython
import jsonschema

from ._json_schema_scalars import NOT_RAW   # a Python-level table: not in the .pxd
from ._schema_error import SchemaError

if not cython.compiled:   # compiled, _json_schema.pxd cimports them as C functions
    from ._json_schema_scalars import (Regex, bound, class_body, group, join, literal, norm,
                                       num_range, rep)

__all__ = ["convert", "COMPILED"]

COMPILED = cython.compiled   # True in the build Cython compiled, False when interpreted

MAX_REPEAT = 2000      # libllama's MAX_REPETITION_THRESHOLD: a larger {m,n} bound becomes "unbounded"
CHUNK = 1000           # larger bounds are split into repetitions of a CHUNK-sized rule
MAX_PRODUCT = 64       # allOf of several anyOf lists multiplies out at most this many alternatives

# Every keyword a validator enforces is either handled (KNOWN) or refused (UNSUPPORTED); all
# others (title, description, $defs, ...) annotate, and are ignored as validators ignore them.
UNSUPPORTED = frozenset({
    "not", "if", "then", "else", "patternProperties", "dependentRequired", "dependentSchemas",
    "dependencies", "multipleOf", "contains", "minContains", "maxContains", "propertyNames",
    "unevaluatedProperties", "unevaluatedItems", "$dynamicRef", "$dynamicAnchor",
    "$recursiveRef", "$recursiveAnchor", "extends", "disallow", "divisibleBy"})
OBJECT_KEYWORDS = ("properties", "required", "additionalProperties", "minProperties", "maxProperties")
ARRAY_KEYWORDS = ("items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems")
STRING_KEYWORDS = ("minLength", "maxLength", "pattern", "format")
NUMBER_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
KNOWN = frozenset(("$ref", "allOf", "anyOf", "oneOf", "enum", "const", "type") + OBJECT_KEYWORDS
                  + ARRAY_KEYWORDS + STRING_KEYWORDS + NUMBER_KEYWORDS)
MIN_KEYS = frozenset({"minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"})
MAX_KEYS = frozenset({"maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"})
ALL_KINDS = frozenset({"null", "boolean", "object", "array", "string", "integer", "number"})

_DAY = '( "0" [1-9] | [12] [0-9] | "3" [01] )'
BUILTINS = {   # name -> (body, rules it uses)
    "ws": (r'| " " | "\n" [ \t]{0,20}', ()),
    "value": ("object | array | string | number | boolean | null",
              ("object", "array", "string", "number", "boolean", "null")),
    "object": ('"{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* ws )? "}"',
               ("ws", "string", "value")),
    "array": ('"[" ws ( value ( ws "," ws value )* ws )? "]"', ("ws", "value")),
    "string": (r'"\"" char* "\""', ("char",)),
    # one decoded character per match: \u escapes of surrogates are left out so that
    # minLength/maxLength count the same characters a validator counts
    "char": (r'[^"\\\x00-\x1F\x7F] | "\\" ( ["\\/bfnrt] | "u" ( [0-9a-cA-CefEF] [0-9a-fA-F]{3}'
             r' | [dD] [0-7] [0-9a-fA-F]{2} ) )', ()),
    "number": (r'"-"? int-part ( "." [0-9]{1,15} )? ( [eE] [-+]? [0-9]{1,2} )?', ("int-part",)),
    "int-part": ('"0" | [1-9] [0-9]{0,15}', ()),
    "integer": ('"-"? int-part', ("int-part",)),
    "boolean": ('"true" | "false"', ()),
    "null": ('"null"', ()),
    # a regex '.' (no newline, no JS line terminators), written the way JSON spells it
    "dot": (r'[^"\\\x00-\x1F\x7F\u2028\u2029] | "\\" ["\\/bft]', ()),
    "key-char": (r'[^"\\\x00-\x1F\x7F]', ()),
    "date": ('[1-9] [0-9]{3} "-" ( ( "0" [13578] | "1" [02] ) "-" ' + _DAY
             + ' | ( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" )'
             + ' | "02-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] ) )', ()),
    "time": ('( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )?'
             ' ( "Z" | [-+] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )', ()),
    "date-time": ('date "T" time', ("date", "time")),
    "uuid": ('[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-"'
             ' [0-9a-fA-F]{12}', ()),
    "ipv4": ('ipv4-octet "." ipv4-octet "." ipv4-octet "." ipv4-octet', ("ipv4-octet",)),
    "ipv4-octet": ('"25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9] [0-9] | [0-9]', ()),
}
FORMATS = ("date", "time", "date-time", "uuid", "ipv4")

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_TIME_RE = re.compile(r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)",
                      re.ASCII)
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def _is_date(s):
    try:   # the regex first: fromisoformat also takes week dates such as 2023-W01-1
        return _DATE_RE.fullmatch(s) is not None and date.fromisoformat(s).year >= 1000
    except ValueError:
        return False


def _is_ipv4(s):
    try:
        ipaddress.IPv4Address(s)
        return True
    except ValueError:
        return False


# Used only to filter enum/const values; strict enough to match what the grammars emit.
FORMAT_CHECKS = {
    "date": _is_date,
    "time": lambda s: _TIME_RE.fullmatch(s) is not None,
    "date-time": lambda s: len(s) > 11 and s[10] == "T" and _is_date(s[:10])
    and _TIME_RE.fullmatch(s[11:]) is not None,
    "uuid": lambda s: _UUID_RE.fullmatch(s) is not None,
    "ipv4": _is_ipv4,
}


class _Empty(SchemaError):
    """No value satisfies this (sub)schema; an anyOf alternative like this is dropped."""


# --- schema helpers -----------------------------------------------------------------------
_RULE_CHARS = re.compile(r"[^a-zA-Z0-9-]+")


# json.dumps with any option builds a new JSONEncoder on every call; built once here, they
# take about 10% off a conversion (both builds, the corpus in bench_structured)
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_SORTED = json.JSONEncoder(sort_keys=True).encode


def _dump(value):
    return _COMPACT(value)


def _same(a, b):
    return _SORTED(a) == _SORTED(b)


def _without(schema, keys):
    return {k: v for k, v in schema.items() if k not in keys}


def _constraining(schema):
    return any(k in KNOWN for k in schema)


def _types(schema):
    """The JSON types to emit for a schema without enum/const/anyOf/oneOf, in order.
    Without ``type`` the kinds its keywords imply (a narrowing), or "any"."""
    t = schema.get("type")
    if t is not None:
        types = [t] if isinstance(t, str) else list(dict.fromkeys(t))
        if "number" in types and "integer" in types:
            types.remove("integer")
        return types
    implied = [kind for kind, keys in (("object", OBJECT_KEYWORDS), ("array", ARRAY_KEYWORDS),
                                        ("string", STRING_KEYWORDS), ("number", NUMBER_KEYWORDS))
               if any(k in schema for k in keys)]
    return implied or ["any"]


def _expand(types):
    out = set()
    for t in ([types] if isinstance(types, str) else types):
        out.update(("integer", "number") if t == "number" else (t,))
    return out


def _kind(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")


# --- the converter ---------------------------------------------------------------------------
class _Converter:
    def __init__(self, root):
        self.root = root
        self.rules = {"root": None}   # name -> body; None while a rule is being built
        self.by_body = {}             # body -> name, so identical rules are shared
        self.refs = {"#": "root"}     # $ref pointer -> rule name
        self.unguarded = {"#"}        # refs being expanded with no '{' or '[' emitted since
        self.validator = None

    def grammar(self):
        return "".join(f"{name} ::= {body}\n" for name, body in self.rules.items())

    # --- the rule table
    def reserve(self, base):
        """A fresh rule name from ``base`` (its body to come)."""
        base = _RULE_CHARS.sub("-", base).strip("-") or "r"
        name, k = base, 1
        while name in self.rules or name in BUILTINS:
            k += 1
            name = f"{base}-{k}"
        self.rules[name] = None
        return name

    def add(self, base, body, target=None):
        if target is None:
            target = self.by_body.get(body) or self.reserve(base)
        self.rules[target] = body
        self.by_body.setdefault(body, target)
        return target

    def builtin(self, name):
        if name not in self.rules:
            body, uses = BUILTINS[name]
            self.rules[name] = body
            self.by_body.setdefault(body, name)
            for dep in uses:
                self.builtin(dep)
        return name

    def repeat(self, atom, lo, hi, base):
        if lo > MAX_REPEAT:
            raise SchemaError(f"a repetition of at least {lo} in {base} is more than the "
                              f"grammar engine allows ({MAX_REPEAT})", None, base)
        if hi is None or hi <= MAX_REPEAT:
            return rep(atom, lo, hi)
        q, r = divmod(hi - lo, CHUNK)
        if q > MAX_REPEAT:
            raise SchemaError(f"a repetition of up to {hi} in {base} is too long", None, base)
        chunk = self.add(base + "-chunk", rep(atom, CHUNK, CHUNK))
        tail = "( %s | %s )" % (join([rep(chunk, 0, q - 1), rep(atom, 0, CHUNK - 1)]),
                                join([rep(chunk, q, q), rep(atom, 0, r)]))
        return join([rep(atom, lo, lo), tail])

    def attempt(self, fn):
        """fn(), or None (with every rule it added taken back) when it admits no value."""
        saved = dict(self.rules), dict(self.by_body), dict(self.refs), set(self.unguarded)
        try:
            return fn()
        except _Empty:
            self.rules, self.by_body, self.refs, self.unguarded = saved
            return None

    # --- $ref and allOf
    def pointer(self, ref, path):
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"only local $ref ('#/...') is supported; '{ref}' at {path} is not",
                              "$ref", path)
        fragment = unquote(ref[1:])
        if fragment and not fragment.startswith("/"):
            raise SchemaError(f"$ref '{ref}' at {path} names an anchor; only JSON pointers are "
                              f"supported", "$ref", path)
        return "#" + fragment

    def resolve(self, key, path):
        node = self.root
        for part in key[2:].split("/") if key != "#" else ():
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise SchemaError(f"$ref '{key}' at {path} does not resolve", "$ref", path)
        if not isinstance(node, (dict, bool)):
            raise SchemaError(f"$ref '{key}' at {path} does not point to a schema", "$ref", path)
        return node

    def ref(self, ref, path):
        key = self.pointer(ref, path)
        name = self.refs.get(key)
        if name is not None:
            if key in self.unguarded:
                raise SchemaError(f"$ref '{ref}' at {path} reaches itself before any '{{' or '[': "
                                  f"no finite value matches it", "$ref", path)
            return name
        target = self.resolve(key, path)
        name = self.refs[key] = self.reserve(key.rsplit("/", 1)[-1] or "ref")
        self.unguarded.add(key)
        atom = self.visit(target, key, name, name)
        self.unguarded.discard(key)
        if self.rules[name] is None:
            self.rules[name] = atom
        return name

    def flatten(self, schema, path, seen, out):
        if schema is False:
            raise _Empty(f"no value can match the schema at {path}: it contains false", None, path)
        if schema is True:
            return
        self.check(schema, path)
        if "$ref" in schema:
            key = self.pointer(schema["$ref"], path)
            if key in seen:
                raise SchemaError(f"$ref '{key}' at {path} is circular through allOf", "$ref", path)
            self.flatten(self.resolve(key, path), key, seen | {key}, out)
        for i, sub in enumerate(schema.get("allOf", ())):
            self.flatten(sub, f"{path}/allOf/{i}", seen, out)
        out.append(_without(schema, ("$ref", "allOf")))

    def merge(self, schemas, path):
        """One schema equivalent to (or narrower than) the conjunction of ``schemas``."""
        parts = []
        for schema in schemas:
            self.flatten(schema, path, frozenset(), parts)
        merged = {}
        for part in parts:
            for key, value in part.items():
                if key not in KNOWN or key == "additionalProperties":
                    continue
                merged[key] = self.meet(key, merged[key], value, path) if key in merged else value
        self.merge_additional(parts, merged, path)
        return merged

    def meet(self, key, a, b, path):
        if _same(a, b):
            return a
        if key == "type":
            kinds, types = _expand(a) & _expand(b), []
            for t in ([a] if isinstance(a, str) else a) + ([b] if isinstance(b, str) else b):
                if t in ("integer", "number"):
                    t = "number" if "number" in kinds else "integer" if "integer" in kinds else None
                if t in kinds and t not in types:
                    types.append(t)
            if not types:
                raise _Empty(f"allOf at {path} asks for types that exclude each other", "type", path)
            return types
        if key in ("enum", "const"):
            values = [v for v in (a if key == "enum" else [a])
                      if any(_same(v, w) for w in (b if key == "enum" else [b]))]
            if not values:
                raise _Empty(f"allOf at {path} leaves no value of '{key}'", key, path)
            return values if key == "enum" else values[0]
        if key == "required":
            return a + [name for name in b if name not in a]
        if key == "properties":
            out = dict(a)
            for name, sub in b.items():
                out[name] = sub if name not in out or _same(out[name], sub) else \
                    {"allOf": [out[name], sub]}
            return out
        if key == "items" and not isinstance(a, list) and not isinstance(b, list):
            return False if a is False or b is False else {"allOf": [a, b]}
        if key in MIN_KEYS or key in MAX_KEYS:
            if isinstance(a, bool) or isinstance(b, bool):
                return a or b    # draft-4 exclusive flags: either one makes the bound exclusive
            return max(a, b) if key in MIN_KEYS else min(a, b)
        if key in ("anyOf", "oneOf"):
            if len(a) * len(b) > MAX_PRODUCT:
                raise SchemaError(f"allOf at {path} multiplies out to more than {MAX_PRODUCT} "
                                  f"'{key}' alternatives", key, path)
            return [{"allOf": [x, y]} for x in a for y in b]
        if key == "uniqueItems":
            return a or b
        raise SchemaError(f"allOf at {path} combines two different '{key}' values, which the "
                          f"grammar cannot intersect", key, path)

    def merge_additional(self, parts, merged, path):
        """additionalProperties of one allOf branch also binds the other branches' properties."""
        extras = [p["additionalProperties"] for p in parts if "additionalProperties" in p]
        if not extras:
            return
        props = dict(merged.get("properties", {}))
        required = merged.get("required", [])
        names = list(props) + [r for r in required if r not in props]
        for part in parts:
            extra = part.get("additionalProperties", True)
            if extra is True or (isinstance(extra, dict) and not _constraining(extra)):
                continue
            for name in names:
                if name in part.get("properties", {}):
                    continue
                if extra is not False:
                    props[name] = {"allOf": [props.get(name, True), extra]}
                elif name in required:
                    raise _Empty(f"allOf at {path} requires '{name}', which another branch's "
                                 f"additionalProperties forbids", "additionalProperties", path)
                else:
                    props.pop(name, None)
        if props or "properties" in merged:
            merged["properties"] = props
        schemas = [e for e in extras if isinstance(e, dict) and _constraining(e)]
        if any(e is False for e in extras):
            merged["additionalProperties"] = False
        elif schemas:
            merged["additionalProperties"] = schemas[0] if len(schemas) == 1 else {"allOf": schemas}
        else:
            merged["additionalProperties"] = True

    # --- schemas
    def check(self, schema, path):
        if not isinstance(schema, dict):
            raise SchemaError(f"the schema at {path} must be an object or a boolean", None, path)
        for key in schema:
            if key in UNSUPPORTED:
                raise SchemaError(f"unsupported keyword '{key}' at {path}: the grammar cannot "
                                  f"enforce it", key, path)

    def visit(self, schema, path, base, target=None):
        """The GBNF symbol (rule name or literal) for a schema; ``target`` names the rule."""
        if schema is False:
            raise _Empty(f"the schema at {path} is false: no value matches it", None, path)
        if schema is not True:
            self.check(schema, path)
        if schema is True or not _constraining(schema):
            return self.builtin("value")
        if "allOf" in schema or ("$ref" in schema and _constraining(_without(schema, ("$ref",)))):
            return self.visit(self.merge([schema], path), path, base, target)
        if "$ref" in schema:
            return self.ref(schema["$ref"], path)
        if "anyOf" in schema or "oneOf" in schema:
            return self.union(schema, path, base, target)
        if "enum" in schema or "const" in schema:
            return self.enum(schema, path, base, target)
        types = _types(schema)
        if len(types) == 1:
            return self.typed(types[0], schema, path, base, target)
        atoms = [a for a in (self.attempt(lambda t=t: self.typed(t, schema, path, f"{base}-{t}"))
                             for t in types) if a is not None]
        if not atoms:
            raise _Empty(f"no value of any listed type satisfies the schema at {path}", "type", path)
        return self.add(base, " | ".join(atoms), target)

    def typed(self, t, schema, path, base, target=None):
        if t in ("null", "boolean"):
            return self.builtin(t)
        if t in ("integer", "number"):
            return self.number(schema, path, base, target, t == "integer")
        if t == "string":
            return self.string(schema, path, base, target)
        if t == "any":
            return self.builtin("value")
        saved, self.unguarded = self.unguarded, set()   # '{' or '[' comes first
        try:
            body = self.object(schema, path, base) if t == "object" else self.array(schema, path, base)
        finally:
            self.unguarded = saved
        return self.add(base, body, target)

    def union(self, schema, path, base, target):
        key = "anyOf" if "anyOf" in schema else "oneOf"
        rest = _without(schema, (key,))
        alts = schema[key]
        if _constraining(rest):
            alts = [self.attempt(lambda alt=alt: self.merge([rest, alt], path)) for alt in alts]
        if key == "oneOf":
            self.check_disjoint(alts, path)
        atoms = []
        for i, alt in enumerate(alts):
            atom = None if alt is None else self.attempt(
                lambda alt=alt, i=i: self.visit(alt, f"{path}/{key}/{i}", f"{base}-{i}"))
            if atom is not None and atom not in atoms:
                atoms.append(atom)
        if not atoms:
            raise _Empty(f"no alternative of '{key}' at {path} admits a value", key, path)
        if len(atoms) == 1 and target is None:
            return atoms[0]
        return self.add(base, " | ".join(atoms), target)

    def valid(self, value, schema):
        if self.validator is None:
            checker = jsonschema.FormatChecker(formats=())
            for name, check in FORMAT_CHECKS.items():
                checker.checks(name)(check)
            cls = jsonschema.validators.validator_for(self.root)
            self.validator = cls(self.root, format_checker=checker)
        return self.validator.evolve(schema=schema).is_valid(value)

    def enum(self, schema, path, base, target):
        values = list(schema["enum"]) if "enum" in schema else [schema["const"]]
        rest = _without(schema, ("enum", "const"))
        if rest.get("format", FORMATS[0]) not in FORMATS:
            raise SchemaError(f"unsupported string format '{rest['format']}' at {path} "
                              f"(supported: {', '.join(FORMATS)})", "format", path)
        if "const" in schema or _constraining(rest):
            values = [v for v in values if self.valid(v, schema)]
        literals = list(dict.fromkeys(literal(_dump(v)) for v in values))
        if not literals:
            raise _Empty(f"no value of 'enum'/'const' at {path} satisfies the rest of the schema",
                         "enum", path)
        if len(literals) == 1 and target is None:
            return literals[0]
        return self.add(base, " | ".join(literals), target)

    def string(self, schema, path, base, target):
        quote = r'"\""'
        lo, hi = schema.get("minLength", 0), schema.get("maxLength")
        for key in ("pattern", "format"):
            if key not in schema:
                continue
            others = [k for k in ("pattern", "format", "minLength", "maxLength")
                      if k in schema and k != key]
            if others:
                raise SchemaError(f"'{key}' together with '{others[0]}' at {path} cannot be "
                                  f"enforced by the grammar", others[0], path)
            if key == "pattern":
                try:
                    re.compile(schema["pattern"])
                except re.error as e:
                    raise SchemaError(f"invalid regular expression in 'pattern' at {path}: {e}",
                                      "pattern", path) from None
                inner = Regex(self, schema["pattern"], path, base).compile()
            elif schema["format"] in FORMATS:
                inner = self.builtin(schema["format"])
            else:
                raise SchemaError(f"unsupported string format '{schema['format']}' at {path} "
                                  f"(supported: {', '.join(FORMATS)})", "format", path)
            return self.add(base, join([quote, inner, quote]), target)
        if hi is not None and lo > hi:
            raise _Empty(f"minLength is above maxLength at {path}", "minLength", path)
        if lo == 0 and hi is None:
            return self.builtin("string")
        return self.add(base, join([quote, self.repeat(self.builtin("char"), lo, hi, base),
                                    quote]), target)

    def number(self, schema, path, base, target, integer):
        lo, lx = bound(schema, path, "minimum", "exclusiveMinimum", True)
        hi, hx = bound(schema, path, "maximum", "exclusiveMaximum", False)
        if lo is None and hi is None:
            return self.builtin("integer" if integer else "number")
        alts = num_range(lo, lx, hi, hx, integer)
        if not alts:
            raise _Empty(f"no {'integer' if integer else 'number'} lies within the bounds at "
                         f"{path}", "minimum", path)
        return self.add(base, " | ".join(alts), target)

    def object(self, schema, path, base):
        props = schema.get("properties", {})
        required = schema.get("required", [])
        extra = schema.get("additionalProperties")   # absent: write no other keys (a narrowing)
        names = list(props) + [r for r in required if r not in props]
        pairs = []   # (key/value expression, required?)
        for name in names:
            sub = props.get(name, True if extra is None else extra)
            sub_path = f"{path}/properties/{name.replace('~', '~0').replace('/', '~1')}"
            fn = lambda sub=sub, name=name: self.visit(sub, sub_path, f"{base}-{name}")
            value = fn() if name in required else self.attempt(fn)
            if value is not None:
                pairs.append((join([literal(_dump(name)), 'ws ":" ws', value]), name in required))
        extra_pair = None
        if extra is True or isinstance(extra, dict):
            value = self.attempt(lambda: self.visit(extra, f"{path}/additionalProperties",
                                                    f"{base}-additional"))
            if value is not None:
                key = self.add(f"{base}-additional-key", self.key_excluding(names))
                extra_pair = join([key, 'ws ":" ws', value])
        n_required = sum(req for _, req in pairs)
        if schema.get("minProperties", 0) > n_required:
            raise SchemaError(f"'minProperties' at {path} asks for more properties than are "
                              f"required; the grammar cannot count them", "minProperties", path)
        if "maxProperties" in schema and (extra_pair or len(pairs) > schema["maxProperties"]):
            raise SchemaError(f"'maxProperties' at {path} allows fewer properties than the "
                              f"schema could write; the grammar cannot count them",
                              "maxProperties", path)
        return self.object_layout(pairs, extra_pair, base)

    def key_excluding(self, names):
        """A JSON key (no escapes) that is none of ``names``."""
        trie = {}
        for name in names:
            if not any(c in '"\\\x7f' or c < " " for c in name):
                node = trie
                for c in name:
                    node = node.setdefault(c, {})
                node[""] = {}
        key_char = self.builtin("key-char")

        def alternatives(node):
            chars = sorted(c for c in node if c)
            if not chars:
                return [key_char + ("+" if "" in node else "*")]
            others = "[^" + class_body(norm([(ord(c), ord(c)) for c in chars] + NOT_RAW
                                              + [(0x7F, 0x7F)])) + "]"
            alts = [join([others, key_char + "*"])]
            alts += [join([literal(c), group(alternatives(node[c]))]) for c in chars]
            return alts + ([] if "" in node else [""])
        return join([r'"\""', group(alternatives(trie)), r'"\""'])

    def object_layout(self, pairs, extra, base):
        """Pairs in order, the optional ones skippable, commas only between written pairs."""
        self.builtin("ws")
        parts = pairs + ([(extra, None)] if extra else [])   # required: True, False, None (repeats)
        if not parts:
            return '"{" ws "}"'

        def link(kv, req):   # one part after some pair was written
            return f'ws "," ws {kv}' if req else \
                f'( ws "," ws {kv} )' + ("?" if req is False else "*")
        starts = []   # (first pair written, index of the parts after it)
        for i, (kv, req) in enumerate(parts):
            starts.append((kv if req is not None else f'{kv} ( ws "," ws {kv} )*', i + 1))
            if req:
                break
        if len(starts) == 1:
            content = join([starts[0][0]] + [link(kv, req) for kv, req in parts[1:]])
        else:   # several ways to start: name each tail once rather than copy it per start
            tails = {len(parts): ""}
            for i in range(len(parts) - 1, 0, -1):
                tails[i] = self.add(f"{base}-rest", join([link(*parts[i]), tails[i + 1]]))
            content = group([join([lead, tails[j]]) for lead, j in starts])
        if any(req for _, req in pairs):
            return f'"{{" ws {content} ws "}}"'
        return f'"{{" ws ( {content} ws )? "}}"'

    def array(self, schema, path, base):
        items = schema.get("items")
        if isinstance(items, list):   # drafts before 2020-12: items as a tuple
            prefix, rest, prefix_key = items, schema.get("additionalItems"), "items"
        else:
            prefix, rest, prefix_key = schema.get("prefixItems", []), items, "prefixItems"
        if rest is None:   # any items, or after a prefix none (a narrowing)
            rest = not prefix
        lo, hi = schema.get("minItems", 0), schema.get("maxItems")
        elements = []
        for i, sub in enumerate(prefix[:hi]):
            atom = self.attempt(lambda sub=sub, i=i: self.visit(
                sub, f"{path}/{prefix_key}/{i}", f"{base}-{i}"))
            if atom is None:   # no value fits here: the array has to end before it
                break
            elements.append(atom)
        rest_atom = None
        if rest is not False and len(elements) == len(prefix):
            rest_atom = self.attempt(lambda: self.visit(
                rest, f"{path}/{'additionalItems' if prefix_key == 'items' else 'items'}",
                f"{base}-item"))
        cap = len(elements) if rest_atom is None else hi
        if cap is not None and hi is not None:
            cap = min(cap, hi)
        if cap is not None and lo > cap:
            raise _Empty(f"minItems at {path} asks for more items than the schema allows",
                         "minItems", path)
        if schema.get("uniqueItems") and (cap is None or cap > 1):
            raise SchemaError(f"unsupported keyword 'uniqueItems' at {path}: the grammar cannot "
                              f"enforce it", "uniqueItems", path)
        self.builtin("ws")
        if cap == 0:
            return '"[" ws "]"'
        n = len(elements)
        tail = ""
        if rest_atom is not None:
            link = f'( ws "," ws {rest_atom} )'
            more = None if cap is None else cap - max(n, 1)
            if n == 0:   # the first item has no comma before it
                tail = join([rest_atom, self.repeat(link, max(lo - 1, 0), more, base)])
            else:
                tail = self.repeat(link, max(lo - n, 0), more, base)
        for i in range(n - 1, -1, -1):
            piece = join([elements[i] if i == 0 else f"ws \",\" ws {elements[i]}", tail])
            tail = piece if i < lo or i == 0 else f"( {piece} )?"
        if lo == 0:
            return f'"[" ws ( {tail} ws )? "]"'
        return f'"[" ws {tail} ws "]"'

    # --- oneOf: alternatives must never match the same value
    def check_disjoint(self, alts, path):
        for i, a in enumerate(alts):
            for j in range(i + 1, len(alts)):
                if a is not None and alts[j] is not None and not (
                        self.excludes(a, alts[j]) and self.excludes(alts[j], a)):
                    raise SchemaError(
                        f"'oneOf' at {path}: alternatives {i} and {j} may both match one value, "
                        f"and the grammar cannot enforce 'exactly one' (use 'anyOf' if either "
                        f"may match)", "oneOf", path)

    def flat(self, schema):
        if isinstance(schema, dict) and ("$ref" in schema or "allOf" in schema):
            return self.merge([schema], "#")
        return schema

    def kinds(self, schema, emitted, depth=0):
        """JSON kinds the grammar may write for ``schema`` (emitted) or that can validate."""
        try:
            schema = self.flat(schema)
        except _Empty:
            return set()
        if not isinstance(schema, dict):
            return set(ALL_KINDS) if schema else set()
        out = set(ALL_KINDS)
        if "type" in schema:
            out = _expand(schema["type"])
        elif emitted and not any(k in schema for k in ("anyOf", "oneOf", "enum", "const")):
            types = _types(schema)
            out = set(ALL_KINDS) if "any" in types else _expand(types)
        if "enum" in schema or "const" in schema:
            out &= {_kind(v) for v in (schema["enum"] if "enum" in schema else [schema["const"]])}
        for key in ("anyOf", "oneOf"):
            if key in schema and depth < 8:
                out &= set().union(*(self.kinds(alt, emitted, depth + 1) for alt in schema[key]))
        return out

    def const_values(self, schema):
        schema = self.flat(schema)
        if isinstance(schema, dict) and ("enum" in schema or "const" in schema):
            return schema["enum"] if "enum" in schema else [schema["const"]]
        return None

    def excludes(self, x, y):
        """True when no document the grammar writes for ``x`` validates against ``y``."""
        try:
            x, y = self.flat(x), self.flat(y)
        except _Empty:
            return True
        values = self.const_values(x)
        if values is not None:
            return not any(self.valid(v, x) and self.valid(v, y) for v in values)
        written = self.kinds(x, True)
        if not written & self.kinds(y, False):
            return True
        if written != {"object"} or not isinstance(y, dict) or not isinstance(x, dict):
            return False
        closed = x.get("additionalProperties", False) is False
        if closed and "anyOf" not in x and "oneOf" not in x:
            keys = set(x.get("properties", {})) | set(x.get("required", []))
            if any(k not in keys for k in y.get("required", [])):
                return True
        for k in set(x.get("required", [])) & set(y.get("required", [])):
            vx = self.const_values(x.get("properties", {}).get(k, True))
            vy = self.const_values(y.get("properties", {}).get(k, True))
            if vx is not None and vy is not None and not any(_same(p, q) for p in vx for q in vy):
                return True
        return False


def convert(schema):
    """The GBNF grammar (root rule ``root``) for a JSON Schema that passed its meta-schema."""
    conv: _Converter = _Converter(schema)
    atom = conv.visit(schema, "#", "root", "root")
    if conv.rules["root"] is None:
        conv.rules["root"] = atom
    return conv.grammar()
