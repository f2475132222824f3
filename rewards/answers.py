"""Reading a response the way its author meant it, before the answer is looked for (``rewards.extract``).

* **Thinking is working, not the answer.** A reasoning model thinks inside a block (``<think>...</think>``,
  ``<thinking>``, ``<reasoning>``, ``<thought>``, ``<|begin_of_thought|>...<|end_of_thought|>``, Kimi's
  ``◁think▷...◁/think▷``) and answers after it. When text follows the last closing marker, only that text is
  read: a ``\\boxed{8}`` guessed while thinking never outweighs the ``**Final answer: 9**`` written after it.
  A closing marker without an opening one counts too (chat templates put ``<think>`` in the prompt, so the
  response begins inside the block). When nothing follows the block (an unclosed ``<think>``, a response cut
  off while thinking, or one that closes its thinking and stops), the thinking is all the author wrote and
  is read as the response, by the same rules as any other.
* **A tagged answer is the answer.** ``<answer>X</answer>`` (the GRPO tutorial format) and
  ``<|begin_of_solution|>...<|end_of_solution|>`` narrow the text to the last such block.
* **A response that is one math span** (``$k = \\frac{1}{3}$``) is its own answer; when it is one equation
  with a name on the left and a value on the right, the value (an equation between names, the line
  ``y = 2x + 1``, stays whole: its names are the answer).
* **A final-answer sentence gives its value**: "The volume of $ABCDEFGH$ is 120." gives 120, the text after
  the last "is" / "are" / "equals" / "=" outside math, when words come before it.

Every step is a bounded regex scan or a single search: linear in the text.
"""

from __future__ import annotations

import re
from collections import deque

_THINK_OPEN = re.compile(r"<think(?:ing)?>|<reasoning>|<thought>|<\|begin_of_thought\|>|◁think▷", re.I)
_THINK_CLOSE = re.compile(r"</think(?:ing)?>|</reasoning>|</thought>|<\|end_of_thought\|>|◁/think▷", re.I)
_SPECIAL = re.compile(r"<\|[a-z_]{1,30}\|>|</?s>|<\|?(?:eot_id|endoftext|im_end)\|?>", re.I)  # end-of-turn tokens
_HAS_CONTENT = re.compile(r"[0-9A-Za-z\u00c0-\U0010ffff]")


def _last_match(pattern: re.Pattern, text: str) -> re.Match | None:
    """The last match of ``pattern`` in one pass."""
    found = deque(pattern.finditer(text), maxlen=1)
    return found[0] if found else None


def after_thinking(text: str) -> str:
    """The text after the last closing thinking marker when something follows it; else the whole text with its
    opening marker removed (nothing was written after the thinking, so the thinking is what there is)."""
    last = _last_match(_THINK_CLOSE, text)
    if last is not None:
        rest = text[last.end() :]
        if _HAS_CONTENT.search(_SPECIAL.sub("", rest)):
            return rest
        text = text[: last.start()]
    if m := _THINK_OPEN.search(text):
        text = text[m.end() :]
    return text


def tagged_answer(text: str) -> tuple[str, bool]:
    """(text to read, whether it is the content of an ``<answer>`` tag); the last solution block narrows it."""
    lower = text.lower()  # found from the end with rfind: linear, whatever the repetition
    if (close := lower.rfind("</answer>")) >= 0 and (start := lower.rfind("<answer>", 0, close)) >= 0:
        if inner := text[start + len("<answer>") : close].strip():
            return inner, True
    if (start := text.rfind("<|begin_of_solution|>")) >= 0:
        end = text.find("<|end_of_solution|>", start)
        inner = text[start + len("<|begin_of_solution|>") : end if end >= 0 else len(text)]
        if inner.strip():
            return inner, False
    return text, False


_ONE_SPAN = re.compile(
    r"\s*(?:\$\$(?P<dd>[^$]+)\$\$|\$(?P<d>[^$]+)\$|\\\[(?P<b>.+?)\\\]|\\\((?P<p>.+?)\\\))\s*\.?\s*", re.S
)
_NAMED_EQUATION = re.compile(r"\s*\\?[a-zA-Z]+(?:_\{?\w+\}?)?\s*=(?P<rhs>[^=]+)")
_COMMAND, _LETTER = re.compile(r"\\[a-zA-Z]+"), re.compile(r"[a-zA-Z]")
MAX_ONE_SPAN = 2_000  # characters: a response that is a single math span is short


def one_span(text: str) -> str | None:
    """The content of a response that is a single math span (the right side of ``name = value``), else None."""
    if len(text) > MAX_ONE_SPAN or not (m := _ONE_SPAN.fullmatch(text)):
        return None
    body = next(g for g in m.groupdict().values() if g is not None).strip()
    if (eq := _NAMED_EQUATION.fullmatch(body)) and not _LETTER.search(_COMMAND.sub("", eq.group("rhs"))):
        body = eq.group("rhs").strip()  # a value; 'y = -\\frac{1}{2}x + 3' is a line and stays whole
    return body if _HAS_CONTENT.search(body) else None


_INLINE_MATH = re.compile(r"\$[^$\n]*\$|\\\(.*?\\\)")
_COPULA = re.compile(r"\s(?:is|are|was|equals|=)\s+(?!not\b)", re.I)
_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")


def sentence_value(ans: str) -> str:
    """'The volume of $ABCDEFGH$ is 120' -> '120', '$AB$ is $5$' -> '$5$': the text after the last copula
    outside math, when a word (two letters or more) or a math span comes before it. Else unchanged."""
    masked = _INLINE_MATH.sub(lambda m: "\x00" * len(m.group()), ans)  # copulas inside math are not sentences
    last = _last_match(_COPULA, masked)
    if last is None or not (_WORD.search(masked[: last.start()]) or "\x00" in masked[: last.start()]):
        return ans
    value = ans[last.end() :].strip()
    return value if _HAS_CONTENT.search(value) else ans
