"""Final-answer extraction from a whole response: our policy, in order.

1. The last ``\\boxed{}`` / ``\\fbox{}`` (nested braces, ``\\boxed 5``). Boxes that end the response together,
   separated only by commas, "and", ``\\quad`` or math delimiters (``\\boxed{1}, \\boxed{2}``), are one list
   answer; an unclosed last box is no answer.
2. An answer anchor, the last one: "final answer is X" (the MATH few-shot ending "Final Answer: The final
   answer is $X$. I hope it is correct." gives X), "the answer is", "Answer: X" / "answer:" lines,
   "Answer $X$" / "Answer \\[X\\]", 答案是 / 答案为, GSM8K "#### X". Math delimiters around X are removed.
3. A bold final answer ``**73**`` on the last line, or a display-math block that ends the response.

It never guesses the last number of free text: a response without an answer gets no reward.
"""

from __future__ import annotations

import re

MAX_TEXT = 200_000  # characters of a response looked at (its tail: answers come last)
_BOX = re.compile(r"\\(?:boxed|fbox)\s*")
_JOINER = re.compile(
    r"^(?:\s|,|;|\$|\\\(|\\\)|\\\[|\\\]|\\quad|\\qquad|\\,|\\;|and|or|&|\\text\{\s*(?:and|or|,)\s*\})*$"
)
# display math may span lines; inline math may not, and an escaped \$ is no delimiter
_MATH = r"(?:\$\$(?P<dd>.+?)\$\$|(?<!\\)\$(?P<d>(?:[^$\n\\]|\\.)+?)\$|\\\[(?P<b>.+?)\\\]|\\\((?P<p>[^\n]+?)\\\))"
_ANCHORS = [
    # "The final answer is $X$. I hope it is correct." / "final answer: X" / "the answer is X"
    re.compile(r"(?:final answer|the answer)\s*(?:is|:|=)\s*:?\s*(?P<rest>[^\n]+)", re.I),
    re.compile(r"(?:^|\n)\s*\**answer\**\s*[:：]\s*(?P<rest>[^\n]+)", re.I),  # 'Answer: 42' lines
    re.compile(r"\banswer\s*(?P<rest>" + _MATH + r")", re.I | re.S),  # 'Answer $ 9 $', 'Answer \[ 9 \]'
    re.compile(r"(?:答案|最终答案)\s*(?:是|为|:|：)\s*(?P<rest>[^\n。]+)"),
    re.compile(r"####\s*(?P<rest>[^\n]+)"),
]
_BOLD_LAST = re.compile(r"\*\*(?P<x>[^*\n]{1,80})\*\*\s*\.?\s*$")
_DISPLAY_LAST = re.compile(r"(?:\\\[(?P<b>.+?)\\\]|\$\$(?P<dd>.+?)\$\$)\s*\.?\s*$", re.S)
_TRAILER = re.compile(r"\.?\s*(?:I hope it is correct\.?)?\s*$", re.I)


def _box_spans(text: str) -> list[tuple[int, int, str | None]]:
    """(start, end, content) of every box; content None when the box never closes."""
    spans = []
    for m in _BOX.finditer(text):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        spans.append((m.start(), j + 1, text[i + 1 : j].strip()))
                        break
            else:
                spans.append((m.start(), len(text), None))
        else:
            tail = re.match(r"([^\s$]+)", text[i:])  # brace-less \boxed 5: up to whitespace or $
            spans.append((m.start(), i + (tail.end() if tail else 0), tail.group(1) if tail else None))
    return [s for k, s in enumerate(spans) if k == 0 or s[0] >= spans[k - 1][1]]  # boxes inside boxes: outer


def _boxed_answer(text: str) -> str | None:
    spans = _box_spans(text)
    last = spans[-1]
    if last[2] is None:
        return None  # unclosed last box: no answer
    group = [last]
    for prev in reversed(spans[:-1]):  # earlier boxes joined to the last one by separators only
        if prev[2] is None or not _JOINER.match(text[prev[1] : group[0][0]]):
            break
        group.insert(0, prev)
    return ", ".join(s[2] for s in group) if len(group) > 1 else last[2]


def _strip_math(ans: str) -> str:
    """'$X$' / '\\(X\\)' / '\\[X\\]' -> X; the MATH trailer and a final period removed."""
    ans = _TRAILER.sub("", ans.strip().strip("*").strip()).strip()
    m = re.match(r"^" + _MATH, ans, re.S)
    if m and m.end() >= len(ans.rstrip(". ")):
        ans = next(g for g in m.groupdict().values() if g is not None)
    return ans.strip().rstrip(".").strip().strip("$").strip()


def _last_match(pattern: re.Pattern, text: str) -> re.Match | None:
    """The match that starts last, overlaps allowed ('Final Answer: The final answer is X' gives X)."""
    last, pos = None, 0
    while (m := pattern.search(text, pos)) is not None:
        last, pos = m, m.start() + 1
    return last


def extract_answer(text: str) -> str | None:
    """The final answer of a response by the policy above, or None."""
    text = text[-MAX_TEXT:].replace("\x00", "")
    if _BOX.search(text):
        return _boxed_answer(text)
    best = None
    for pattern in _ANCHORS:
        m = _last_match(pattern, text)
        if m is not None and (best is None or m.start() > best.start()):
            best = m
    if best is not None:
        rest = best.group("rest")
        rest = rest.strip().strip("*")
        if rest.lstrip().startswith(("$", "\\(", "\\[")):
            inner = re.match(r"\s*" + _MATH, rest, re.S)  # the first math span after the anchor
            rest = next(g for g in inner.groupdict().values() if g is not None) if inner else rest
        ans = _strip_math(rest)
        return ans or None
    tail = text.rstrip()
    for pattern in (_BOLD_LAST, _DISPLAY_LAST):
        m = pattern.search(tail)
        if m:
            ans = next(g for g in m.groupdict().values() if g is not None).strip().strip("$").strip()
            return ans or None
    return None
