"""The scalar level of JSON Schema -> GBNF: GBNF text helpers, code point sets spelled the
way JSON spells them, integer and decimal ranges as digit grammars, and ``pattern`` regexes
compiled to GBNF.

Everything here is narrower-or-equal to what it stands for, never wider (see
``_json_schema`` for why): shorthand classes are ASCII-only, control characters without a
short JSON escape are left out, unbounded integers stop at MAX_INT_DIGITS digits.

One source, two builds: plain Python, which Cython also compiles in pure-Python mode. The
types and what ``_json_schema`` cimports are in ``_json_schema_scalars.pxd``; compiled, the
helpers it declares are C functions, not attributes of the module.
"""
from __future__ import annotations

import json
import re
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from ._schema_error import SchemaError

MAX_INT_DIGITS = 16    # an integer with no upper bound gets at most this many digits
MAX_FRAC_DIGITS = 15


# --- GBNF text ----------------------------------------------------------------------------
def literal(text):
    return '"' + (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                  .replace("\r", "\\r").replace("\t", "\\t")) + '"'


def join(parts):
    return " ".join([p for p in parts if p])


def group(alts):
    alts = list(dict.fromkeys(alts))
    return alts[0] if len(alts) == 1 else "( " + " | ".join(alts) + " )"


def rep(atom, lo, hi):
    """``atom`` repeated lo..hi times (hi None: unbounded), for bounds libllama keeps."""
    if hi == 0:
        return ""
    if hi is None:
        return atom + ("*" if lo == 0 else "+" if lo == 1 else "{%d,}" % lo)
    if lo == hi:
        return atom if lo == 1 else "%s{%d}" % (atom, lo)
    return atom + "?" if (lo, hi) == (0, 1) else "%s{%d,%d}" % (atom, lo, hi)


# --- code point sets (sorted, merged (lo, hi) ranges) ---------------------------------------
def norm(ranges):
    out = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _subtract(ranges, cut):
    out = []
    for lo, hi in norm(ranges):
        for clo, chi in norm(cut):
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


def _contains(ranges, cp):
    return any(lo <= cp <= hi for lo, hi in ranges)


def _class_char(cp):
    if 0x20 < cp < 0x7F and chr(cp) not in '\\]-^"':
        return chr(cp)
    if cp == 0x20:
        return " "
    return "\\x%02X" % cp if cp < 0x80 else "\\u%04X" % cp if cp <= 0xFFFF else "\\U%08X" % cp


def class_body(ranges):
    return "".join(_class_char(lo) if lo == hi else _class_char(lo) + "-" + _class_char(hi)
                   for lo, hi in ranges)


# ASCII-only sets for the shorthand classes: a subset of both Python's (Unicode) and
# JavaScript's meaning, so whatever the grammar emits matches under either.
SHORTHANDS = {
    "d": [(48, 57)],
    "w": [(48, 57), (65, 90), (95, 95), (97, 122)],
    "s": [(9, 13), (32, 32)],
}
SHORTHANDS["D"] = _subtract([(0, 127)], SHORTHANDS["d"])
SHORTHANDS["W"] = _subtract([(0, 127)], SHORTHANDS["w"])
SHORTHANDS["S"] = _subtract([(0, 127)], [(9, 13), (28, 32)])
JSON_ESCAPES = ((0x22, '\\"'), (0x5C, "\\\\"), (0x08, "\\b"), (0x09, "\\t"), (0x0A, "\\n"),
                (0x0C, "\\f"), (0x0D, "\\r"))
NOT_RAW = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]   # characters JSON must escape


def encode_class(ranges, negated):
    """A GBNF expression for one character of the set, spelled as inside a JSON string.
    Control characters without a short escape are left out (a narrowing)."""
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
def _digits(lo, hi):
    return "[%d]" % lo if lo == hi else "[%d-%d]" % (lo, hi)


