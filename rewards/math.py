"""Math equivalence: ``is_equivalent(pred, gold)`` decides whether two final answers are the same object.

The decision, in order (each step is ours unless it says otherwise):
1. ``hostile``: size guards on the raw text (length, nesting, giant literals, power towers, huge exponents
   and factorials). Such text is never parsed: False, unless it is character-for-character the gold.
2. ``normalize``: presentation removed (delimiters, spacing, ``\\dfrac``/``\\cfrac``, ``\\text``/``\\mbox``
   units, thousands separators incl. ``11,\\! 111``, percent spellings, degrees, relation spellings, mixed
   numbers ``1\\frac{4}{5}``, base subscripts, ``array`` matrices, a ``\\boxed{}`` left inside, ``;``/``and``/
   ``or`` lists and ``p=5,q=2`` solution tuples). Equal strings are equal.
3. Candidates: an answer written as a chain (``x = 5+5+1 = 11``, ``x \\approx 11``, ``S_{MBCN}:S=7:32``) is
   also compared by its last value.
4. Math-Verify (``rewards.verify``) on the normalized strings: sets, intervals, relations, matrices,
   expressions. Where both sides are plain numbers its verdict is replaced by ours (``numbers_equal``):
   exact values compare exactly (Math-Verify's ``chop`` makes ``1/2^99`` equal ``1/2^98``), decimals to the
   precision they are written with, and a finite number never equals infinity.
5. Our structural comparison (``rewards.parse``) for what Math-Verify does not parse: choice letters, text,
   sequences with ``\\ldots``, lists and tuples element by element.

Every call is bounded by ``time_limit`` seconds of CPU (``rewards.verify.cpu_deadline``); the hard limit in
training is one level up (``rewards.pool``: killable workers). Model text is never executed (see
``rewards.verify`` and ``rewards.parse``).
"""

from __future__ import annotations

import math
import re
import unicodedata
from fractions import Fraction

import sympy as sp

from rewards.extract import extract_answer
from rewards.parse import ParseError, parse_math
from rewards.verify import GradingTimeout, cpu_deadline, verify
from rewards.verify import parse as parse_answer

__all__ = ["check", "extract_answer", "grade", "hostile", "is_equivalent", "normalize"]

MAX_ANSWER = 2000  # characters of one answer
MAX_NESTING = 40  # bracket depth
MAX_EXPONENT = 10_000  # |exponent| of a power of plain numbers
MAX_FACTORIAL = 1_000

# ----------------------------------------------------------------------------- guards

_NUM_POW = re.compile(r"(\d+(?:\.\d+)?)\s*\^\s*(?:\{\s*([-+]?\s*\d+(?:\.\d+)?)\s*\}|([-+]?\d+(?:\.\d+)?))")


def hostile(s: str) -> bool:
    """Text that could make a parser or sympy run away in C code, where no time limit can interrupt it: too
    long, too deep, giant literals, power towers, huge exponents, factorials or binomials. Checked on the
    raw text, before anything parses it."""
    if len(s) > MAX_ANSWER or re.search(r"\d{400,}", s):
        return True
    depth = 0
    for ch in s:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth > MAX_NESTING:
            return True
    if any(int(e) > MAX_EXPONENT for e in re.findall(r"\^\s*\{?\s*[-+]?\s*(\d{5,30})", s)):
        return True  # (x+1)^{100000}: any base, a literal exponent beyond MAX_EXPONENT
    t = _collapse_powers(s.replace("**", "^"))
    if t is None or re.search(r"\^\s*\{?[^{}]*HUGE", t):  # a huge power inside an exponent: a tower
        return True
    for m in re.finditer(r"!", t):  # factorials of big numbers or of groups holding them
        before = t[: m.start()].rstrip()
        atom = re.search(r"(\d+(?:\.\d+)?|HUGE)$", before) or re.search(r"(\([^()]*\)|\{[^{}]*\})$", before)
        if atom and _too_big(atom.group(1), MAX_FACTORIAL):
            return True
    for m in re.finditer(r"\\(?:binom|dbinom|tbinom|choose)\s*\{([^{}]*)\}\s*\{([^{}]*)\}", t):
        if _too_big(m.group(1), MAX_EXPONENT) or _too_big(m.group(2), MAX_EXPONENT):
            return True
    return False


