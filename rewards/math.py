"""Math equivalence: ``is_equivalent(pred, gold)`` decides whether two final answers are the same object.

The decision, in order (each step is ours unless it says otherwise):
1. ``hostile`` (``rewards.limits``): size guards on the raw text (length, nesting, giant literals, power
   towers, huge exponents and factorials). Such text is never parsed: False, unless it is the gold verbatim.
   Units (``rewards.units``): when both sides carry a unit and the units differ, False (``2 m``, ``2 cm``).
2. ``normalize`` (``rewards.normalize``): presentation removed (delimiters, spacing, ``\\dfrac``/``\\cfrac``,
   ``\\text``/``\\mbox`` units, thousands separators incl. ``11,\\! 111``, percent spellings, degrees, relation
   spellings, mixed numbers ``1\\frac{4}{5}``, base subscripts, ``array`` matrices, a ``\\boxed{}`` left inside,
   ``;``/``and``/``or`` lists and ``p=5,q=2`` solution tuples, ``x<2 or x>3`` as a union, repeating decimals,
   ``√``/``½``, ``12 cookies``). Equal strings are equal. Then the forms Math-Verify misreads
   (``rewards.forms``): letter case only between words, a set is no tuple, numerals in another base differ.
   Then the forms normalization would blur: times of day compare as times (``rewards.units``: ``12:00`` is
   not ``1:00``); choice letters however wrapped (``\\text{(b)}``, ``(B)``, ``b``); lists of assignments
   name by name in any order (``a = 5, b = -2`` is not ``a = -2, b = 5``; ``a = 5`` is not ``b = 5``).
3. Candidates (``rewards.normalize.chain_values``): an answer written as a chain (``x = 5+5+1 = 11``,
   ``x \\approx 11``, ``S_{MBCN}:S=7:32``) is also compared by its last value.
4. Math-Verify (``rewards.verify``) on the normalized strings: sets, intervals, relations, matrices,
   expressions. Where both sides are plain numbers its verdict is replaced by ours (``rewards.numbers``):
   exact values compare exactly (Math-Verify's ``chop`` makes ``1/2^99`` equal ``1/2^98``), decimals to the
   precision they are written with, and a finite number never equals infinity.
5. Our structural comparison (here, on ``rewards.parse``) for what Math-Verify does not parse: choice letters,
   text, sequences with ``\\ldots``, lists and tuples element by element.

Every call is bounded by ``time_limit`` seconds of CPU (``rewards.verify.cpu_deadline``); the hard limit in
training is one level up (``rewards.pool``: killable workers). Model text is never executed (see
``rewards.verify`` and ``rewards.parse``).
"""

from __future__ import annotations

import re

import sympy as sp

from rewards.extract import extract_answer
from rewards.forms import base_numeral_equal, brackets_differ, case_clash, is_words, same_words
from rewards.limits import MAX_ANSWER, hostile
from rewards.normalize import chain_values, n_values, normalize, split_top
from rewards.numbers import expr_equal, numbers_equal, numeric_value
from rewards.parse import ParseError, parse_math
from rewards.units import same_time, units_differ
from rewards.verify import GradingTimeout, cpu_deadline, verify

__all__ = ["MAX_ANSWER", "check", "extract_answer", "grade", "hostile", "is_equivalent", "normalize", "numbers_equal"]


def _scalar_equal(p: str, g: str) -> bool:
    try:
        a, b = parse_math(p), parse_math(g)
    except (ParseError, RecursionError, ValueError, TypeError):
        return False
    if expr_equal(a, b, p, g):
        return True
    if "%" in p or "%" in g:  # '50%' against '50': percent signs are often dropped
        a2 = sp.Mul(a, 100) if "%" in p else a
        b2 = sp.Mul(b, 100) if "%" in g else b
        return expr_equal(a2, b2, p, g)
    return False


def _equation_equal(p: str, g: str) -> bool:
    """lhs - rhs of the two equations proportional (y = 2x + 1 is 2x - y + 1 = 0)."""
    try:
        lp, rp = (parse_math(x) for x in p.split("="))
        lg, rg = (parse_math(x) for x in g.split("="))
    except (ParseError, ValueError, RecursionError, TypeError):
        return False
    dp, dg = sp.Add(lp, -rp), sp.Add(lg, -rg)
    if dp.free_symbols != dg.free_symbols:
        return False
    try:  # proportional: the ratio is a nonzero constant, proved by simplify (no sampling)
        ratio = sp.simplify(sp.Mul(dp, sp.Pow(dg, -1)))
        return bool(ratio.is_number and not ratio.free_symbols and ratio != 0 and ratio.is_finite)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError, RecursionError):
        return False