def _same_len(lo, hi):
    """Alternatives matching the decimal strings lo..hi, both of the same length."""
    if lo == hi:
        return [literal(lo)]
    i = 0
    while lo[i] == hi[i]:
        i += 1
    a, b, k = int(lo[i]), int(hi[i]), len(lo) - i - 1
    if k == 0:
        alts = [_digits(a, b)]
    else:
        alts = []
        start, end = a, b
        if lo[i + 1:] != "0" * k:
            alts.append(join([literal(lo[i]), group(_same_len(lo[i + 1:], "9" * k))]))
            start = a + 1
        if hi[i + 1:] != "9" * k:
            end = b - 1
        if start <= end:
            alts.append(join([_digits(start, end), rep("[0-9]", k, k)]))
        if hi[i + 1:] != "9" * k:
            alts.append(join([literal(hi[i]), group(_same_len("0" * k, hi[i + 1:]))]))
    return [join([literal(lo[:i]), group(alts)])] if i else alts


def _pos_range(a, b):
    """Alternatives for the integers a..b (b None: up to MAX_INT_DIGITS digits), a >= 0."""
    sa = str(a)
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


def _int_range(lo, hi):
    alts = []
    if lo is None or lo < 0:
        magnitude_lo = 1 if hi is None or hi >= 0 else -hi
        alts.append(join(['"-"', group(_pos_range(magnitude_lo, None if lo is None else -lo))]))
    if hi is None or hi >= 0:
        alts.extend(_pos_range(max(lo or 0, 0), hi))
    return alts


def _frac_cmp(g, n, op, top):
    """Alternatives for up to n fraction digits F with 0.F op 0.g (op: ge gt le lt); "" is the
    empty string, which only an inner position may take (top: F must have a digit)."""
    if not g:
        if op == "ge":
            return [rep("[0-9]", 1 if top else 0, n)] if n or not top else []
        if op == "gt":
            return [join([rep("[0-9]", 0, n - 1), "[1-9]"])] if n else []
        return [""] if op == "le" and not top else []
    if n == 0:
        return [""] if op in ("le", "lt") and not top else []
    d = int(g[0])
    alts = [""] if op in ("le", "lt") and not top else []
    if op in ("ge", "gt") and d < 9:
        alts.append(join([_digits(d + 1, 9), rep("[0-9]", 0, n - 1)]))
    if op in ("le", "lt") and d > 0:
        alts.append(join([_digits(0, d - 1), rep("[0-9]", 0, n - 1)]))
    alts.extend(join([literal(g[0]), s]) for s in _frac_cmp(g[1:], n - 1, op, False))
    return alts


def _frac_between(ga, ax, gb, bx, n, top):
    """Alternatives for fraction digits F with 0.ga <(=) 0.F <(=) 0.gb, 0.ga <= 0.gb."""
    zero_ok = not top and not ga and not ax
    if not gb:
        return [""] if zero_ok and not bx else []
    if n == 0:
        return [""] if zero_ok else []
    da, db = int(ga[0]) if ga else 0, int(gb[0])
    alts = [""] if zero_ok else []
    if da == db:
        alts.extend(join([literal(gb[0]), s])
                    for s in _frac_between(ga[1:], ax, gb[1:], bx, n - 1, False))
        return alts
    alts.extend(join([literal(str(da)), s])
                for s in _frac_cmp(ga[1:], n - 1, "gt" if ax else "ge", False))
    if da + 1 <= db - 1:
        alts.append(join([_digits(da + 1, db - 1), rep("[0-9]", 0, n - 1)]))
    alts.extend(join([literal(gb[0]), s])
                for s in _frac_cmp(gb[1:], n - 1, "lt" if bx else "le", False))
    return alts


def _split(d):
    """A non-negative Decimal as (integer part, fraction digits without trailing zeros)."""
    whole = int(d)
    frac = d - whole
    return whole, "" if frac == 0 else format(frac, "f").split(".")[1].rstrip("0")