def _collapse_powers(t: str) -> str | None:
    """Replace powers of plain numbers, innermost first, by their value (or HUGE beyond 10^8); None when an
    exponent itself is beyond ``MAX_EXPONENT``."""
    for _ in range(50):
        m = _NUM_POW.search(t)
        if m is None:
            return t
        base, exp = float(m.group(1)), float((m.group(2) or m.group(3)).replace(" ", ""))
        if abs(exp) > MAX_EXPONENT:
            return None
        log_size = abs(exp) * (0.0 if base in (0.0, 1.0) else abs(math.log10(base)))
        value = "HUGE" if log_size > 8 else repr(round(base**exp, 12))
        t = t[: m.start()] + value + t[m.end() :]
    return None


def _too_big(text: str, limit: int) -> bool:
    return "HUGE" in text or any(float(n) > limit for n in re.findall(r"\d+(?:\.\d+)?", text))


# ----------------------------------------------------------------------------- normalization

UNITS = (
    "units?|square units|sq units|cm|m|mm|km|meters?|metres?|centimeters?|kilometers?|inches|inch|in|feet|foot|"
    "ft|yards?|miles?|mph|seconds?|sec|s|minutes?|min|hours?|hrs?|days?|weeks?|months?|years?|degrees?|"
    "dollars?|cents?|pounds?|lbs?|ounces?|oz|grams?|g|kg|liters?|litres?|ml|gallons?|people|students|apples|"
    "books|marbles|points?|ways?|times|cubic\\s+\\w+|square\\s+\\w+"
)
_UNIT_TAIL = re.compile(rf"^(.*?[\d}}])\s*(?:(?:{UNITS})(?:\^\{{?[23]\}}?|²|³)?)\.?$", re.I)
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textnormal|textrm|mathrm|mbox|textit|mathbf|operatorname)\s*\{([^{}]*)\}")
_RELATIONS = (
    (r">=|≥|\\geqslant|\\ge(?![a-zA-Z])", r"\\geq "), (r"<=|≤|\\leqslant|\\le(?![a-zA-Z])", r"\\leq "),
    (r"!=|≠|\\ne(?![a-zA-Z])", r"\\neq "), (r"\\gt(?![a-zA-Z])", ">"), (r"\\lt(?![a-zA-Z])", "<"),
)  # fmt: skip


def _unbox(s: str) -> str:
    """\\boxed{X} left inside an answer -> X (nested braces)."""
    while (i := s.find("\\boxed{")) >= 0:
        depth, j = 0, i + 6
        for j in range(i + 6, len(s)):
            depth += {"{": 1, "}": -1}.get(s[j], 0)
            if depth == 0:
                break
        s = s[:i] + s[i + 7 : j] + s[j + 1 :]
    return s


def _solutions(s: str) -> str:
    """'p=5,q=2;p=7,q=2' -> '(5,2),(7,2)'; other ';'-lists -> ','-lists; runs of ',', '\\quad', 'and', 'or'
    between items -> ', '."""
    s = re.sub(r"\\text\{\s*(and|or|,)\s*\}", r" \1 ", s)
    sep = r"(?:\s*(?:,|\\q?quad(?![a-zA-Z])|\\q?quad(?=[a-z])|\band\b|\bor\b)\s*)+"
    s = re.sub(rf"(?<=[\w)\]}}]){sep}(?=[-\w(\[{{\\])", lambda m: ", " if m.group(0).strip() else m.group(0), s)
    parts = _split_top(s, ";")
    if len(parts) > 1:
        rows = []
        for part in parts:
            items = _split_top(part)
            pairs = [re.fullmatch(r"\s*[a-zA-Z]\w*\s*=\s*(.+)", x) for x in items]
            rows.append(f"({','.join(m.group(1) for m in pairs)})" if len(items) > 1 and all(pairs) else part)
        s = ",".join(rows)
    return s


_SUPER = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁽⁾ⁿⁱ", "0123456789+-()ni"))
_SUB = dict(zip("₀₁₂₃₄₅₆₇₈₉₊₋₍₎", "0123456789+-()"))
_SCRIPT_RUN = re.compile(f"[{''.join(_SUPER)}]+|[{''.join(_SUB)}]+")
_CURRENCY = re.compile(r"\\\$|\\(?:euro|pounds|yen)\b|[$€£¥₹]|\b(?:USD|EUR|GBP|Rs\.?)(?=\s*\d|\s*$)")


def _scripts(s: str) -> str:
    """Unicode super- and subscripts as LaTeX before NFKC flattens them: 10² is 10^{2} (NFKC alone makes 102)."""

    def repl(m: re.Match) -> str:
        run = m.group(0)
        if run[0] in _SUPER:
            return "^{" + "".join(_SUPER[c] for c in run) + "}"
        return "_{" + "".join(_SUB[c] for c in run) + "}"

    return _SCRIPT_RUN.sub(repl, s)


