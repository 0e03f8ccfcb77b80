# cython: language_level=3, embedsignature=True
# (language_level: Python 3 str/division semantics; embedsignature: help() shows signatures)
"""The scalar level of JSON Schema -> GBNF, compiled: GBNF text helpers, code point sets in
JSON's spelling, integer and decimal ranges as digit grammars, ``pattern`` regexes. The same
algorithms as ``_json_schema_scalars_py`` (the definition of the right output); the data
tables are imported from it. The contract the converter cimports is in the .pxd.
"""
import json
import re
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from .json_schema import SchemaError
from ._json_schema_scalars_py import (JSON_ESCAPES, MAX_FRAC_DIGITS, MAX_INT_DIGITS, NOT_RAW,
                                      SHORTHANDS)

_BRACES = re.compile(r"\{(\d*)(,?)(\d*)\}")


# --- GBNF text ----------------------------------------------------------------------------
cdef str literal(str text):
    cdef list out = ['"']
    cdef Py_UCS4 c
    for c in text:
        if c == '\\':
            out.append('\\\\')
        elif c == '"':
            out.append('\\"')
        elif c == '\n':
            out.append('\\n')
        elif c == '\r':
            out.append('\\r')
        elif c == '\t':
            out.append('\\t')
        else:
            out.append(c)
    out.append('"')
    return "".join(out)




cdef str join(list parts):
    return " ".join([p for p in parts if p])


cdef str group(list alts):
    cdef list unique = list(dict.fromkeys(alts))
    if len(unique) == 1:
        return unique[0]
    return "( " + " | ".join(unique) + " )"


cdef str rep(str atom, Py_ssize_t lo, object hi):
    if hi is None:
        return atom + ("*" if lo == 0 else "+" if lo == 1 else "{%d,}" % lo)
    cdef Py_ssize_t top = hi
    if top == 0:
        return ""
    if lo == top:
        return atom if lo == 1 else "%s{%d}" % (atom, lo)
    if lo == 0 and top == 1:
        return atom + "?"
    return "%s{%d,%d}" % (atom, lo, top)




# --- code point sets (sorted, merged (lo, hi) ranges) ---------------------------------------
cdef list norm(list ranges):
    cdef list out = []
    cdef long lo, hi, last_lo, last_hi
    for lo, hi in sorted(ranges):
        if out:
            last_lo, last_hi = out[len(out) - 1]
            if lo <= last_hi + 1:
                out[len(out) - 1] = (last_lo, max(last_hi, hi))
                continue
        out.append((lo, hi))
    return out


cdef list _subtract(list ranges, list cut):
    cdef list out = [], cuts = norm(cut)
    cdef long lo, hi, clo, chi
    for lo, hi in norm(ranges):
        for clo, chi in cuts:
            if chi < lo or clo > hi:
                continue
            if clo > lo:
                out.append((lo, clo - 1))
            lo = chi + 1
            if lo > hi:
                break
        if lo <= hi:
            out.append((lo, hi))
    return out


cdef bint _contains(list ranges, long cp):
    cdef long lo, hi
    for lo, hi in ranges:
        if lo <= cp <= hi:
            return True
    return False


cdef str _class_char(long cp):
    if 0x20 < cp < 0x7F and cp not in (0x5C, 0x5D, 0x2D, 0x5E, 0x22):
        return chr(cp)
    if cp == 0x20:
        return " "
    if cp < 0x80:
        return "\\x%02X" % cp
    return "\\u%04X" % cp if cp <= 0xFFFF else "\\U%08X" % cp


cdef str class_body(list ranges):
    cdef list out = []
    cdef long lo, hi
    for lo, hi in ranges:
        out.append(_class_char(lo) if lo == hi else _class_char(lo) + "-" + _class_char(hi))
    return "".join(out)


cdef object encode_class(list ranges, bint negated):
    cdef list escapes, kept, alts
    cdef str raw
    if negated:
        raw = "[^" + class_body(norm(ranges + NOT_RAW)) + "]"
        escapes = [e for cp, e in JSON_ESCAPES if not _contains(ranges, cp)]
    else:
        kept = _subtract(ranges, NOT_RAW)
        raw = "[" + class_body(kept) + "]" if kept else ""
        escapes = [e for cp, e in JSON_ESCAPES if _contains(ranges, cp)]
    alts = ([raw] if raw else []) + [literal(e) for e in escapes]
    return group(alts) if alts else None


# --- numeric ranges ---------------------------------------------------------------------------
cdef str _digits(int lo, int hi):
    return "[%d]" % lo if lo == hi else "[%d-%d]" % (lo, hi)