def _decimals(a, ax, b, bx):
    """Alternatives "I.F" for magnitudes in a..b (b None: unbounded), a >= 0."""
    ia, ga = _split(a)
    fraction = "[0-9]{1,%d}" % MAX_FRAC_DIGITS
    if b is not None:
        ib, gb = _split(b)
        if ia == ib:
            f = _frac_between(ga, ax, gb, bx, MAX_FRAC_DIGITS, True)
            return [join([literal(str(ia) + "."), group(f)])] if f else []
    alts = []
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


def num_range(lo, lx, hi, hx, integer):
    """Alternatives for the numbers (or integers) between the Decimal bounds."""
    ilo = None if lo is None else int(lo.to_integral_value(ROUND_CEILING))
    if lo is not None and lx and ilo == lo:
        ilo += 1
    ihi = None if hi is None else int(hi.to_integral_value(ROUND_FLOOR))
    if hi is not None and hx and ihi == hi:
        ihi -= 1
    alts = _int_range(ilo, ihi) if ilo is None or ihi is None or ilo <= ihi else []
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


def _decimal(value, path, keyword):
    d = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not d.is_finite():
        raise SchemaError(f"'{keyword}' at {path} must be a finite number", keyword, path)
    return d


def bound(schema, path, inclusive, exclusive, lower):
    """The tightest bound as (Decimal or None, exclusive?); draft-4 boolean exclusives too."""
    found = []
    flag = schema.get(exclusive)
    if inclusive in schema:
        found.append((_decimal(schema[inclusive], path, inclusive), flag is True))
    if exclusive in schema and not isinstance(flag, bool):
        found.append((_decimal(flag, path, exclusive), True))
    if not found:
        return None, False
    # the tighter value wins; on a tie the exclusive one
    return max(found, key=lambda b: (b[0] if lower else -b[0], b[1]))


# --- regular expressions -------------------------------------------------------------------
_SIMPLE_ESCAPES = {"n": 10, "t": 9, "r": 13, "f": 12, "v": 11, "a": 7}
_HEX = {"x": 2, "u": 4, "U": 8}
_BRACES = re.compile(r"\{(\d*)(,?)(\d*)\}")


def _join_items(items):
    """Regex items, (text, is it a literal?), as GBNF: adjacent literals become one."""
    out, lit = [], ""
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


