# cython: language_level=3, embedsignature=True
# (language_level: Python 3 str/division semantics; embedsignature: help(convert) shows it)
"""JSON Schema -> GBNF, compiled: the schema walker. The same algorithm as ``_json_schema_py``
(the pure-Python twin defines the right output; the tests compare both on every case and on
the corpus). Scalars (digit ranges, patterns, character classes) come from
``_json_schema_scalars`` through its .pxd; the data tables (building-block rules, keyword
lists, format checks) are the twin's, imported, so the two cannot drift apart. See the twin's
docstring for how each keyword becomes grammar.
"""
import json
import re
from urllib.parse import unquote

import jsonschema

from ._json_schema_py import (ALL_KINDS, ARRAY_KEYWORDS, BUILTINS, CHUNK, FORMAT_CHECKS, FORMATS,
                              KNOWN, MAX_KEYS, MAX_PRODUCT, MAX_REPEAT, MIN_KEYS, NUMBER_KEYWORDS,
                              OBJECT_KEYWORDS, STRING_KEYWORDS, UNSUPPORTED, _Empty)
from ._json_schema_scalars cimport (Regex, bound, class_body, group, join, literal, norm,
                                    num_range, rep)
from ._json_schema_scalars_py import NOT_RAW
from .json_schema import SchemaError

__all__ = ["convert"]

_RULE_CHARS = re.compile(r"[^a-zA-Z0-9-]+")