cdef list _same_len(str lo, str hi):
    if lo == hi:
        return [literal(lo)]
    cdef Py_ssize_t i = 0, k
    while lo[i] == hi[i]:
        i += 1
    cdef int a = ord(lo[i]) - 48, b = ord(hi[i]) - 48, start, end
    k = len(lo) - i - 1
    cdef list alts = []
    cdef str nines = "9" * k, zeros = "0" * k
    if k == 0:
        alts.append(_digits(a, b))
    else:
        start, end = a, b
        if lo[i + 1:] != zeros:
            alts.append(join([literal(lo[i]), group(_same_len(lo[i + 1:], nines))]))
            start = a + 1
        if hi[i + 1:] != nines:
            end = b - 1
        if start <= end:
            alts.append(join([_digits(start, end), rep("[0-9]", k, k)]))
        if hi[i + 1:] != nines:
            alts.append(join([literal(hi[i]), group(_same_len(zeros, hi[i + 1:]))]))
    return [join([literal(lo[:i]), group(alts)])] if i else alts


cdef list _pos_range(object a, object b):
    cdef str sa = str(a), sb
    cdef list alts
    if b is None:
        alts = _same_len(sa, "9" * len(sa))
        if len(sa) < MAX_INT_DIGITS:
            alts.append(join(["[1-9]", rep("[0-9]", len(sa), MAX_INT_DIGITS - 1)]))
        return alts
    sb = str(b)
    if len(sa) == len(sb):
        return _same_len(sa, sb)
    alts = _same_len(sa, "9" * len(sa))
    if len(sb) - len(sa) >= 2:
        alts.append(join(["[1-9]", rep("[0-9]", len(sa), len(sb) - 2)]))
    return alts + _same_len("1" + "0" * (len(sb) - 1), sb)


cdef list _int_range(object lo, object hi):
    cdef list alts = []
    if lo is None or lo < 0:
        magnitude_lo = 1 if hi is None or hi >= 0 else -hi
        alts.append(join(['"-"', group(_pos_range(magnitude_lo, None if lo is None else -lo))]))
    if hi is None or hi >= 0:
        alts.extend(_pos_range(max(lo or 0, 0), hi))
    return alts


cdef list _frac_cmp(str g, int n, str op, bint top):
    cdef bint below = op == "le" or op == "lt"
    if not g:
        if op == "ge":
            return [rep("[0-9]", 1 if top else 0, n)] if n or not top else []
        if op == "gt":
            return [join([rep("[0-9]", 0, n - 1), "[1-9]"])] if n else []
        return [""] if op == "le" and not top else []
    if n == 0:
        return [""] if below and not top else []
    cdef int d = ord(g[0]) - 48
    cdef list alts = [""] if below and not top else []
    if not below and d < 9:
        alts.append(join([_digits(d + 1, 9), rep("[0-9]", 0, n - 1)]))
    if below and d > 0:
        alts.append(join([_digits(0, d - 1), rep("[0-9]", 0, n - 1)]))
    for s in _frac_cmp(g[1:], n - 1, op, False):
        alts.append(join([literal(g[0]), s]))
    return alts


cdef list _frac_between(str ga, bint ax, str gb, bint bx, int n, bint top):
    cdef bint zero_ok = not top and not ga and not ax
    if not gb:
        return [""] if zero_ok and not bx else []
    if n == 0:
        return [""] if zero_ok else []
    cdef int da = ord(ga[0]) - 48 if ga else 0, db = ord(gb[0]) - 48
    cdef list alts = [""] if zero_ok else []
    if da == db:
        for s in _frac_between(ga[1:], ax, gb[1:], bx, n - 1, False):
            alts.append(join([literal(gb[0]), s]))
        return alts
    for s in _frac_cmp(ga[1:], n - 1, "gt" if ax else "ge", False):
        alts.append(join([literal(str(da)), s]))
    if da + 1 <= db - 1:
        alts.append(join([_digits(da + 1, db - 1), rep("[0-9]", 0, n - 1)]))
    for s in _frac_cmp(gb[1:], n - 1, "lt" if bx else "le", False):
        alts.append(join([literal(gb[0]), s]))
    return alts


cdef tuple _split(object d):
    whole = int(d)
    frac = d - whole
    return whole, "" if frac == 0 else format(frac, "f").split(".")[1].rstrip("0")