class Regex:
    """Compiles a ``pattern`` (Python/ECMA subset) into GBNF over the JSON spelling of the
    string. Unanchored ends get ``char*`` (JSON Schema patterns match anywhere)."""

    def __init__(self, conv, pattern, path, base):
        self.conv, self.s, self.i, self.path, self.base = conv, pattern, 0, path, base

    def fail(self, what):
        raise SchemaError(f"'pattern' at {self.path} uses {what}, which the grammar cannot "
                          f"express", "pattern", self.path)

    def compile(self):
        s, alts = self.s, []
        while True:
            anchored = s.startswith("^", self.i)
            self.i += anchored
            body, anchored_end = self.sequence(True)
            anything = "" if anchored and anchored_end else self.conv.builtin("char") + "*"
            alts.append(join(["" if anchored else anything, body,
                              "" if anchored_end else anything]))
            if self.i < len(s) and s[self.i] == "|":
                self.i += 1
                continue
            if self.i < len(s):
                self.fail("an unbalanced ')'")
            return group(alts)

    def sequence(self, top):
        s, items = self.s, []
        while self.i < len(s) and s[self.i] not in "|)":
            c = s[self.i]
            if c == "$" and top and (self.i + 1 == len(s) or s[self.i + 1] == "|"):
                self.i += 1
                return _join_items(items), True
            if c in "^$":
                self.fail(f"'{c}' inside the pattern")
            items.append(self.quantified(self.atom()))
        return _join_items(items), False

    def atom(self):
        s = self.s
        c = s[self.i]
        self.i += 1
        if c == "(":
            if s.startswith("?", self.i):
                if s.startswith("?:", self.i):
                    self.i += 2
                elif s.startswith("?P<", self.i) or (s.startswith("?<", self.i)
                                                     and s[self.i + 2:self.i + 3] not in "=!"):
                    self.i = s.index(">", self.i) + 1
                else:
                    self.fail(f"'(?{s[self.i + 1:self.i + 2]}' (lookaround or inline flags)")
            alts = [self.sequence(False)[0]]
            while s[self.i] == "|":
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
            if e in SHORTHANDS:
                self.i += 1
                return self.encode(SHORTHANDS[e], False), False
            if e in "bBAZzG":
                self.fail(f"the anchor '\\{e}'")
            if e.isdigit() and e != "0":
                self.fail("a backreference")
            return json.dumps(chr(self.escape()), ensure_ascii=False)[1:-1], True
        return json.dumps(c, ensure_ascii=False)[1:-1], True

    def escape(self):
        """The code point of the escape after a backslash (self.i at the letter)."""
        s = self.s
        e = s[self.i]
        self.i += 1
        if e in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[e]
        if e == "0":
            if self.i < len(s) and s[self.i].isdigit():
                self.fail("an octal escape")
            return 0
        if e in _HEX:
            n = _HEX[e]
            digits = s[self.i:self.i + n]
            self.i += n
            return int(digits, 16)
        if e.isalnum():
            self.fail(f"the escape '\\{e}'")
        return ord(e)

    def char_class(self):
        s = self.s
        negated = s.startswith("^", self.i)
        self.i += negated
        ranges, shorthand, first = [], False, True
        while first or s[self.i] != "]":
            first = False
            if s[self.i] == "\\" and s[self.i + 1] in SHORTHANDS:
                ranges += SHORTHANDS[s[self.i + 1]]
                shorthand = True
                self.i += 2
                continue
            lo = self.class_char()
            if s[self.i] == "-" and s[self.i + 1] != "]":
                self.i += 1
                ranges.append((lo, self.class_char()))
            else:
                ranges.append((lo, lo))
        self.i += 1
        if negated and shorthand:
            # the complement of a Unicode shorthand is only safe to spell within ASCII
            return _subtract([(0, 127)], ranges), False
        return norm(ranges), negated

    def class_char(self):
        c = self.s[self.i]
        self.i += 1
        if c != "\\":
            return ord(c)
        if self.s[self.i] == "b":
            self.i += 1
            return 8
        return self.escape()

    def encode(self, ranges, negated):
        expr = encode_class(ranges, negated)
        if expr is None:
            self.fail("a character class that matches no character JSON can spell")
        return expr

    def braces(self):
        m = _BRACES.match(self.s, self.i)
        if m is None or (not m.group(2) and not m.group(1)):
            return None
        self.i = m.end()
        lo = int(m.group(1) or 0)
        hi = (int(m.group(3)) if m.group(3) else None) if m.group(2) else lo
        return lo, hi

    def quantified(self, atom):
        s, (text, is_literal) = self.s, atom
        if self.i < len(s) and s[self.i] in "*+?":
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[s[self.i]]
            self.i += 1
        elif self.i < len(s) and s[self.i] == "{" and (bounds := self.braces()) is not None:
            lo, hi = bounds
        else:
            return atom
        if s.startswith("?", self.i):
            self.i += 1    # lazy: the same strings match
        elif s.startswith("+", self.i):
            self.fail("a possessive quantifier")
        symbol = literal(text) if is_literal else text
        if symbol.startswith("(") and (hi is None and lo > 1 or hi is not None and hi > 1):
            # libllama multiplies a group's inner rules by the count; a named rule counts once
            symbol = self.conv.add(self.base + "-part", symbol)
        return self.conv.repeat(symbol, lo, hi, self.base), False

