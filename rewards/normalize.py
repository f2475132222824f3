"""Normalization: presentation removed from an answer before it is compared (``normalize``), and the other
readings of a chained or labelled answer (``chain_values``: ``x = 5+5+1 = 11`` is also 11)."""

from __future__ import annotations

import re
import unicodedata

import sympy as sp

from rewards.limits import hostile
from rewards.numbers import decimal_exact, decimal_places, numbers_equal, numeric_value
from rewards.verify import parse as parse_answer

UNITS = (
    "units?|square units|sq units|cm|m|mm|km|meters?|metres?|centimeters?|kilometers?|inches|inch|in|feet|foot|"
    "ft|yards?|miles?|mph|km/h|kph|miles per hour|kilometers per hour|meters per second|m/s|seconds?|sec|s|"
    "minutes?|min|hours?|hrs?|days?|weeks?|months?|years?|degrees?|"
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
    parts = split_top(s, ";")
    if len(parts) > 1:
        rows = []
        for part in parts:
            items = split_top(part)
            pairs = [re.fullmatch(r"\s*[a-zA-Z]\w*\s*=\s*(.+)", x) for x in items]
            rows.append(f"({','.join(m.group(1) for m in pairs)})" if len(items) > 1 and all(pairs) else part)
        s = ",".join(rows)
    return s


_SUPER = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁽⁾ⁿⁱ", "0123456789+-()ni"))
_SUB = dict(zip("₀₁₂₃₄₅₆₇₈₉₊₋₍₎", "0123456789+-()"))
_SCRIPT_RUN = re.compile(f"[{''.join(_SUPER)}]+|[{''.join(_SUB)}]+")
_CURRENCY = re.compile(r"\\\$|\\(?:euro|pounds|yen|textdollar)\b|[$€£¥₹]|\b(?:USD|EUR|GBP|Rs\.?)(?=\s*\d|\s*$)")


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
    s = unicodedata.normalize("NFKC", _vulgar(_scripts(s))).replace("\x00", "").strip()
    s = re.sub(r"√\s*(\d+|[a-zA-Z]|\{[^{}]*\}|\([^()]*\))", lambda m: f"\\sqrt{{{m.group(1).strip('{}()')}}}", s)
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
                 ("...", "\\ldots"), ("\\varnothing", "\\emptyset"), ("bmatrix", "pmatrix"),
                 ("vmatrix", "pmatrix")):  # fmt: skip
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
    s = _counted(s)
    s = re.sub(r"(?<![\d.])(\d*)\.(\d*)\\overline\{(\d{1,20})\}", _repeating, s)  # 0.\overline{3} is 1/3
    s = re.sub(r"(?<![\d.}])(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}", _mixed, s)  # 1\frac{4}{5} -> (1+\frac{4}{5})
    s = re.sub(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])", r"\1\\times 10^{\2}", s)  # 1.5e3
    s = re.sub(r"([\da-zA-Z])_([\da-zA-Z])(?![\w{])", r"\1_{\2}", s)  # subscripts: 52_8 -> 52_{8}, a_3 -> a_{3}
    s = s.replace("~", "").strip().rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?:\\%)?", s):  # thousands separators
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?(?:\\%)?", s):  # thousands written with spaces: 1 000 000
        s = s.replace(" ", "")
    s = _either(s)
    s = _solutions(s)
    return re.sub(r"\s+", " ", s).strip()


_VULGAR = re.compile("[\u00bc-\u00be\u2150-\u215e]")  # ½, ¾, ⅓...: NFKC makes 1½ the '11⁄2' of 11/2


def _vulgar(s: str) -> str:
    def frac(m: re.Match) -> str:
        num, den = unicodedata.normalize("NFKC", m.group()).split("\u2044")
        return f"\\frac{{{num}}}{{{den}}}"

    return _VULGAR.sub(frac, s)