_INTERVAL = re.compile(r"^[\[(].*,.*[\])]$")
_CHOICE = re.compile(r"^(?:\(([A-Ea-e])\)|([A-E]))$")  # a bare lowercase e is Euler's number, not choice (E)
_LABELLED_CHOICE = re.compile(r"^(?:\(([A-E])\)|([A-E])[.)])\s+(\S.*)$", re.S)  # '(B) 12', 'B. 12', 'B) 12'


def _choice(s: str) -> tuple[str, str | None] | None:
    """(letter, label text or None) of a multiple-choice answer, else None."""
    if m := _CHOICE.match(s):
        return (m.group(1) or m.group(2)).upper(), None
    if m := _LABELLED_CHOICE.match(s):
        return (m.group(1) or m.group(2)), m.group(3).strip()
    return None


_BARE_LETTER = re.compile(r"[A-Ea-e]")  # a bare letter is a choice when the other side is one: 'b' is (B)
_ASSIGNMENT = re.compile(r"\s*(\\?[a-zA-Z]+(?:_\{?\w+\}?)?)\s*=\s*([^=]+?)\s*")


def _assignments(s: str) -> list[tuple[str, str]] | None:
    """'a = 5, b = -2' -> [('a', '5'), ('b', '-2')] when every item of the list binds a name; else None."""
    pairs = []
    for item in split_top(s):
        if (m := _ASSIGNMENT.fullmatch(item)) is None:
            return None
        pairs.append((re.sub(r"[\s{}\\]", "", m.group(1)), m.group(2)))
    return pairs


def _named_equal(p: str, g: str) -> bool | None:
    """Two lists of assignments compare name by name, in any order: 'b=-2, a=5' is 'a=5, b=-2', but 'a = 5,
    b = -2' is not 'a = -2, b = 5' and 'a = 5' is not 'b = 5'. Against a tuple: ``_named_values``. None when
    neither side is assignments."""
    ap, ag = _assignments(p), _assignments(g)
    if (ap is None) != (ag is None):
        return _named_values(ap, g) if ap is not None else _named_values(ag, p, gold_named=True)
    if ap is None or ag is None:
        return None
    if len(ap) == 1 == len(ag) and _equation_equal(p, g):
        return True  # one equation solved for either name: y = 2x + 1 is x = (y - 1)/2
    if len(ap) != len(ag):
        return False
    left = list(ap)
    for name, value in ag:
        hit = next((i for i, (n, v) in enumerate(left) if n == name and _equivalent(v, value)), None)
        if hit is None:
            return False
        left.pop(hit)
    return True


def _named_values(named: list[tuple[str, str]], other: str, gold_named: bool = False) -> bool | None:
    """Assignments against a tuple of values: compared in written order ('a = 5, b = -2' is '(5, -2)', not
    '(-2, 5)'; Math-Verify compares them as sets). The same name each time ('x = 2, x = 3') lists solutions,
    and a bare list ('2, 3') is order free: any order. None for one assignment ('x = 5' against '5')."""
    if len(named) < 2:
        return None
    ordered = other[:1] in "([" and other[-1:] in ")]"
    items = split_top(other[1:-1] if ordered else other)
    if len(items) != len(named):
        return False
    values = [v for _, v in named]
    if len({n for n, _ in named}) == 1 or not ordered:  # a bare list '2, 3' is order free, as everywhere
        return _unordered_equal(items, values) if gold_named else _unordered_equal(values, items)
    pairs = zip(items, values) if gold_named else zip(values, items)
    return all(_equivalent(a, b) for a, b in pairs)


_MATRIX = re.compile(r"\\begin\{[pbvB]?matrix\}(.*)\\end\{[pbvB]?matrix\}", re.S)


def _matrix(s: str) -> list[list[str]] | None:
    m = _MATRIX.search(s)
    if not m:
        return None
    return [[c.strip() for c in row.split("&")] for row in m.group(1).split("\\\\") if row.strip()]


def _lhs_is_variable(eq: str) -> str | None:
    """'x = 5' -> '5' when the left side is a single variable name."""
    if eq.count("=") == 1:
        lhs, rhs = eq.split("=")
        if re.fullmatch(r"\s*\\?[a-zA-Z]+(_\{?\w+\}?)?\s*", lhs):
            return rhs.strip()
    return None