def normalize(s: str) -> str:
    """Presentation-only differences removed (see the module docstring)."""
    s = unicodedata.normalize("NFKC", _scripts(s)).replace("\x00", "").strip()
    s = re.sub(r"(?<!\\)(?:\\\\)*\\\s*$", "", s).strip()  # a stray trailing backslash (not a \\ row break)
    s = _CURRENCY.sub("", s).strip()  # currency glued to a number: \\$5, 5€, USD 5
    s = _unbox(s.strip("$").strip())
    s = re.sub(r",\\!\s*(?=\d{3})", ",", s)  # thousands written 11,\! 111
    s = re.sub(r"(?<!\\)\\ ", " ", s)  # '\ ' is a space; '\\ ' (a matrix row break) stays
    for a, b in (("\\(", ""), ("\\)", ""), ("\\[", ""), ("\\]", ""), ("\\left", ""), ("\\right", ""),
                 ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\:", ""), ("\\displaystyle", ""),
                 ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\cfrac", "\\frac"), ("{,}", ","),
                 ("\\{", "{"), ("\\}", "}"), ("\\$", ""), ("°", "^\\circ"), ("\\degree", "^\\circ"),
                 ("\\cup", "∪"), ("∞", "\\infty"), ("−", "-"), ("\\dots", "\\ldots"), ("\\cdots", "\\ldots"),
                 ("...", "\\ldots"), ("bmatrix", "pmatrix"), ("vmatrix", "pmatrix")):  # fmt: skip
        s = s.replace(a, b)
    s = re.sub(
        r"\[?\\begin\{array\}\{[^{}]*\}(.*?)\\end\{array\}\]?", r"\\begin{pmatrix}\1\\end{pmatrix}", s, flags=re.S
    )
    for pattern, repl in _RELATIONS:
        s = re.sub(pattern, repl, s)
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)  # degrees
    s = re.sub(r"\s*(?:\\%|%|\bpct\b|\bpercent(?:age)?\b)\s*$", r"\\%", s)  # 28 %, 28 pct -> 28\%
    s = _TEXT_CMD.sub(lambda m: m.group(1), s)
    if (m := _UNIT_TAIL.match(s.strip())) and not re.fullmatch(r"[a-zA-Z]", s.strip()):
        s = m.group(1)
    s = re.sub(r"(?<![\d.}])(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}", _mixed, s)  # 1\frac{4}{5} -> (1+\frac{4}{5})
    s = re.sub(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])", r"\1\\times 10^{\2}", s)  # 1.5e3
    s = re.sub(r"([\da-zA-Z])_([\da-zA-Z])(?![\w{])", r"\1_{\2}", s)  # subscripts: 52_8 -> 52_{8}, a_3 -> a_{3}
    s = s.replace("~", "").strip().rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?:\\%)?", s):  # thousands separators
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?(?:\\%)?", s):  # thousands written with spaces: 1 000 000
        s = s.replace(" ", "")
    s = _solutions(s)
    return re.sub(r"\s+", " ", s).strip()


def _mixed(m: re.Match) -> str:
    whole, num, den = m.groups()
    if int(num) >= int(den):  # not a proper fraction: 2\frac{3}{2} is a product
        return m.group(0)
    return f"({whole}+\\frac{{{num}}}{{{den}}})"


def _is_label(s: str) -> bool:
    """The left side of a labelled answer: a name, (p,q), |AB|, f(x), S_{MBCN}:S, \\frac{NO}{BO}; not an
    expression with + or -, and not a number."""
    return not re.search(r"[-+]", s) and not re.fullmatch(r"[\d.\s]+", s)


_NAME = re.compile(r"\\?[a-zA-Z]+(?:_\{?\w+\}?)?")


