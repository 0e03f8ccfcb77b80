# cython: language_level=3
"""The scalar level of JSON Schema -> GBNF: what ``_json_schema.pyx`` cimports.

All of these build Python strings and lists, so all can raise (MemoryError at least).
``bound`` raises SchemaError for a non-finite bound; ``Regex.compile`` raises SchemaError
for a pattern feature the grammar cannot express. ``num_range`` returns [] when no number
lies within the bounds (the caller decides what that means).
"""

cdef str literal(str text)                             # a GBNF "..." literal of text
cdef str join(list parts)                              # non-empty parts joined by spaces
cdef str group(list alts)                              # one alternative, or ( a | b | ... )
cdef str rep(str atom, Py_ssize_t lo, object hi)       # atom{lo,hi}; hi None: unbounded
cdef list norm(list ranges)                            # (lo, hi) code point ranges, merged
cdef str class_body(list ranges)                       # the inside of a GBNF [...] class
cdef list num_range(object lo, bint lx, object hi, bint hx, bint integer)
cdef tuple bound(dict schema, str path, str inclusive, str exclusive, bint lower)


cdef class Regex:
    # compiles one ``pattern`` into GBNF over the JSON spelling of the string; ``conv`` is
    # the converter (its builtin/add/repeat make rules)
    cdef object conv
    cdef str s, path, base
    cdef Py_ssize_t i, n

    cdef fail(self, str what)
    cdef Py_UCS4 at(self, Py_ssize_t k)
    cdef str compile(self)
    cdef tuple sequence(self, bint top)
    cdef str join_items(self, list items)
    cdef tuple atom(self)
    cdef long escape(self) except -1
    cdef tuple char_class(self)
    cdef long class_char(self) except -1
    cdef str encode(self, list ranges, bint negated)
    cdef object braces(self)
    cdef tuple quantified(self, tuple atom)
