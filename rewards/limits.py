"""Size guards on model text, the one set used by the whole grader (``rewards.math``, ``rewards.parse``,
``rewards.pool``): what could make a parser or sympy run away in C code, where no time limit can interrupt it.

``hostile`` checks raw text before anything parses it; ``rewards.parse`` enforces the same limits again on
what it builds (its depth counts parser recursion, which a bracket can cost more than one level of).
"""

from __future__ import annotations

import math
import re

MAX_ANSWER = 2000  # characters of one answer
MAX_NESTING = 40  # bracket depth of the raw text
MAX_PARSE_DEPTH = 60  # recursion depth of our parser (brackets, fractions, groups)
MAX_DIGITS = 400  # digits of one number literal
MAX_EXPONENT = 10_000  # |exponent| of a power of plain numbers we are willing to evaluate exactly
MAX_FACTORIAL = 1_000

_NUM_POW = re.compile(r"(\d+(?:\.\d+)?)\s*\^\s*(?:\{\s*([-+]?\s*\d+(?:\.\d+)?)\s*\}|([-+]?\d+(?:\.\d+)?))")


def hostile(s: str) -> bool:
    """Text that could make a parser or sympy run away in C code, where no time limit can interrupt it: too
    long, too deep, giant literals, power towers, huge exponents, factorials or binomials. Checked on the
    raw text, before anything parses it."""
    if len(s) > MAX_ANSWER or re.search(rf"\d{{{MAX_DIGITS},}}", s):
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
