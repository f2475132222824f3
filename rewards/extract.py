"""Final-answer extraction from a whole response: our policy, in order.

0. The text the author meant as the answer (``rewards.answers``): after the thinking block when text follows
   it, inside the last ``<answer>`` tag or solution block.
1. The last ``\\boxed{}`` / ``\\fbox{}`` (nested braces, ``\\boxed 5``). Boxes that end the response together,
   separated only by commas, "and", ``\\quad`` or math delimiters (``\\boxed{1}, \\boxed{2}``), are one list
   answer; an unclosed or empty last box is no answer. An answer statement after the last box wins over it
   (below: two final answers).
2. The last answer anchor that holds an answer: "final answer is X" (the MATH few-shot ending "Final Answer:
   The final answer is $X$. I hope it is correct." gives X), "the answer is", "Answer: X" / "answer:" lines
   (markdown ``**Answer:** 12``, ``**Final Answer:**`` and a "Final Answer" heading with the answer on the
   next line included), "Answer $X$" / "Answer \\[X\\]", 答案是 / 答案为, GSM8K "#### X". After the anchor:
   filler words are skipped ("the answer is indeed $5$"), the first math span is the answer when one opens
   it, and plain text ends at its sentence or at a reason ("12 since 3 times 4 is 12" gives 12). An anchor
   that holds a verdict instead of an answer ("Yes, the answer is correct.") is passed over for the one
   before it. A final-answer sentence gives its value ("Final Answer: The volume of $V$ is 120." gives 120),
   and math spans joined by "and" or commas are one answer ("is $12$ and $13$").
3. A response that is one math span (``$k = \\frac{1}{3}$`` gives ``\\frac{1}{3}``), the content of an
   ``<answer>`` tag, a bold final answer ``**73**`` on the last line, or a display-math block that ends it.

Two final answers: **the last one stated wins**. An answer statement (step 2) written after the last box
replaces the box ("... = \\boxed{255} ... Final Answer: The final answer is $10,455$." gives 10,455):
Minerva-style solutions box intermediate results, and a model that revises itself states its revision last.
A statement after the box that is not a value (words without a digit, math or a choice letter: "the answer
is the number of ways", "checking the answer is necessary") does not replace it. Within one answer, two
values are a hedge and graded wrong (``rewards.math``).

It never guesses the last number of free text: a response without an answer gets no reward, and an empty
answer (``\\boxed{}``, "The answer is:") is no answer.

Cost: every step is one left-to-right pass over the text (brace matching with a stack, anchors found by
bounded patterns and read from a bounded window), so any response up to ``MAX_TEXT`` is extracted in
linear time; a response stuck in a repetition loop (``\\boxed{`` x 100,000) costs milliseconds, not minutes.
"""

from __future__ import annotations

import re

from rewards.answers import after_thinking, one_span, sentence_value, tagged_answer

