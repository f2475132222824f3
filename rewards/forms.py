"""Forms that Math-Verify reads as something else, decided before it sees them (``rewards.math``).

* **Letter case** (``same_words``): case is ignored only between words (``\\text{East}`` is ``east``,
  ``No solutions`` is ``no solution``). In math, case names another object: ``3R^2`` is not ``3r^2``,
  ``P(A)`` is not ``p(a)``, ``\\Delta`` is not ``\\delta``. A side is words when it has a run of two lower-case
  letters and no LaTeX command; a final plural ``s`` on a word of four letters or more is dropped.
  Math-Verify reads every name in lower case; where the two sides' names differ in case only
  (``case_clash``), its verdict is not used and our case-keeping parser decides.
* **Sets are not tuples** (``brackets_differ``): ``\\{1, 2\\}`` is neither the ordered pair ``(1, 2)`` nor
  the interval ``[1, 2]`` (Math-Verify compares their elements as sets). Only escaped braces make a set: a
  bare ``{1, 2}`` is LaTeX grouping, the list 1, 2.
* **Numerals with a base subscript** (``base_numeral_equal``): Math-Verify drops the subscript, so ``4210_6``
  equalled ``4210_5``. Two subscripted numerals are equal when they are the same
  digits in the same base (the gold's base is the one asked for; base 10 is the same as none). A numeral
  against bare digits: the same digits (``2516`` is ``2516_8``, and a bare gold ``110111`` for "express in base
  2" is ``110111_2``): the bare side is read as the digits in the base asked, never as a decimal value.
"""

from __future__ import annotations

import re

_WORDY = re.compile(r"[a-z]{2}")
_PLURAL = re.compile(r"(?<=[a-z]{3})s\b")
_PUNCTUATION = re.compile(r"[\s.,;:'\"!?{}]")


def is_words(s: str) -> bool:
    """Text, not math: a run of two lower-case letters and no LaTeX command."""
    return "\\" not in s and bool(_WORDY.search(s))


def same_words(p: str, g: str) -> bool:
    """Two text answers are the same words: case and plurals ignored between words only (module docstring)."""
    if is_words(p) and is_words(g):
        p, g = _PLURAL.sub("", p.lower()), _PLURAL.sub("", g.lower())
    return _PUNCTUATION.sub("", p) == _PUNCTUATION.sub("", g)  # 'a+b+c' is not 'abc': operators stay


_NAMES = re.compile(r"\\[a-zA-Z]+|[a-zA-Z]")


def case_clash(p: str, g: str) -> bool:
    """The two sides name different letters that are equal in lower case ('3R^2' against '3r^2')."""
    names_p, names_g = set(_NAMES.findall(p)), set(_NAMES.findall(g))
    return names_p != names_g and {n.lower() for n in names_p} == {n.lower() for n in names_g}


def _braced_set(s: str, raw: str) -> bool:
    """A set written with escaped braces: a bare '{1,3}' is LaTeX grouping, the list 1, 3."""
    return s.startswith("{") and s.endswith("}") and "," in s and ("\\{" in raw or "\\lbrace" in raw)


def _bracketed(s: str) -> bool:
    return s[:1] in "([" and s[-1:] in ")]" and "," in s


_MEMBER = re.compile(r"^\s*[a-zA-Z]\s*\\in\s*")


def brackets_differ(p: str, g: str, raw_p: str, raw_g: str) -> bool:
    """A set on one side and a tuple or an interval on the other (normalized answers and the raw ones)."""
    p, g = _MEMBER.sub("", p), _MEMBER.sub("", g)  # 'x \in \{2, 5\}' is the set
    return (_braced_set(p, raw_p) and _bracketed(g)) or (_braced_set(g, raw_g) and _bracketed(p))


_NUMERAL = re.compile(r"([0-9A-Za-z]{0,63}\d[0-9A-Za-z]{0,63})_\{(\d{1,2})\}")  # a digit: 'a_{12}' is a name
_DIGITS = re.compile(r"[0-9A-Za-z]{1,64}")


def _numeral(s: str) -> tuple[str, int] | None:
    """'4210_{5}' -> ('4210', 5) when every digit is below the base; else None ('a_{5}' is a name)."""
    if not (m := _NUMERAL.fullmatch(s)):
        return None
    digits, base = m.group(1).upper().lstrip("0") or "0", int(m.group(2))
    if not 2 <= base <= 36 or any(int(d, 36) >= base for d in digits):
        return None
    return digits, base


def base_numeral_equal(p: str, g: str) -> bool | None:
    """Our verdict when a side is a numeral with a base subscript (module docstring); None otherwise."""
    np_, ng = _numeral(p), _numeral(g)
    if np_ is None and ng is None:
        return None
    if np_ is not None and ng is not None:
        return np_ == ng
    numeral, bare = (np_, g) if np_ is not None else (ng, p)
    if not _DIGITS.fullmatch(bare):
        return None  # '52_{8}' against an expression: not a numeral question
    return (bare.upper().lstrip("0") or "0") == numeral[0]
