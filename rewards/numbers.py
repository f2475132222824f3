"""Numeric comparison: our verdict on two numbers (``numbers_equal``: exact values exactly, decimals to the
places they are written with, infinity only equal to itself) and on two expressions (``expr_equal``: probe
points over the whole line, then sympy's ``simplify`` must prove the difference zero)."""

from __future__ import annotations

import re
from fractions import Fraction

import sympy as sp

from rewards.parse import ParseError, parse_math


def numeric_value(obj) -> sp.Expr | None:
    """A Math-Verify parse that is a plain number (no symbols, sets, relations or matrices), else None."""
    if not isinstance(obj, sp.Expr) or obj.free_symbols or obj.atoms(sp.Symbol, sp.MatrixSymbol):
        return None
    return obj


def decimal_places(s: str) -> int | None:
    """Most digits written after a decimal point in ``s``; None when it writes no decimal."""
    places = [len(d) for d in re.findall(r"\d*\.(\d+)", s)]
    return max(places) if places else None


def decimal_exact(e: sp.Expr, text: str | None = None) -> sp.Expr:
    """Each written decimal (a sympy Float) replaced by the exact rational it spells: 0.1 is 1/10. A Float that
    is not a decimal of ``text`` was computed (``\\sqrt{10.5}``): the exact reading is our own parse of the text."""
    floats = e.atoms(sp.Float)
    if not floats:
        return e
    exact = {f: sp.Rational(*Fraction(str(f)).as_integer_ratio()) for f in floats}
    if text is not None:
        written = {Fraction(d) for d in re.findall(r"\d*\.\d+", text)}
        if not all(Fraction(int(q.p), int(q.q)) in written for q in exact.values()):
            try:
                parsed = parse_math(text)
            except (ParseError, RecursionError, ValueError, TypeError):
                return e
            return parsed if not parsed.free_symbols else e
    return e.xreplace(exact)


MIN_PLACES = 6  # a decimal written with fewer places must be exact: 0.33 is not 1/3, 0.333333 is


def numbers_equal(a: sp.Expr, b: sp.Expr, pred: str, gold: str) -> bool | None:
    """Our verdict on two numbers. None: not decidable here.

    * Exact values compare exactly: the difference, with written decimals read as the rationals they spell,
      is evaluated with sympy's adaptive precision (cancellation tracked), so ``2^{100}-1`` is not ``2^{100}``
      and ``\\sqrt{10^{40}+1}`` is not ``10^{20}``. A difference that stays indistinguishable from zero to
      hundreds of digits (``\\sqrt2+\\sqrt3`` vs ``\\sqrt{5+2\\sqrt6}``) is zero.
    * A decimal written with k >= 6 places also equals what it rounds: ``|x - y| <= 0.5 * 10^-k``
      (``0.333333`` is 1/3, ``1.4142136`` is ``1.41421356``). Fewer places: exact only (``3.14`` is not pi).
    * A finite number never equals infinity."""
    try:
        a, b = a.doit(), b.doit()
        if a.is_infinite or b.is_infinite or a.has(sp.oo, -sp.oo) or b.has(sp.oo, -sp.oo):
            return bool(a == b)
        if a.has(sp.zoo, sp.nan) or b.has(sp.zoo, sp.nan):
            return None
        diff = sp.Add(decimal_exact(a, pred), -decimal_exact(b, gold))
        if diff.is_Rational:
            zero = diff == 0
        else:
            try:
                value = diff.evalf(30, strict=True, maxn=600)
            except sp.core.evalf.PrecisionExhausted:
                return True  # zero to 600 digits: equal closed forms sympy does not simplify
            if not value.is_number:
                return None
            zero = value == 0
        if zero:
            return True
        tol = sp.Integer(0)
        for text in (pred, gold):
            k = decimal_places(text)
            if k is not None and k >= MIN_PLACES:  # a side written as a decimal (our parser reads it exactly)
                tol = max(tol, sp.Rational(1, 2 * 10**k))
        if tol == 0:
            return False
        re_d, im_d = (diff.evalf(30, maxn=600) if not diff.is_Rational else diff).as_real_imag()
        return bool(abs(re_d) <= tol and abs(im_d) <= tol)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError, RecursionError):
        return None


def _numeric(e: sp.Expr) -> complex | None:
    try:
        e = e.doit()
        v = complex(sp.N(e, 30))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError, RecursionError):
        return None
    if (abs(v) == float("inf") or v != v) and e.is_infinite is not True:
        return None  # a finite value that overflows a float is not infinity
    return v


def _close(x: complex, y: complex) -> bool:
    if x != x or y != y:  # NaN
        return False
    if abs(x) == float("inf") or abs(y) == float("inf"):
        return x == y
    return abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))


# probe points on the whole real line, negative and non-integer included: |x| and x, \\sqrt{x^2} and x differ there
_PROBES = tuple(sp.Rational(n, d) for n, d in ((-7, 3), (-1, 2), (2, 7), (3, 2), (13, 5), (-19, 4), (1, 1), (0, 1)))


def expr_equal(a: sp.Expr, b: sp.Expr, p: str, g: str) -> bool:
    """Same value. Constants: ``numbers_equal``. With symbols: equal at probe points over the whole line
    (negative and non-integer ones included; a point where one side is undefined and the other is not
    refutes), and sympy's ``simplify`` must prove the difference zero: sampling alone never says equal."""
    free = a.free_symbols | b.free_symbols  # sin^2 x + cos^2 x vs 1: probe on the union
    if not free:
        return bool(numbers_equal(a, b, p, g))
    names = sorted(free, key=str)
    for i in range(len(_PROBES)):
        point = {s: _PROBES[(i + j) % len(_PROBES)] for j, s in enumerate(names)}
        x, y = _numeric(a.subs(point)), _numeric(b.subs(point))
        if x is None and y is None:
            continue
        if x is None or y is None or not _close(x, y):
            return False
    return _proved_zero(sp.Add(a, -b))


def _proved_zero(d: sp.Expr) -> bool:
    try:
        return bool(sp.simplify(d) == 0)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError, RecursionError):
        return False