def _repeating(m: re.Match) -> str:
    """'1.2\\overline{34}' -> the fraction it spells: (1234 - 12) / (10^1 * (10^2 - 1))."""
    whole, fixed, rep = m.group(1) or "0", m.group(2), m.group(3)
    num = int(whole + fixed + rep) - int(whole + fixed)
    return f"\\frac{{{num}}}{{{10 ** len(fixed) * (10 ** len(rep) - 1)}}}"


_RELATION = r"[^,]*?(?:<|>|\\leq|\\geq|\\neq)[^,]*?"
_EITHER = re.compile(rf"({_RELATION})\s+(?:or|\\lor|\\vee)\s+({_RELATION})")


def _either(s: str) -> str:
    """'x < 2 or x > 3' is the union of the two sets, not the list '(x < 2, x > 3)' that 'and' would make."""
    return f"{m.group(1)} ∪ {m.group(2)}" if (m := _EITHER.fullmatch(s)) else s


_NOT_A_NOUN = (
    "plus|minus|halves|thirds|fourths|fifths|sixths|sevenths|eighths|ninths|tenths|hundredths|thousandths|"
    "quarters|dozens|hundreds|thousands|millions|billions|trillions|squares|cubes|roots|factorials|digits|zeros|"
    "ones|tens|twos|threes|fours|fives|sixes|sevens|eights|nines|twelves|scores|grosses|pairs|[a-z]+ths"
)  # multipliers and place values: '5 tens' is 50, '3 fifths' is 3/5
_COUNTED = re.compile(rf"(-?[\d.,]*\d)\s+(?!(?:{_NOT_A_NOUN})$)[a-z]{{3,20}}s")


def _counted(s: str) -> str:
    """'12 cookies' -> '12': a number and one plural noun (not a multiplier: '5 thousands', '3 halves')."""
    return m.group(1) if (m := _COUNTED.fullmatch(s)) else s


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


def chain_values(s: str, other: str) -> list[str] | None:
    """Other readings of a chain or a labelled answer, compared against ``other``. [] when there is no chain;
    None when an approximation contradicts the value it rounds, a hedge and wrong ('12 \\approx 13').

    * '=' chains ('x = 5+5+1 = 11') read as their last value (and 'x = 11').
    * '\\approx' chains read as the value claimed exactly, the one before the first '\\approx'
      ('\\frac{\\pi}{4} \\approx 0.785' is pi/4); the rounded value after it counts only against an answer
      written as a decimal (a gold of 0.785), or when nothing exact was claimed ('x \\approx 11').
    Values around '\\approx' without symbols must agree to the places the rounding writes."""
    if len(split_top(s)) > 1:
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
    return [exact, parts[-1]] if decimal_places(other) is not None else [exact]


def _link_holds(left: str, right: str, op: str) -> bool | None:
    """Whether two adjacent values of a chain agree ('=': exactly, '~': the right one is the left one rounded to
    the places it writes); None when either side has symbols or does not parse."""
    a, b = _constant(left), _constant(right)
    if a is None or b is None:
        return None
    if op == "=":
        return numbers_equal(a, b, left, right)
    try:
        diff = sp.Add(decimal_exact(a, left), -decimal_exact(b, right)).evalf(30, maxn=600)
        k = decimal_places(right) if decimal_places(right) is not None else (decimal_places(left) or 0)
        return bool(abs(diff) <= sp.Rational(1, 2 * 10**k) * (1 + sp.Rational(1, 10**9)))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError, RecursionError):
        return None


def _constant(text: str) -> sp.Expr | None:
    """Math-Verify's parse of ``text`` when it is a number without symbols, else None."""
    if hostile(text):
        return None
    parsed = parse_answer(text)
    return numeric_value(parsed[0]) if parsed else None


def n_values(s: str) -> int:
    """How many alternative values an answer offers: items of a list or a braced set, both signs of \\pm."""
    if "\\pm" in s or "±" in s:
        return 2
    if s.startswith("{") and s.endswith("}"):
        return len(split_top(s[1:-1]))
    return len(split_top(s))


def split_top(s: str, seps: str = ",") -> list[str]:
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