MAX_TEXT = 200_000  # characters of a response looked at (its tail: answers come last)
WINDOW = 2_000  # characters read after an anchor
MAX_TRIES = 64  # anchors (latest first) tried for an answer
MAX_JOINED = 64  # boxes joined into one list answer

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_BOX_TOKEN = re.compile(_BOX_COMMAND.pattern + r"|[{}]")
_BRACELESS = re.compile(r"[ \t]{0,20}([^\s${][^\s$]{0,99})")  # \boxed 5: up to whitespace or $
_JOINER = re.compile(
    r"^(?:\s|,|;|\$|\\\(|\\\)|\\\[|\\\]|\\quad|\\qquad|\\,|\\;|and|or|&|\\text\{\s*(?:and|or|,)\s*\})*$"
)
# display math may span lines; inline math may not, and an escaped \$ is no delimiter
_MATH = r"(?:\$\$(?P<dd>.+?)\$\$|(?<!\\)\$(?P<d>(?:[^$\n\\]|\\.)+?)\$|\\\[(?P<b>.+?)\\\]|\\\((?P<p>[^\n]+?)\\\))"
_MATH_START = re.compile(r"\s*" + _MATH, re.S)
# anchors: (pattern, the answer may start on a later line)
_ANCHORS = [
    (re.compile(r"(?:final\s{1,5}answer|the\s{1,5}answer)\s{0,5}\**\s{0,5}(?:is\b|:|=|：)(?:\s{0,5}:)?", re.I), False),
    (re.compile(r"(?:^|\n)[ \t]{0,20}[#>*]{0,6}[ \t]{0,5}answer[ \t]{0,5}\**[ \t]{0,5}[:：]", re.I), False),
    (re.compile(r"\banswer\s{0,5}(?=\$|\\\[|\\\()", re.I), False),  # 'Answer $ 9 $', 'Answer \[ 9 \]'
    (re.compile(r"(?:答案|最终答案)\s{0,5}(?:是|为|:|：)"), False),
    (re.compile(r"####"), False),
    (re.compile(r"(?:^|\n)[ \t]{0,9}[#*]{0,6}[ \t]{0,5}final\s{1,5}answer[ \t]{0,5}[*:：]{0,4}[ \t]{0,9}(?=\n)", re.I),
     True),  # a 'Final Answer' heading, the answer on a later line
]  # fmt: skip
_FILLER = re.compile(
    r"^(?:(?:indeed|simply|just|exactly|precisely|therefore|thus|then|now|clearly|obviously|actually|finally|"
    r"equal\s+to|given\s+by|as\s+follows|that|:)[\s,:]*)+",
    re.I,
)
_SENTENCE_END = re.compile(
    r"\.(?=\s|$)|[;!?](?=\s|$)|。|,?\s+(?:since|because|as|which|so|given|where|when|from|due|after|with|"
    r"and\s+(?:this|that|it|the|we|so))\b",
    re.I,
)
_VERDICT = re.compile(
    r"^(?:correct|incorrect|right|wrong|not|that|this|as|below|above|shown|given|clear|obvious|in|to|of|"
    r"the\s+following|therefore|thus|hence|because|since)\b",
    re.I,
)
_HAS_CONTENT = re.compile(r"[0-9A-Za-z\u00c0-\U0010ffff]|\\[a-zA-Z]")
_MORE_MATH = re.compile(r"[ \t]{0,5}(?:,|and|or)[ \t]{0,5}(?:\$|\\\()")  # '$12$ and $13$': one answer
_INLINE = re.compile(_MATH)
_QUOTE_OPEN, _QUOTE_CLOSE = re.compile(r'^\\?["“][ \t]*'), re.compile(r'[ \t]*\\?["”]$')  # 'is "$12$"'
_COPULA_NEXT = re.compile(r"[ \t]{1,5}(?:is|are|equals)\s", re.I)
_VALUE = re.compile(r"\d|\\[a-zA-Z]|\$")
_LETTER_CHOICE = re.compile(r"\(?[A-Ea-e]\)?")
_TRAILER = re.compile(r"\.?\s*(?:I hope it is correct\.?)?\s*$", re.I)


def _box_spans(text: str) -> list[tuple[int, int, int, int]]:
    """(start, end, content start, content end) of every outermost box, in order, in one pass; content start
    -1 when the box never closes. Braces are matched with a stack, so nesting and unclosed boxes cost the same
    as any other character."""
    spans: list[tuple[int, int, int, int]] = []
    stack: list[tuple[int, int]] = []  # per open brace: (start of its box or -1 for a plain brace, content start)
    pending, pending_end = -1, 0  # a box command waiting for its opening brace
    for m in _BOX_TOKEN.finditer(text):
        tok = m.group()
        if tok == "{":
            opens_box = pending >= 0 and not text[pending_end : m.start()].strip()
            stack.append((pending if opens_box else -1, m.end()))
            pending = -1
        elif tok == "}":
            pending = -1
            if stack and (frame := stack.pop())[0] >= 0:
                spans.append((frame[0], m.end(), frame[1], m.start()))
        else:
            pending, pending_end = m.start(), m.end()
            if nxt := _BRACELESS.match(text, m.end()):  # \boxed 5
                spans.append((m.start(), nxt.end(), nxt.start(1), nxt.end()))
                pending = -1
    spans.extend((start, len(text), -1, -1) for start, _ in stack if start >= 0)  # unclosed boxes
    spans.sort()
    outer: list[tuple[int, int, int, int]] = []
    for span in spans:  # boxes inside boxes: the outer one
        if not outer or span[0] >= outer[-1][1]:
            outer.append(span)
    return outer