def _unordered_equal(ps: list[str], gs: list[str]) -> bool:
    if len(ps) != len(gs):
        return False
    left = list(ps)
    for g in gs:
        hit = next((i for i, p in enumerate(left) if _equivalent(p, g)), None)
        if hit is None:
            return False
        left.pop(hit)
    return True


def _expand_pm(s: str) -> list[str] | None:
    if "\\pm" not in s and "±" not in s:
        return None
    s = s.replace("±", "\\pm")
    return [s.replace("\\pm", "+", 1), s.replace("\\pm", "-", 1)]


def _structural_equal(p: str, g: str) -> bool:
    """Our own comparison of two normalized answers (rewards.parse): lists, tuples, intervals, sets,
    matrices element by element, equations, text."""
    if (mat_g := _matrix(g)) is not None:
        mat_p = _matrix(p)
        return (mat_p is not None and len(mat_p) == len(mat_g)
                and all(len(rp) == len(rg) and all(_equivalent(a, b) for a, b in zip(rp, rg))
                        for rp, rg in zip(mat_p, mat_g)))  # fmt: skip
    if (pm := _expand_pm(g)) is not None:
        return _unordered_equal(_expand_pm(p) or split_top(p), pm)
    if (pm := _expand_pm(p)) is not None:
        return _unordered_equal(pm, split_top(g))
    if "∪" in g or "∪" in p:  # unions of intervals
        gs, ps = g.split("∪"), p.split("∪")
        return len(gs) > 1 and _unordered_equal(ps, gs)  # a union in any order
    if _INTERVAL.match(g) and _INTERVAL.match(p):
        inner_g, inner_p = split_top(g[1:-1]), split_top(p[1:-1])
        if (g[0], g[-1]) != (p[0], p[-1]) or len(inner_g) != len(inner_p):
            return False
        return all(_equivalent(a, b) for a, b in zip(inner_p, inner_g))  # intervals and tuples: ordered
    if g.startswith("{") and g.endswith("}") and len(split_top(g[1:-1])) > 1:  # sets: unordered
        inner = p[1:-1] if p.startswith("{") and p.endswith("}") else p
        return _unordered_equal(split_top(inner), split_top(g[1:-1]))
    if len(gs := split_top(g)) > 1:  # a list of answers ('1, 2'): order does not matter
        return _unordered_equal(split_top(p), gs)
    if "=" in g and "=" in p and _equation_equal(p, g):
        return True
    if "=" in g or "=" in p:
        rg, rp = _lhs_is_variable(g), _lhs_is_variable(p)
        if rg is not None or rp is not None:
            return _equivalent(rp if rp is not None else p, rg if rg is not None else g)
        return False
    if re.search(r"[a-zA-Z]{3,}", g.replace("\\", "")) and not re.search(r"\\[a-z]+|\d", g):  # plain text
        return same_words(p, g)
    return _scalar_equal(p, g)


def form_verdict(p: str, g: str, pred: str, gold: str) -> bool | None:
    """Our verdict on the forms Math-Verify misreads (``rewards.forms``); None when neither side is one."""
    if is_words(p) and is_words(g) and same_words(p, g):
        return True  # 'East' is 'east'; '3R^2' is not '3r^2' (case ignored between words only)
    if brackets_differ(p, g, pred, gold):
        return False
    return base_numeral_equal(p, g)


def grade(text: str, gold: str, time_limit: float | None = 1.0) -> tuple[bool, str | None]:
    """(correct, extracted answer) for one response, in this process: extraction and the check each bounded by
    ``time_limit`` CPU seconds."""
    try:
        with cpu_deadline(time_limit):
            pred = extract_answer(text)
    except GradingTimeout:
        return False, None
    return (pred is not None and is_equivalent(pred, gold, time_limit)), pred


def _math_verify_equal(p: str, g: str) -> tuple[bool, bool]:
    """(verdict, final): Math-Verify's verdict, replaced by ours where both sides are numbers (then final:
    no other comparison may overrule it). Not final when Math-Verify cannot parse a side."""
    ok, gp, pp = verify(p, g)
    if not gp or not pp:
        return False, False
    a, b = numeric_value(pp[0]), numeric_value(gp[0])
    if (a is None or b is None) and not ok:  # 'i' as the imaginary unit when it is the only symbol
        a, b = numeric_value(_imaginary(pp[0])), numeric_value(_imaginary(gp[0]))
    if a is not None and b is not None:
        ours = numbers_equal(a, b, p, g)
        if ours is not None and not ours and ("\\%" in p) != ("\\%" in g):  # '28\%' vs '28': % often dropped
            scaled = (sp.Mul(a, 100), b) if "\\%" in p else (a, sp.Mul(b, 100))
            ours = numbers_equal(*scaled, p, g)
        if ours is not None:
            return ours, True
    return ok, ok


