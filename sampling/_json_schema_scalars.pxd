# Cython pure-Python mode: this file types _json_schema_scalars.py (the one source) when it is
# compiled, and is the contract that _json_schema cimports.
#
# All of these build Python strings and lists, so all can raise (MemoryError at least).
# ``bound`` raises SchemaError for a non-finite bound; ``Regex.compile`` raises SchemaError
# for a pattern feature the grammar cannot express. ``num_range`` returns [] when no number
# lies within the bounds (the caller decides what that means).
#
# Numbers that come from a schema (bounds, repetition counts) stay Python objects: a schema
# may say 2.0 or 10**30, and the compiled build must answer as the interpreted one does
# rather than fail converting them to a C integer.

# lookup tables keyed by characters; typed dict, a Py_UCS4 key is plainly looked up as a str
# (untyped, Cython warns at each such lookup). Module-private when compiled.
cdef dict SHORTHANDS, _SIMPLE_ESCAPES, _HEX

cdef str literal(str text)                             # a GBNF "..." literal of text
cdef str join(list parts)                              # non-empty parts joined by spaces
cdef str group(list alts)                              # one alternative, or ( a | b | ... )
cdef str rep(str atom, lo, hi)                         # atom{lo,hi}; hi None: unbounded
cdef list norm(list ranges)                            # (lo, hi) code point ranges, merged
cdef str class_body(list ranges)                       # the inside of a GBNF [...] class
cdef list num_range(lo, bint lx, hi, bint hx, bint integer)   # Decimal bounds, None: open
cdef tuple bound(dict schema, str path, str inclusive, str exclusive, bint lower)

# used only inside the module
cdef list _subtract(list ranges, list cut)
cdef bint _contains(list ranges, long cp) except -1
cdef str _class_char(long cp)
cdef object encode_class(list ranges, bint negated)   # str, or None: no character to spell
cdef str _digits(int lo, int hi)
cdef list _same_len(str lo, str hi)
cdef list _pos_range(a, b)
cdef list _int_range(lo, hi)
cdef list _frac_cmp(str g, int n, str op, bint top)
cdef list _frac_between(str ga, bint ax, str gb, bint bx, int n, bint top)
cdef tuple _split(d)
cdef list _decimals(a, bint ax, b, bint bx)
cdef object _decimal(value, str path, str keyword)
cdef str _join_items(list items)


cdef class Regex:
    # compiles one ``pattern`` into GBNF over the JSON spelling of the string; ``conv`` is
    # the converter (its builtin/add/repeat make rules)
    cdef object conv
    cdef str s, path, base
    cdef Py_ssize_t i

    cdef fail(self, str what)                   # always raises SchemaError
    cdef str compile(self)
    cdef tuple sequence(self, bint top)         # (GBNF, ended at a top-level '$'?)
    cdef tuple atom(self)                       # (text, is it a literal?)
    cdef long escape(self) except -1            # the code point of an escape
    cdef tuple char_class(self)                 # (ranges, negated?)
    cdef long class_char(self) except -1
    cdef str encode(self, list ranges, bint negated)
    cdef object braces(self)                    # (lo, hi), or None: not a quantifier
    cdef tuple quantified(self, tuple atom)
