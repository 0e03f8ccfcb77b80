# Cython pure-Python mode: this file types _json_schema.py (the one source) when it is
# compiled. The converter's methods become C methods, except the three that Regex calls
# through its untyped ``conv`` (cpdef). Numbers that come from a schema stay Python objects
# (see _json_schema_scalars.pxd).

from sampling._json_schema_scalars cimport (Regex, bound, class_body, group, join, literal,
                                            norm, num_range, rep)

cdef str _dump(value)
cdef bint _same(a, b) except -1
cdef dict _without(dict schema, tuple keys)
cdef bint _constraining(dict schema) except -1
cdef list _types(dict schema)
cdef set _expand(types)
cdef str _kind(value)


cdef class _Converter:
    cdef object root, validator
    cdef dict rules, by_body, refs
    cdef set unguarded

    cdef str grammar(self)
    cdef str reserve(self, str base)
    cpdef str add(self, str base, str body, target=*)
    cpdef str builtin(self, str name)
    cpdef str repeat(self, str atom, lo, hi, str base)
    cdef object attempt(self, fn)
    cdef str pointer(self, ref, str path)
    cdef object resolve(self, str key, str path)
    cdef str ref(self, ref, str path)
    cdef flatten(self, schema, str path, frozenset seen, list out)
    cdef dict merge(self, list schemas, str path)
    cdef object meet(self, str key, a, b, str path)
    cdef merge_additional(self, list parts, dict merged, str path)
    cdef check(self, schema, str path)
    cdef str visit(self, schema, str path, str base, target=*)
    cdef str typed(self, str t, dict schema, str path, str base, target=*)
    cdef str union(self, dict schema, str path, str base, target)
    cdef bint valid(self, value, schema) except -1
    cdef str enum(self, dict schema, str path, str base, target)
    cdef str string(self, dict schema, str path, str base, target)
    cdef str number(self, dict schema, str path, str base, target, bint integer)
    cdef str object(self, dict schema, str path, str base)
    cdef str key_excluding(self, list names)
    cdef str object_layout(self, list pairs, extra, str base)
    cdef str array(self, dict schema, str path, str base)
    cdef check_disjoint(self, list alts, str path)
    cdef object flat(self, schema)
    cdef set kinds(self, schema, bint emitted, int depth=*)
    cdef object const_values(self, schema)
    cdef bint excludes(self, x, y) except -1