cdef list _decimals(object a, bint ax, object b, bint bx):
    ia, ga = _split(a)
    cdef str fraction = "[0-9]{1,%d}" % MAX_FRAC_DIGITS
    cdef list f, alts = []
    ib, gb = None, ""
    if b is not None:
        ib, gb = _split(b)
        if ia == ib:
            f = _frac_between(ga, ax, gb, bx, MAX_FRAC_DIGITS, True)
            return [join([literal(str(ia) + "."), group(f)])] if f else []
    start = ia
    if ga or ax:
        start = ia + 1
        f = _frac_cmp(ga, MAX_FRAC_DIGITS, "gt" if ax else "ge", True)
        if f:
            alts.append(join([literal(str(ia) + "."), group(f)]))
    end = None if b is None else ib - 1
    if end is None or start <= end:
        alts.append(join([group(_pos_range(start, end)), '"."', fraction]))
    if b is not None and gb:
        f = _frac_cmp(gb, MAX_FRAC_DIGITS, "lt" if bx else "le", True)
        if f:
            alts.append(join([literal(str(ib) + "."), group(f)]))
    return alts


cdef list num_range(object lo, bint lx, object hi, bint hx, bint integer):
    ilo = None if lo is None else int(lo.to_integral_value(ROUND_CEILING))
    if lo is not None and lx and ilo == lo:
        ilo += 1
    ihi = None if hi is None else int(hi.to_integral_value(ROUND_FLOOR))
    if hi is not None and hx and ihi == hi:
        ihi -= 1
    cdef list alts = _int_range(ilo, ihi) if ilo is None or ihi is None or ilo <= ihi else []
    cdef list negative
    if integer:
        return alts
    zero = Decimal(0)
    if lo is None or lo < 0:
        a, ax = (-hi, hx) if hi is not None and hi < 0 else (zero, True)
        negative = _decimals(a, ax, None if lo is None else -lo, lx)
        if negative:
            alts.append(join(['"-"', group(negative)]))
    if hi is None or hi >= 0:
        a, ax = (lo, lx) if lo is not None and lo >= 0 else (zero, False)
        alts.extend(_decimals(a, ax, hi, hx))
    return alts


cdef object _decimal(value, str path, str keyword):
    d = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not d.is_finite():
        raise SchemaError(f"'{keyword}' at {path} must be a finite number", keyword, path)
    return d


cdef tuple bound(dict schema, str path, str inclusive, str exclusive, bint lower):
    cdef list found = []
    flag = schema.get(exclusive)
    if inclusive in schema:
        found.append((_decimal(schema[inclusive], path, inclusive), flag is True))
    if exclusive in schema and not isinstance(flag, bool):
        found.append((_decimal(flag, path, exclusive), True))
    if not found:
        return None, False
    best = found[0]
    for b in found[1:]:   # the tighter value wins; on a tie the exclusive one
        if (b[0] > best[0] if lower else b[0] < best[0]) or (b[0] == best[0] and b[1]):
            best = b
    return best


# --- regular expressions -------------------------------------------------------------------
cdef dict _SIMPLE_ESCAPES = {"n": 10, "t": 9, "r": 13, "f": 12, "v": 11, "a": 7}
cdef dict _HEX = {"x": 2, "u": 4, "U": 8}