def _chain_values(s: str, other: str) -> list[str] | None:
    """Other readings of a chain or a labelled answer, compared against ``other``. [] when there is no chain;
    None when an approximation contradicts the value it rounds, a hedge and wrong ('12 \\approx 13').

    * '=' chains ('x = 5+5+1 = 11') read as their last value (and 'x = 11').
    * '\\approx' chains read as the value claimed exactly, the one before the first '\\approx'
      ('\\frac{\\pi}{4} \\approx 0.785' is pi/4); the rounded value after it counts only against an answer
      written as a decimal (a gold of 0.785), or when nothing exact was claimed ('x \\approx 11').
    Values around '\\approx' without symbols must agree to the places the rounding writes."""
    if len(_split_top(s)) > 1:
        return []  # a list: its items are compared one by one
    pieces = re.split(r"(=|\\approx|≈)", s)
    parts, ops = [x.strip() for x in pieces[0::2]], ["=" if op == "=" else "~" for op in pieces[1::2]]
    if len(parts) < 2 or not all(parts):
        return []
    if len(parts) == 2 and ops == ["="] and not _is_label(parts[0]):
        return []  # '7 = 11a + c' is an equation, not a labelled 11a + c
    for left, op, right in zip(parts, ops, parts[1:]):
        if op == "~" and _link_holds(left, right, op) is False:
            return None  # an '=' slip ('5+5+1 = 7 = 11') is working; the last value is the answer
    if "~" not in ops:
        out = [parts[-1]]
        if len(parts) >= 3 and re.fullmatch(r"[a-zA-Z]\w*", parts[0]):
            out.append(f"{parts[0]} = {parts[-1]}")
        return out
    exact = parts[ops.index("~")]
    if _NAME.fullmatch(exact):  # 'x \approx 11': nothing exact was claimed
        return [parts[-1]]
    return [exact, parts[-1]] if _places(other) is not None else [exact]


def _link_holds(left: str, right: str, op: str) -> bool | None:
    """Whether two adjacent values of a chain agree ('=': exactly, '~': the right one is the left one rounded to
    the places it writes); None when either side has symbols or does not parse."""
    a, b = _constant(left), _constant(right)
    if a is None or b is None:
        return None
    if op == "=":
        return numbers_equal(a, b, left, right)
    try:
        diff = sp.Add(_decimal_exact(a, left), -_decimal_exact(b, right)).evalf(30, maxn=600)
        k = _places(right) if _places(right) is not None else (_places(left) or 0)
        return bool(abs(diff) <= sp.Rational(1, 2 * 10**k) * (1 + sp.Rational(1, 10**9)))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError, RecursionError):
        return None


def _constant(text: str) -> sp.Expr | None:
    """Math-Verify's parse of ``text`` when it is a number without symbols, else None."""
    if hostile(text):
        return None
    parsed = parse_answer(text)
    return _numeric_value(parsed[0]) if parsed else None


def _n_values(s: str) -> int:
    """How many alternative values an answer offers: items of a list or a braced set, both signs of \\pm."""
    if "\\pm" in s or "±" in s:
        return 2
    if s.startswith("{") and s.endswith("}"):
        return len(_split_top(s[1:-1]))
    return len(_split_top(s))


# ----------------------------------------------------------------------------- comparison


