"""Final-answer extraction and math equivalence.

``extract_answer(text)`` finds the final answer of a response; ``is_equivalent(pred, gold)`` decides whether
two answers are the same mathematical object. Model text is hostile input: it is only ever tokenized and
parsed by ``rewards.parse`` (explicit sympy constructors, size guards), never evaluated. The hard time limit
lives one level up (``rewards.pool``): these functions run inside killable worker processes.
"""

from __future__ import annotations

import random
import re
import unicodedata

import sympy as sp

from rewards.parse import ParseError, parse_math

MAX_TEXT = 200_000  # characters of a response looked at (its tail: answers come last)
_BOX = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_IS = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?\s*([^\n]+)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*([^\n]+)")


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...} (nested braces), or \\boxed 5; None if unclosed."""
    m = None
    for m in _BOX.finditer(text):  # noqa: B007 - we want the last match
        pass
    i = m.end()
    if i < len(text) and text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j].strip()
        return None  # unclosed box: no answer
    tail = re.match(r"([^\s$]+)", text[i:])  # brace-less \boxed 5: up to whitespace or $
    return tail.group(1) if tail else None


def extract_answer(text: str) -> str | None:
    """The final answer: last \\boxed{}/\\fbox{}, else 'the (final) answer is ...', else GSM8K '#### x'."""
    text = text[-MAX_TEXT:].replace("\x00", "")
    if _BOX.search(text):
        return _last_boxed(text)
    for pattern in (_ANSWER_IS, _HASHES):
        last = None
        for last in pattern.finditer(text):  # noqa: B007 - we want the last match
            pass
        if last:
            ans = last.group(1).strip().rstrip(".").strip().strip("$").strip()
            return ans or None
    return None


# ----------------------------------------------------------------------------- normalization

UNITS = (
    "units?|square units|sq units|cm\\^?2?|m\\^?2?|mm|km|meters?|centimeters?|inches|inch|in|feet|foot|ft|yards?|"
    "miles?|mph|seconds?|sec|minutes?|min|hours?|hrs?|days?|weeks?|months?|years?|degrees?|dollars?|cents?|"
    "pounds?|lbs?|ounces?|oz|grams?|g|kg|liters?|litres?|ml|gallons?|people|students|apples|books|"
    "marbles|"
    "points?|ways?|times|percent"
)
_UNIT_TAIL = re.compile(rf"^(.*?\d)\s*(?:\\(?:text|mbox|mathrm)\{{\s*(?:{UNITS})\s*\}}|(?:{UNITS}))\.?$", re.I)


def normalize(s: str) -> str:
    """Presentation-only differences removed: $, \\left, spacing, \\dfrac, degrees, units, thousands commas."""
    s = unicodedata.normalize("NFKC", s).replace("\x00", "").strip()
    s = s.strip("$").strip()
    for a, b in (("\\(", ""), ("\\)", ""), ("\\[", ""), ("\\]", ""), ("\\left", ""), ("\\right", ""),
                 ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\:", ""), ("\\quad", ""), ("\\qquad", ""),
                 ("\\displaystyle", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
                 ("{,}", ","), ("\\{", "{"), ("\\}", "}"),
                 ("\\$", ""), ("°", "^\\circ"), ("\\degree", "^\\circ"), ("\\cup", "∪"),
                 ("∞", "\\infty"), ("−", "-")):  # fmt: skip
        s = s.replace(a, b)
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)  # degrees
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox|textit|mathbf)\{([^{}]*)\}", r"\1", s)
    m = _UNIT_TAIL.match(s)
    if m:
        s = m.group(1)
    s = s.replace("~", "").strip().rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s.replace(" ", "")):
        s = s.replace(",", "")
    return re.sub(r"\s+", " ", s)


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
        v = complex(sp.N(e.doit(), 30))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError, RecursionError):
        return None
    return v


def _close(x: complex, y: complex) -> bool:
    if x != x or y != y:  # NaN
        return False
    if abs(x) == float("inf") or abs(y) == float("inf"):
        return x == y
    return abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))


def _expr_equal(a: sp.Expr, b: sp.Expr) -> bool:
    """Same value: numerically for constants, at random probe points for expressions with symbols."""
    free = a.free_symbols | b.free_symbols  # sin^2 x + cos^2 x vs 1: probe on the union
    if not free:
        x, y = _numeric(a), _numeric(b)
        return x is not None and y is not None and _close(x, y)
    rng = random.Random(0)
    for _ in range(6):
        point = {s: sp.Rational(rng.randint(5, 25), 10) for s in free}
        x, y = _numeric(a.subs(point)), _numeric(b.subs(point))
        if x is None or y is None or not _close(x, y):
            return False
    return True


def _scalar_equal(p: str, g: str) -> bool:
    try:
        a, b = parse_math(p), parse_math(g)
    except (ParseError, RecursionError, ValueError, TypeError):
        return False
    if _expr_equal(a, b):
        return True
    if "%" in p or "%" in g:  # '50%' against '50': percent signs are often dropped
        a2 = sp.Mul(a, 100) if "%" in p else a
        b2 = sp.Mul(b, 100) if "%" in g else b
        return _expr_equal(a2, b2)
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
    rng = random.Random(1)
    ratio = None
    for _ in range(6):
        point = {s: sp.Rational(rng.randint(5, 25), 10) for s in dp.free_symbols}
        x, y = _numeric(dp.subs(point)), _numeric(dg.subs(point))
        if x is None or y is None:
            return False
        if abs(y) < 1e-12 or abs(x) < 1e-12:
            if not (abs(x) < 1e-12 and abs(y) < 1e-12):
                return False
            continue
        ratio = ratio if ratio is not None else x / y
        if not _close(x, ratio * y):
            return False
    return True


_INTERVAL = re.compile(r"^[\[(].*,.*[\])]$")
_CHOICE = re.compile(r"^\(?([A-Ea-e])\)?$")
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
        hit = next((i for i, p in enumerate(left) if is_equivalent(p, g)), None)
        if hit is None:
            return False
        left.pop(hit)
    return True


def _expand_pm(s: str) -> list[str] | None:
    if "\\pm" not in s and "±" not in s:
        return None
    s = s.replace("±", "\\pm")
    return [s.replace("\\pm", "+", 1), s.replace("\\pm", "-", 1)]


def is_equivalent(pred: str, gold: str) -> bool:
    """True when ``pred`` and ``gold`` are the same mathematical answer in different forms."""
    p, g = normalize(pred), normalize(gold)
    if not p or not g:
        return False
    if p == g or p.lower() == g.lower():
        return True
    mg, mp = _CHOICE.match(g), _CHOICE.match(p)
    if mg or mp:  # multiple choice: letters compare, (B) == B
        return bool(mg and mp) and mg.group(1).upper() == mp.group(1).upper()
    if (mat_g := _matrix(g)) is not None:
        mat_p = _matrix(p)
        return (mat_p is not None and len(mat_p) == len(mat_g)
                and all(len(rp) == len(rg) and all(is_equivalent(a, b) for a, b in zip(rp, rg))
                        for rp, rg in zip(mat_p, mat_g)))  # fmt: skip
    if (pm := _expand_pm(g)) is not None:
        return _unordered_equal(_expand_pm(p) or _split_top(p), pm)
    if (pm := _expand_pm(p)) is not None:
        return _unordered_equal(pm, _split_top(g))
    if "∪" in g or "∪" in p:  # unions of intervals
        gs, ps = g.split("∪"), p.split("∪")
        return len(gs) > 1 and len(gs) == len(ps) and all(is_equivalent(a, b) for a, b in zip(ps, gs))
    if _INTERVAL.match(g) and _INTERVAL.match(p):
        inner_g, inner_p = _split_top(g[1:-1]), _split_top(p[1:-1])
        if (g[0], g[-1]) != (p[0], p[-1]) or len(inner_g) != len(inner_p):
            return False
        return all(is_equivalent(a, b) for a, b in zip(inner_p, inner_g))  # intervals and tuples: ordered
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
            return is_equivalent(rp if rp is not None else p, rg if rg is not None else g)
        return False
    if re.search(r"[a-zA-Z]{3,}", g.replace("\\", "")) and not re.search(r"\\[a-z]+|\d", g):  # plain text
        return _text(p) == _text(g)
    return _scalar_equal(p, g)


def _text(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def grade(text: str, gold: str) -> tuple[bool, str | None]:
    """(correct, extracted answer) for one response, in this process (no time limit: see rewards.pool)."""
    pred = extract_answer(text)
    return (pred is not None and is_equivalent(pred, gold)), pred