def _boxed_answer(text: str, spans: list[tuple[int, int, int, int]]) -> str | None:
    if not spans or spans[-1][2] < 0:
        return None  # unclosed last box: no answer
    group = [spans[-1]]
    for prev in reversed(spans[:-1][-MAX_JOINED:]):  # earlier boxes joined to the last one by separators only
        gap = text[prev[1] : group[0][0]]
        if prev[2] < 0 or len(gap) > 200 or not _JOINER.match(gap):
            break
        group.insert(0, prev)
    contents = [text[s[2] : s[3]].strip() for s in group]
    if not all(contents):
        return None  # an empty box is no answer
    if len(set(contents)) == 1:
        return contents[0]  # the answer boxed twice ('\\boxed{5}, \\boxed{5}') is one answer, not a list
    return ", ".join(contents)


def _math_content(m: re.Match) -> str:
    return next(g for g in m.groupdict().values() if g is not None)


def _strip_math(ans: str) -> str:
    """'$X$' / '\\(X\\)' / '\\[X\\]' -> X; the MATH trailer and a final period removed."""
    ans = _TRAILER.sub("", ans.strip().strip("*").strip()).strip()
    m = re.match(r"^" + _MATH, ans, re.S)
    if m and m.end() >= len(ans.rstrip(". ")):
        ans = _math_content(m)
    return ans.strip().rstrip(".").strip().strip("$").strip()


def _after_anchor(window: str, next_line: bool) -> str | None:
    """The answer that follows an anchor, read from a bounded window of text; None when there is none."""
    rest = window.lstrip(" \t*:：") if not next_line else window.lstrip()
    rest = _QUOTE_OPEN.sub("", _FILLER.sub("", rest).lstrip(" \t*"))
    math = _MATH_START.match(rest) if rest.startswith(("$", "\\(", "\\[")) else None
    if math and not _COPULA_NEXT.match(rest, math.end()) and not _MORE_MATH.match(rest, math.end()):
        ans = _math_content(math)  # the first math span after the anchor
    else:  # plain text, a sentence that opens with math ('$AB$ is $5$'): its value; '$12$ and $13$': both
        line = rest.split("\n", 1)[0]
        ans = sentence_value(_SENTENCE_END.split(line, maxsplit=1)[0])
        ans = _INLINE.sub(lambda m: _math_content(m), ans) if math else ans
    ans = _strip_math(_QUOTE_CLOSE.sub("", ans.strip()).strip("*"))
    if not ans or not _HAS_CONTENT.search(ans) or _VERDICT.match(ans):
        return None  # "The answer is:", "the answer is correct"
    return ans


def _anchored_answer(text: str) -> str | None:
    heads = sorted(
        ((m.start(), m.end(), next_line) for pattern, next_line in _ANCHORS for m in pattern.finditer(text)),
        reverse=True,
    )
    for _, end, next_line in heads[:MAX_TRIES]:  # the latest anchor that holds an answer
        if (ans := _after_anchor(text[end : end + WINDOW], next_line)) is not None:
            return ans
    return None


def _final_block(text: str) -> str | None:
    """A bold ``**73**`` or a display block (``\\[...\\]``, ``$$...$$``) that ends the response."""
    tail = text.rstrip()
    tail = tail[:-1].rstrip() if tail.endswith(".") else tail
    tail = tail[-WINDOW:]
    if m := re.search(r"\*\*([^*\n]{1,80})\*\*$", tail):
        return m.group(1).strip().strip("$").strip() or None
    for open_, close in (("\\[", "\\]"), ("$$", "$$")):
        if tail.endswith(close):
            i = tail.rfind(open_, 0, len(tail) - len(close))
            if i >= 0:
                ans = tail[i + len(open_) : len(tail) - len(close)].strip().strip("$").strip()
                return ans or None
    return None


def _is_value(ans: str) -> bool:
    """An answer that can replace a box: it has a digit or math, or is a choice letter ('B', '(b)'). Words
    alone do not: 'checking the answer is necessary' follows a box and names no answer."""
    return bool(_VALUE.search(ans) or _LETTER_CHOICE.fullmatch(ans))


def extract_answer(text: str) -> str | None:
    """The final answer of a response by the policy above, or None. Linear in the length of the text."""
    text, tagged = tagged_answer(after_thinking(text[-MAX_TEXT:].replace("\x00", "")))
    if _BOX_COMMAND.search(text):
        spans = _box_spans(text)
        later = _anchored_answer(text[spans[-1][1] :]) if spans else None
        return later if later is not None and _is_value(later) else _boxed_answer(text, spans)
    ans = _anchored_answer(text)
    if ans is not None:
        return ans
    ans = one_span(text) or (sentence_value(_strip_math(text)) if tagged else None) or _final_block(text)
    return ans if ans and _HAS_CONTENT.search(ans) else None