def _imaginary(obj):
    if isinstance(obj, sp.Expr) and {s.name for s in obj.free_symbols} == {"i"}:
        return obj.subs({s: sp.I for s in obj.free_symbols})
    return obj


def _equivalent(pred: str, gold: str) -> bool:
    if not pred.strip().strip("$").strip() or not gold.strip().strip("$").strip():
        return False  # an empty answer is no answer, even against an empty gold
    if pred.strip() == gold.strip():
        return True
    if hostile(pred) or hostile(gold) or units_differ(pred, gold):
        return False  # units differ: '2 \text{ m}' is not '2 \text{ cm}' (rewards.units)
    p, g = normalize(pred), normalize(gold)
    if not p or not g or hostile(p) or hostile(g):  # normalizing can reveal a power (1e999999999)
        return p == g and bool(p)
    if p == g or (verdict := form_verdict(p, g, pred, gold)) is True:
        return True
    if verdict is False:  # a set against a tuple, numerals in another base (rewards.forms)
        return False
    if (clock := same_time(p, g)) is not None:  # times of day: 12:00 is not 1:00 (not the ratios 12:0, 1:0)
        return clock
    cg, cp = _choice(g), _choice(p)
    if (cg is None) != (cp is None) and _BARE_LETTER.fullmatch(g if cg is None else p):
        cg, cp = cg or (g.upper(), None), cp or (p.upper(), None)  # 'b' against '\text{(b)}': a choice letter
    if cg and cp:  # multiple choice: letters compare, (B) == B == '(B) 12'; two label texts must agree too
        return cg[0] == cp[0] and (cg[1] is None or cp[1] is None or _equivalent(cp[1], cg[1]))
    if cp and cp[1] is not None:  # '(B) 12' against a gold value: the value given
        return _equivalent(cp[1], g)
    if cg or cp:
        return False
    if (named := _named_equal(p, g)) is not None:
        return named
    if n_values(p) > 1 and n_values(g) == 1 and not g.startswith(("(", "[", "{")) and _matrix(g) is None:
        return False  # '3 or 4', '3, 4', '\\pm 3' against one value: a hedge, wrong whichever value is gold
    chains = chain_values(p, g)
    if chains is None:
        return False  # '12 \\approx 13', 'x = 5+5+1 = 12': the answer contradicts itself
    if "\\ldots" in p or "\\ldots" in g:  # sequences: ordered, the ellipsis included
        ps, gs = split_top(p), split_top(g)
        return len(ps) == len(gs) and all(a == b or (a != "\\ldots" != b and _equivalent(a, b)) for a, b in zip(ps, gs))
    if _compare(p, g):
        return True
    for pc in [p, *chains]:  # labelled or chained answers: compare by their last value too
        for gc in [g, *(chain_values(g, p) or [])]:
            if (pc, gc) != (p, g) and pc and gc and _compare(pc, gc):
                return True
    return False


def _compare(p: str, g: str) -> bool:
    if case_clash(p, g):  # Math-Verify reads R as r: our parser keeps case
        return _structural_equal(p, g)
    verdict, final = _math_verify_equal(p, g)
    return verdict if final else _structural_equal(p, g)


def check(pred: str, gold: str, time_limit: float | None = 1.0) -> tuple[bool, bool]:
    """(equivalent, timed out) within ``time_limit`` seconds of this process's CPU (None: unbounded)."""
    try:
        with cpu_deadline(time_limit):
            return _equivalent(pred, gold), False
    except GradingTimeout:
        return False, True
    except Exception:  # RecursionError, MemoryError, a parser bug on hostile text: this answer, never the caller
        return False, False


def is_equivalent(pred: str, gold: str, time_limit: float | None = 1.0) -> bool:
    """True when ``pred`` and ``gold`` are the same mathematical answer in different forms. At most
    ``time_limit`` seconds of CPU (None: unbounded); a check that runs over is False."""
    return check(pred, gold, time_limit)[0]