def _split_top(s: str, seps: str = ",") -> list[str]:
    """Split on separators that are not inside brackets."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch in seps and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


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


def _expr_equal(a: sp.Expr, b: sp.Expr, p: str, g: str) -> bool:
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


def _scalar_equal(p: str, g: str) -> bool:
    try:
        a, b = parse_math(p), parse_math(g)
    except (ParseError, RecursionError, ValueError, TypeError):
        return False
    if _expr_equal(a, b, p, g):
        return True
    if "%" in p or "%" in g:  # '50%' against '50': percent signs are often dropped
        a2 = sp.Mul(a, 100) if "%" in p else a
        b2 = sp.Mul(b, 100) if "%" in g else b
        return _expr_equal(a2, b2, p, g)
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
        return _unordered_equal(_expand_pm(p) or _split_top(p), pm)
    if (pm := _expand_pm(p)) is not None:
        return _unordered_equal(pm, _split_top(g))
    if "∪" in g or "∪" in p:  # unions of intervals
        gs, ps = g.split("∪"), p.split("∪")
        return len(gs) > 1 and len(gs) == len(ps) and all(_equivalent(a, b) for a, b in zip(ps, gs))
    if _INTERVAL.match(g) and _INTERVAL.match(p):
        inner_g, inner_p = _split_top(g[1:-1]), _split_top(p[1:-1])
        if (g[0], g[-1]) != (p[0], p[-1]) or len(inner_g) != len(inner_p):
            return False
        return all(_equivalent(a, b) for a, b in zip(inner_p, inner_g))  # intervals and tuples: ordered
    if g.startswith("{") and g.endswith("}") and len(_split_top(g[1:-1])) > 1:  # sets: unordered
        inner = p[1:-1] if p.startswith("{") and p.endswith("}") else p
        return _unordered_equal(_split_top(inner), _split_top(g[1:-1]))
    if len(gs := _split_top(g)) > 1:  # a list of answers ('1, 2'): order does not matter
        return _unordered_equal(_split_top(p), gs)
    if "=" in g and "=" in p and _equation_equal(p, g):
        return True
    if "=" in g or "=" in p:
        rg, rp = _lhs_is_variable(g), _lhs_is_variable(p)
        if rg is not None or rp is not None:
            return _equivalent(rp if rp is not None else p, rg if rg is not None else g)
        return False
    if re.search(r"[a-zA-Z]{3,}", g.replace("\\", "")) and not re.search(r"\\[a-z]+|\d", g):  # plain text
        return _text(p) == _text(g)
    return _scalar_equal(p, g)


def _text(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def grade(text: str, gold: str, time_limit: float | None = 1.0) -> tuple[bool, str | None]:
    """(correct, extracted answer) for one response, in this process: extraction and the check each bounded by
    ``time_limit`` CPU seconds."""
    try:
        with cpu_deadline(time_limit):
            pred = extract_answer(text)
    except GradingTimeout:
        return False, None
    return (pred is not None and is_equivalent(pred, gold, time_limit)), pred


# ----------------------------------------------------------------------------- decision


def _numeric_value(obj) -> sp.Expr | None:
    """A Math-Verify parse that is a plain number (no symbols, sets, relations or matrices), else None."""
    if not isinstance(obj, sp.Expr) or obj.free_symbols or obj.atoms(sp.Symbol, sp.MatrixSymbol):
        return None
    return obj


def _places(s: str) -> int | None:
    """Most digits written after a decimal point in ``s``; None when it writes no decimal."""
    places = [len(d) for d in re.findall(r"\d*\.(\d+)", s)]
    return max(places) if places else None


def _decimal_exact(e: sp.Expr, text: str | None = None) -> sp.Expr:
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
        diff = sp.Add(_decimal_exact(a, pred), -_decimal_exact(b, gold))
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
            k = _places(text)
            if k is not None and k >= MIN_PLACES:  # a side written as a decimal (our parser reads it exactly)
                tol = max(tol, sp.Rational(1, 2 * 10**k))
        if tol == 0:
            return False
        re_d, im_d = (diff.evalf(30, maxn=600) if not diff.is_Rational else diff).as_real_imag()
        return bool(abs(re_d) <= tol and abs(im_d) <= tol)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError, RecursionError):
        return None


def _math_verify_equal(p: str, g: str) -> tuple[bool, bool]:
    """(verdict, final): Math-Verify's verdict, replaced by ours where both sides are numbers (then final:
    no other comparison may overrule it). Not final when Math-Verify cannot parse a side."""
    ok, gp, pp = verify(p, g)
    if not gp or not pp:
        return False, False
    a, b = _numeric_value(pp[0]), _numeric_value(gp[0])
    if (a is None or b is None) and not ok:  # 'i' as the imaginary unit when it is the only symbol
        a, b = _numeric_value(_imaginary(pp[0])), _numeric_value(_imaginary(gp[0]))
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
    if hostile(pred) or hostile(gold):
        return False
    p, g = normalize(pred), normalize(gold)
    if not p or not g or hostile(p) or hostile(g):  # normalizing can reveal a power (1e999999999)
        return p == g and bool(p)
    if p == g or p.lower() == g.lower():
        return True
    cg, cp = _choice(g), _choice(p)
    if cg and cp:  # multiple choice: letters compare, (B) == B == '(B) 12'; two label texts must agree too
        return cg[0] == cp[0] and (cg[1] is None or cp[1] is None or _equivalent(cp[1], cg[1]))
    if cp and cp[1] is not None:  # '(B) 12' against a gold value: the value given
        return _equivalent(cp[1], g)
    if cg or cp:
        return False
    if _n_values(p) > 1 and _n_values(g) == 1 and not g.startswith(("(", "[", "{")) and _matrix(g) is None:
        return False  # '3 or 4', '3, 4', '\\pm 3' against one value: a hedge, wrong whichever value is gold
    chains = _chain_values(p, g)
    if chains is None:
        return False  # '12 \\approx 13', 'x = 5+5+1 = 12': the answer contradicts itself
    if "\\ldots" in p or "\\ldots" in g:  # sequences: ordered, the ellipsis included
        ps, gs = _split_top(p), _split_top(g)
        return len(ps) == len(gs) and all(a == b or (a != "\\ldots" != b and _equivalent(a, b)) for a, b in zip(ps, gs))
    if _compare(p, g):
        return True
    for pc in [p, *chains]:  # labelled or chained answers: compare by their last value too
        for gc in [g, *(_chain_values(g, p) or [])]:
            if (pc, gc) != (p, g) and pc and gc and _compare(pc, gc):
                return True
    return False


def _compare(p: str, g: str) -> bool:
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