# --- schema helpers -----------------------------------------------------------------------
cdef str _dump(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


cdef bint _same(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


cdef dict _without(dict schema, tuple keys):
    return {k: v for k, v in schema.items() if k not in keys}


cdef bint _constraining(dict schema):
    for k in schema:
        if k in KNOWN:
            return True
    return False


cdef list _types(dict schema):
    t = schema.get("type")
    cdef list types
    if t is not None:
        types = [t] if isinstance(t, str) else list(dict.fromkeys(t))
        if "number" in types and "integer" in types:
            types.remove("integer")
        return types
    types = []
    for kind, keys in (("object", OBJECT_KEYWORDS), ("array", ARRAY_KEYWORDS),
                       ("string", STRING_KEYWORDS), ("number", NUMBER_KEYWORDS)):
        for k in keys:
            if k in schema:
                types.append(kind)
                break
    return types or ["any"]


cdef set _expand(types):
    cdef set out = set()
    for t in ([types] if isinstance(types, str) else types):
        if t == "number":
            out.update(("integer", "number"))
        else:
            out.add(t)
    return out


cdef str _kind(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


# --- the converter ---------------------------------------------------------------------------
cdef class _Converter:
    cdef object root, validator
    cdef dict rules, by_body, refs
    cdef set unguarded

    def __init__(self, root):
        self.root = root
        self.rules = {"root": None}   # name -> body; None while a rule is being built
        self.by_body = {}             # body -> name, so identical rules are shared
        self.refs = {"#": "root"}     # $ref pointer -> rule name
        self.unguarded = {"#"}        # refs being expanded with no '{' or '[' emitted since
        self.validator = None

    cdef str grammar(self):
        return "".join([f"{name} ::= {body}\n" for name, body in self.rules.items()])

    # --- the rule table
    cdef str reserve(self, str base):
        base = _RULE_CHARS.sub("-", base).strip("-") or "r"
        cdef str name = base
        cdef Py_ssize_t k = 1
        while name in self.rules or name in BUILTINS:
            k += 1
            name = f"{base}-{k}"
        self.rules[name] = None
        return name

    cpdef str add(self, str base, str body, target=None):
        if target is None:
            target = self.by_body.get(body) or self.reserve(base)
        self.rules[target] = body
        self.by_body.setdefault(body, target)
        return target

    cpdef str builtin(self, str name):
        if name not in self.rules:
            body, uses = BUILTINS[name]
            self.rules[name] = body
            self.by_body.setdefault(body, name)
            for dep in uses:
                self.builtin(dep)
        return name

    cpdef str repeat(self, str atom, Py_ssize_t lo, object hi, str base):
        if lo > MAX_REPEAT:
            raise SchemaError(f"a repetition of at least {lo} in {base} is more than the "
                              f"grammar engine allows ({MAX_REPEAT})", None, base)
        if hi is None or hi <= MAX_REPEAT:
            return rep(atom, lo, hi)
        cdef Py_ssize_t q, r
        q, r = divmod(hi - lo, CHUNK)
        if q > MAX_REPEAT:
            raise SchemaError(f"a repetition of up to {hi} in {base} is too long", None, base)
        cdef str chunk = self.add(base + "-chunk", rep(atom, CHUNK, CHUNK))
        tail = "( %s | %s )" % (join([rep(chunk, 0, q - 1), rep(atom, 0, CHUNK - 1)]),
                                join([rep(chunk, q, q), rep(atom, 0, r)]))
        return join([rep(atom, lo, lo), tail])

    cdef object attempt(self, fn):
        """fn(), or None (with every rule it added taken back) when it admits no value."""
        saved = dict(self.rules), dict(self.by_body), dict(self.refs), set(self.unguarded)
        try:
            return fn()
        except _Empty:
            self.rules, self.by_body, self.refs, self.unguarded = saved
            return None

    # --- $ref and allOf
    cdef str pointer(self, ref, str path):
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"only local $ref ('#/...') is supported; '{ref}' at {path} is not",
                              "$ref", path)
        cdef str fragment = unquote(ref[1:])
        if fragment and not fragment.startswith("/"):
            raise SchemaError(f"$ref '{ref}' at {path} names an anchor; only JSON pointers are "
                              f"supported", "$ref", path)
        return "#" + fragment

    cdef object resolve(self, str key, str path):
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

    cdef str ref(self, ref, str path):
        cdef str key = self.pointer(ref, path)
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

    cdef flatten(self, schema, str path, frozenset seen, list out):
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

    cdef dict merge(self, list schemas, str path):
        cdef list parts = []
        cdef dict merged = {}
        for schema in schemas:
            self.flatten(schema, path, frozenset(), parts)
        for part in parts:
            for key, value in part.items():
                if key not in KNOWN or key == "additionalProperties":
                    continue
                merged[key] = self.meet(key, merged[key], value, path) if key in merged else value
        self.merge_additional(parts, merged, path)
        return merged

    cdef object meet(self, str key, a, b, str path):
        cdef set kinds
        cdef list types, values
        cdef dict out
        if _same(a, b):
            return a
        if key == "type":
            kinds, types = _expand(a) & _expand(b), []
            for t in ([a] if isinstance(a, str) else a) + ([b] if isinstance(b, str) else b):
                if t == "integer" or t == "number":
                    t = "number" if "number" in kinds else "integer" if "integer" in kinds else None
                if t in kinds and t not in types:
                    types.append(t)
            if not types:
                raise _Empty(f"allOf at {path} asks for types that exclude each other", "type", path)
            return types
        if key == "enum" or key == "const":
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
        if key == "anyOf" or key == "oneOf":
            if len(a) * len(b) > MAX_PRODUCT:
                raise SchemaError(f"allOf at {path} multiplies out to more than {MAX_PRODUCT} "
                                  f"'{key}' alternatives", key, path)
            return [{"allOf": [x, y]} for x in a for y in b]
        if key == "uniqueItems":
            return a or b
        raise SchemaError(f"allOf at {path} combines two different '{key}' values, which the "
                          f"grammar cannot intersect", key, path)

    cdef merge_additional(self, list parts, dict merged, str path):
        cdef list extras = [p["additionalProperties"] for p in parts if "additionalProperties" in p]
        if not extras:
            return
        cdef dict props = dict(merged.get("properties", {}))
        cdef list required = merged.get("required", [])
        cdef list names = list(props) + [r for r in required if r not in props]
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
        cdef list schemas = [e for e in extras if isinstance(e, dict) and _constraining(e)]
        if any(e is False for e in extras):
            merged["additionalProperties"] = False
        elif schemas:
            merged["additionalProperties"] = schemas[0] if len(schemas) == 1 else {"allOf": schemas}
        else:
            merged["additionalProperties"] = True

    # --- schemas
    cdef check(self, schema, str path):
        if not isinstance(schema, dict):
            raise SchemaError(f"the schema at {path} must be an object or a boolean", None, path)
        for key in schema:
            if key in UNSUPPORTED:
                raise SchemaError(f"unsupported keyword '{key}' at {path}: the grammar cannot "
                                  f"enforce it", key, path)

    cdef str visit(self, schema, str path, str base, target=None):
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
        cdef list types = _types(schema)
        if len(types) == 1:
            return self.typed(types[0], schema, path, base, target)
        cdef list atoms = []
        for t in types:
            atom = self.attempt(lambda: self.typed(t, schema, path, f"{base}-{t}"))
            if atom is not None:
                atoms.append(atom)
        if not atoms:
            raise _Empty(f"no value of any listed type satisfies the schema at {path}", "type", path)
        return self.add(base, " | ".join(atoms), target)

    cdef str typed(self, str t, dict schema, str path, str base, target=None):
        if t == "null" or t == "boolean":
            return self.builtin(t)
        if t == "integer" or t == "number":
            return self.number(schema, path, base, target, t == "integer")
        if t == "string":
            return self.string(schema, path, base, target)
        if t == "any":
            return self.builtin("value")
        cdef set saved = self.unguarded
        self.unguarded = set()   # '{' or '[' comes first
        try:
            body = self.object(schema, path, base) if t == "object" else self.array(schema, path, base)
        finally:
            self.unguarded = saved
        return self.add(base, body, target)

    cdef str union(self, dict schema, str path, str base, target):
        cdef str key = "anyOf" if "anyOf" in schema else "oneOf"
        cdef dict rest = _without(schema, (key,))
        cdef list alts = list(schema[key]), atoms = []
        cdef Py_ssize_t i
        if _constraining(rest):
            alts = [self.attempt(lambda: self.merge([rest, alt], path)) for alt in alts]
        if key == "oneOf":
            self.check_disjoint(alts, path)
        for i in range(len(alts)):
            alt = alts[i]
            atom = None if alt is None else self.attempt(
                lambda: self.visit(alt, f"{path}/{key}/{i}", f"{base}-{i}"))
            if atom is not None and atom not in atoms:
                atoms.append(atom)
        if not atoms:
            raise _Empty(f"no alternative of '{key}' at {path} admits a value", key, path)
        if len(atoms) == 1 and target is None:
            return atoms[0]
        return self.add(base, " | ".join(atoms), target)

    cdef bint valid(self, value, schema) except -1:
        if self.validator is None:
            checker = jsonschema.FormatChecker(formats=())
            for name, check in FORMAT_CHECKS.items():
                checker.checks(name)(check)
            cls = jsonschema.validators.validator_for(self.root)
            self.validator = cls(self.root, format_checker=checker)
        return self.validator.evolve(schema=schema).is_valid(value)

    cdef str enum(self, dict schema, str path, str base, target):
        cdef list values = list(schema["enum"]) if "enum" in schema else [schema["const"]]
        cdef dict rest = _without(schema, ("enum", "const"))
        if rest.get("format", FORMATS[0]) not in FORMATS:
            raise SchemaError(f"unsupported string format '{rest['format']}' at {path} "
                              f"(supported: {', '.join(FORMATS)})", "format", path)
        if "const" in schema or _constraining(rest):
            values = [v for v in values if self.valid(v, schema)]
        cdef list literals = list(dict.fromkeys([literal(_dump(v)) for v in values]))
        if not literals:
            raise _Empty(f"no value of 'enum'/'const' at {path} satisfies the rest of the schema",
                         "enum", path)
        if len(literals) == 1 and target is None:
            return literals[0]
        return self.add(base, " | ".join(literals), target)

    cdef str string(self, dict schema, str path, str base, target):
        cdef str quote = r'"\""', inner
        lo, hi = schema.get("minLength", 0), schema.get("maxLength")
        cdef list others
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

    cdef str number(self, dict schema, str path, str base, target, bint integer):
        lo, lx = bound(schema, path, "minimum", "exclusiveMinimum", True)
        hi, hx = bound(schema, path, "maximum", "exclusiveMaximum", False)
        if lo is None and hi is None:
            return self.builtin("integer" if integer else "number")
        cdef list alts = num_range(lo, lx, hi, hx, integer)
        if not alts:
            raise _Empty(f"no {'integer' if integer else 'number'} lies within the bounds at "
                         f"{path}", "minimum", path)
        return self.add(base, " | ".join(alts), target)

    cdef str object(self, dict schema, str path, str base):
        cdef dict props = schema.get("properties", {})
        cdef list required = schema.get("required", [])
        extra = schema.get("additionalProperties")   # absent: write no other keys (a narrowing)
        cdef list names = list(props) + [r for r in required if r not in props]
        cdef list pairs = []   # (key/value expression, required?)
        cdef str sub_path
        for name in names:
            sub = props.get(name, True if extra is None else extra)
            sub_path = f"{path}/properties/{name.replace('~', '~0').replace('/', '~1')}"
            if name in required:
                value = self.visit(sub, sub_path, f"{base}-{name}")
            else:
                value = self.attempt(lambda: self.visit(sub, sub_path, f"{base}-{name}"))
            if value is not None:
                pairs.append((join([literal(_dump(name)), 'ws ":" ws', value]), name in required))
        extra_pair = None
        if extra is True or isinstance(extra, dict):
            value = self.attempt(lambda: self.visit(extra, f"{path}/additionalProperties",
                                                    f"{base}-additional"))
            if value is not None:
                key = self.add(f"{base}-additional-key", self.key_excluding(names))
                extra_pair = join([key, 'ws ":" ws', value])
        cdef Py_ssize_t n_required = sum([req for _, req in pairs])
        if schema.get("minProperties", 0) > n_required:
            raise SchemaError(f"'minProperties' at {path} asks for more properties than are "
                              f"required; the grammar cannot count them", "minProperties", path)
        if "maxProperties" in schema and (extra_pair or len(pairs) > schema["maxProperties"]):
            raise SchemaError(f"'maxProperties' at {path} allows fewer properties than the "
                              f"schema could write; the grammar cannot count them",
                              "maxProperties", path)
        return self.object_layout(pairs, extra_pair, base)

    cdef str key_excluding(self, list names):
        """A JSON key (no escapes) that is none of ``names``."""
        cdef dict trie = {}, node
        cdef Py_UCS4 c
        cdef bint plain
        for name in names:
            plain = True
            for c in name:
                if c == '"' or c == '\\' or c == '\x7f' or c < ' ':
                    plain = False
                    break
            if plain:
                node = trie
                for c in name:
                    node = node.setdefault(str(c), {})
                node[""] = {}
        return join([r'"\""', group(_key_alternatives(trie, self.builtin("key-char"))),
                      r'"\""'])

    cdef str object_layout(self, list pairs, extra, str base):
        """Pairs in order, the optional ones skippable, commas only between written pairs."""
        self.builtin("ws")
        cdef list parts = pairs + ([(extra, None)] if extra else [])
        if not parts:
            return '"{" ws "}"'
        cdef list starts = []   # (first pair written, index of the parts after it)
        cdef Py_ssize_t i
        cdef dict tails
        cdef str content
        for i in range(len(parts)):
            kv, req = parts[i]
            starts.append((kv if req is not None else f'{kv} ( ws "," ws {kv} )*', i + 1))
            if req:
                break
        if len(starts) == 1:
            content = join([starts[0][0]] + [_link(kv, req) for kv, req in parts[1:]])
        else:   # several ways to start: name each tail once rather than copy it per start
            tails = {len(parts): ""}
            for i in range(len(parts) - 1, 0, -1):
                tails[i] = self.add(f"{base}-rest", join([_link(parts[i][0], parts[i][1]),
                                                             tails[i + 1]]))
            content = group([join([lead, tails[j]]) for lead, j in starts])
        if any([req for _, req in pairs]):
            return f'"{{" ws {content} ws "}}"'
        return f'"{{" ws ( {content} ws )? "}}"'

    cdef str array(self, dict schema, str path, str base):
        items = schema.get("items")
        cdef list prefix
        cdef str prefix_key
        if isinstance(items, list):   # drafts before 2020-12: items as a tuple
            prefix, rest, prefix_key = items, schema.get("additionalItems"), "items"
        else:
            prefix, rest, prefix_key = schema.get("prefixItems", []), items, "prefixItems"
        if rest is None:   # any items, or after a prefix none (a narrowing)
            rest = not prefix
        lo, hi = schema.get("minItems", 0), schema.get("maxItems")
        cdef list elements = []
        cdef Py_ssize_t i, n
        for i in range(len(prefix) if hi is None else min(len(prefix), hi)):
            sub = prefix[i]
            atom = self.attempt(lambda: self.visit(sub, f"{path}/{prefix_key}/{i}", f"{base}-{i}"))
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
        cdef str tail = "", link, piece
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
    cdef check_disjoint(self, list alts, str path):
        cdef Py_ssize_t i, j
        for i in range(len(alts)):
            for j in range(i + 1, len(alts)):
                if alts[i] is not None and alts[j] is not None and not (
                        self.excludes(alts[i], alts[j]) and self.excludes(alts[j], alts[i])):
                    raise SchemaError(
                        f"'oneOf' at {path}: alternatives {i} and {j} may both match one value, "
                        f"and the grammar cannot enforce 'exactly one' (use 'anyOf' if either "
                        f"may match)", "oneOf", path)

    cdef object flat(self, schema):
        if isinstance(schema, dict) and ("$ref" in schema or "allOf" in schema):
            return self.merge([schema], "#")
        return schema

    cdef set kinds(self, schema, bint emitted, int depth=0):
        """JSON kinds the grammar may write for ``schema`` (emitted) or that can validate."""
        try:
            schema = self.flat(schema)
        except _Empty:
            return set()
        if not isinstance(schema, dict):
            return set(ALL_KINDS) if schema else set()
        cdef set out = set(ALL_KINDS), union
        cdef list types
        if "type" in schema:
            out = _expand(schema["type"])
        elif emitted and not any([k in schema for k in ("anyOf", "oneOf", "enum", "const")]):
            types = _types(schema)
            out = set(ALL_KINDS) if "any" in types else _expand(types)
        if "enum" in schema or "const" in schema:
            out &= {_kind(v) for v in (schema["enum"] if "enum" in schema else [schema["const"]])}
        for key in ("anyOf", "oneOf"):
            if key in schema and depth < 8:
                union = set()
                for alt in schema[key]:
                    union |= self.kinds(alt, emitted, depth + 1)
                out &= union
        return out

    cdef object const_values(self, schema):
        schema = self.flat(schema)
        if isinstance(schema, dict) and ("enum" in schema or "const" in schema):
            return schema["enum"] if "enum" in schema else [schema["const"]]
        return None

    cdef bint excludes(self, x, y) except -1:
        """True when no document the grammar writes for ``x`` validates against ``y``."""
        try:
            x, y = self.flat(x), self.flat(y)
        except _Empty:
            return True
        values = self.const_values(x)
        if values is not None:
            return not any([self.valid(v, x) and self.valid(v, y) for v in values])
        cdef set written = self.kinds(x, True)
        if not written & self.kinds(y, False):
            return True
        if written != {"object"} or not isinstance(y, dict) or not isinstance(x, dict):
            return False
        closed = x.get("additionalProperties", False) is False
        if closed and "anyOf" not in x and "oneOf" not in x:
            keys = set(x.get("properties", {})) | set(x.get("required", []))
            if any([k not in keys for k in y.get("required", [])]):
                return True
        for k in set(x.get("required", [])) & set(y.get("required", [])):
            vx = self.const_values(x.get("properties", {}).get(k, True))
            vy = self.const_values(y.get("properties", {}).get(k, True))
            if vx is not None and vy is not None and not any(
                    [_same(p, q) for p in vx for q in vy]):
                return True
        return False


cdef str _link(str kv, req):
    """One key/value part after some pair was written."""
    if req:
        return f'ws "," ws {kv}'
    return f'( ws "," ws {kv} )' + ("?" if req is False else "*")


cdef list _key_alternatives(dict node, str key_char):
    cdef list chars = sorted([c for c in node if c])
    if not chars:
        return [key_char + ("+" if "" in node else "*")]
    cdef str others = "[^" + class_body(norm([(ord(c), ord(c)) for c in chars] + NOT_RAW
                                               + [(0x7F, 0x7F)])) + "]"
    cdef list alts = [join([others, key_char + "*"])]
    for c in chars:
        alts.append(join([literal(c), group(_key_alternatives(node[c], key_char))]))
    return alts + ([] if "" in node else [""])


def convert(schema):
    """The GBNF grammar (root rule ``root``) for a JSON Schema that passed its meta-schema."""
    cdef _Converter conv = _Converter(schema)
    atom = conv.visit(schema, "#", "root", "root")
    if conv.rules["root"] is None:
        conv.rules["root"] = atom
    return conv.grammar()
