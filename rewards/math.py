"""Final-answer extraction and equivalence checking for math answers.

Model text is hostile input: nothing here evaluates it. This module is the skeleton grader (exact and
numeric comparison); see ``is_equivalent``.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BOX = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_IS = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(.+)")
MAX_TEXT = 100_000  # characters of a response looked at (the tail: answers come last)


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...} (nested braces), or \\boxed 5; None if unclosed."""
    matches = list(_BOX.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    i = m.end()
    if i < len(text) and text[i] == "{":
        depth, start = 0, i + 1
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:j].strip()
        return None  # unclosed box: no answer
    tail = re.match(r"([^\s$]+)", text[i:])  # \boxed 5 (brace-less): up to whitespace or $
    return tail.group(1) if tail else None


def extract_answer(text: str) -> str | None:
    """The final answer of a full response: last \\boxed{}, else 'the (final) answer is ...', else '#### x'."""
    text = text[-MAX_TEXT:].replace("\x00", "")
    if _BOX.search(text):
        return _last_boxed(text)
    m = None
    for m in _ANSWER_IS.finditer(text):
        pass
    if m:
        ans = m.group(1).strip().splitlines()[0].strip()
        return ans.rstrip(".").strip().strip("$").strip() or None
    m = None
    for m in _HASHES.finditer(text):
        pass
    if m:
        return m.group(1).strip().splitlines()[0].strip() or None
    return None


def _normalize(s: str) -> str:
    s = s.strip().strip("$").strip()
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\!", "").replace("\\,", "").replace("\\ ", "").replace(" ", "")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # thousands separators
    return s.rstrip(".")


def _as_number(s: str) -> Fraction | None:
    m = re.fullmatch(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}", s)
    try:
        if m:
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return -value if m.group(1) else value
        if re.fullmatch(r"-?\d+(\.\d+)?(/\d+)?", s) and len(s) < 50:
            return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def is_equivalent(pred: str, gold: str) -> bool:
    """Same answer: equal after normalization, or equal as exact rational numbers."""
    a, b = _normalize(pred), _normalize(gold)
    if a == b:
        return True
    x, y = _as_number(a), _as_number(b)
    return x is not None and x == y


def grade(text: str, gold: str) -> tuple[bool, str | None]:
    """(correct, extracted answer) for one response."""
    pred = extract_answer(text)
    return (pred is not None and is_equivalent(pred, gold)), pred