cdef class Regex:
    def __init__(self, conv, str pattern, str path, str base):
        self.conv, self.s, self.i, self.n, self.path, self.base = \
            conv, pattern, 0, len(pattern), path, base

    cdef fail(self, str what):
        raise SchemaError(f"'pattern' at {self.path} uses {what}, which the grammar cannot "
                          f"express", "pattern", self.path)

    cdef Py_UCS4 at(self, Py_ssize_t k):
        return self.s[k] if k < self.n else 0

    cdef str compile(self):
        cdef list alts = []
        cdef bint anchored, anchored_end
        cdef str body, anything
        while True:
            anchored = self.at(self.i) == "^"
            self.i += anchored
            body, anchored_end = self.sequence(True)
            anything = "" if anchored and anchored_end else self.conv.builtin("char") + "*"
            alts.append(join(["" if anchored else anything, body,
                               "" if anchored_end else anything]))
            if self.at(self.i) == "|":
                self.i += 1
                continue
            if self.i < self.n:
                self.fail("an unbalanced ')'")
            return group(alts)

    cdef tuple sequence(self, bint top):
        cdef list items = []
        cdef Py_UCS4 c
        while self.i < self.n and self.s[self.i] not in "|)":
            c = self.s[self.i]
            if c == "$" and top and (self.i + 1 == self.n or self.s[self.i + 1] == "|"):
                self.i += 1
                return self.join_items(items), True
            if c == "^" or c == "$":
                self.fail(f"'{c}' inside the pattern")
            items.append(self.quantified(self.atom()))
        return self.join_items(items), False

    cdef str join_items(self, list items):
        cdef list out = []
        cdef str lit = ""
        for text, is_literal in items:
            if is_literal:
                lit += text
                continue
            if lit:
                out.append(literal(lit))
                lit = ""
            out.append(text)
        if lit:
            out.append(literal(lit))
        return " ".join(out)

    cdef tuple atom(self):
        cdef str s = self.s
        cdef Py_UCS4 c = s[self.i], e
        cdef list alts
        self.i += 1
        if c == "(":
            if self.at(self.i) == "?":
                if s.startswith("?:", self.i):
                    self.i += 2
                elif s.startswith("?P<", self.i) or (s.startswith("?<", self.i)
                                                     and self.at(self.i + 2) not in "=!"):
                    self.i = s.index(">", self.i) + 1
                else:
                    self.fail(f"'(?{s[self.i + 1:self.i + 2]}' (lookaround or inline flags)")
            alts = [self.sequence(False)[0]]
            while self.at(self.i) == "|":
                self.i += 1
                alts.append(self.sequence(False)[0])
            self.i += 1
            return "( " + " | ".join(alts) + " )", False
        if c == "[":
            ranges, negated = self.char_class()
            return self.encode(ranges, negated), False
        if c == ".":
            return self.conv.builtin("dot"), False
        if c == "\\":
            e = s[self.i]
            if e in "dDwWsS":
                self.i += 1
                return self.encode(SHORTHANDS[str(e)], False), False
            if e in "bBAZzG":
                self.fail(f"the anchor '\\{e}'")
            if e in "123456789":
                self.fail("a backreference")
            return json.dumps(chr(self.escape()), ensure_ascii=False)[1:-1], True
        return json.dumps(c, ensure_ascii=False)[1:-1], True

    cdef long escape(self) except -1:
        cdef Py_UCS4 e = self.s[self.i]
        cdef Py_ssize_t width
        self.i += 1
        key = str(e)
        if key in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[key]
        if e == "0":
            if self.at(self.i) and self.at(self.i) in "0123456789":
                self.fail("an octal escape")
            return 0
        if key in _HEX:
            width = _HEX[key]
            digits = self.s[self.i:self.i + width]
            self.i += width
            return int(digits, 16)
        if key.isalnum():
            self.fail(f"the escape '\\{e}'")
        return e

    cdef tuple char_class(self):
        cdef bint negated = self.at(self.i) == "^", shorthand = False, first = True
        cdef list ranges = []
        cdef long lo
        self.i += negated
        while first or self.s[self.i] != "]":
            first = False
            if self.s[self.i] == "\\" and self.at(self.i + 1) in "dDwWsS":
                ranges += SHORTHANDS[str(self.s[self.i + 1])]
                shorthand = True
                self.i += 2
                continue
            lo = self.class_char()
            if self.s[self.i] == "-" and self.at(self.i + 1) != "]":
                self.i += 1
                ranges.append((lo, self.class_char()))
            else:
                ranges.append((lo, lo))
        self.i += 1
        if negated and shorthand:
            # the complement of a Unicode shorthand is only safe to spell within ASCII
            return _subtract([(0, 127)], ranges), False
        return norm(ranges), negated

    cdef long class_char(self) except -1:
        cdef Py_UCS4 c = self.s[self.i]
        self.i += 1
        if c != "\\":
            return c
        if self.s[self.i] == "b":
            self.i += 1
            return 8
        return self.escape()

    cdef str encode(self, list ranges, bint negated):
        expr = encode_class(ranges, negated)
        if expr is None:
            self.fail("a character class that matches no character JSON can spell")
        return expr

    cdef object braces(self):
        m = _BRACES.match(self.s, self.i)
        if m is None or (not m.group(2) and not m.group(1)):
            return None
        self.i = m.end()
        lo = int(m.group(1) or 0)
        hi = (int(m.group(3)) if m.group(3) else None) if m.group(2) else lo
        return lo, hi

    cdef tuple quantified(self, tuple atom):
        cdef str text = atom[0], symbol
        cdef bint is_literal = atom[1]
        cdef Py_UCS4 c = self.at(self.i)
        if c and c in "*+?":
            lo, hi = (0, None) if c == "*" else (1, None) if c == "+" else (0, 1)
            self.i += 1
        elif c == "{":
            bounds = self.braces()
            if bounds is None:
                return atom
            lo, hi = bounds
        else:
            return atom
        if self.at(self.i) == "?":
            self.i += 1    # lazy: the same strings match
        elif self.at(self.i) == "+":
            self.fail("a possessive quantifier")
        symbol = literal(text) if is_literal else text
        if symbol.startswith("(") and (hi is None and lo > 1 or hi is not None and hi > 1):
            # libllama multiplies a group's inner rules by the count; a named rule counts once
            symbol = self.conv.add(self.base + "-part", symbol)
        return self.conv.repeat(symbol, lo, hi, self.base), False


