"""The toy reasoning task: multi-operand sums whose worked solutions need intermediate steps.

A problem is ``23+45+17``; its minimal worked solution adds one operand per line and boxes the result::

    23+45=68
    68+17=85
    \\boxed{85}

A ~1M-parameter model cannot add three two-digit numbers in one shot, but it can copy-and-add one pair per
line, so the intermediate lines are what make it right. Solutions in the SFT data also carry a controllable
number of *redundant* lines (re-checks of a step, restatements of a partial sum) that never change the
answer: they make solution length vary, so a length-aware reward has something to cut without costing
accuracy, like the verbose reasoning of real models.

The *shortcut* variant adds what real reasoners have and the plain task lacks: a short answer that is
possible and tempting but less accurate. A share of the SFT solutions skip every line (``\\boxed{85}``
alone); the model learns to answer that way sometimes, and being unable to add in one shot it is mostly
wrong when it does. Problems there also mix 2 to ``operands`` numbers, so some are easy and some are hard
(groups of mostly wrong answers exist), which is where a penalty on incorrect answers has groups to act on.
"""

from __future__ import annotations

import hashlib
import random

from rollout.data import Example, sum_operands

REDUNDANT = ("check {a}+{b}={c}", "so far {c}", "{c} is right")


def problem(nums: list[int]) -> str:
    return "+".join(map(str, nums))


def worked_solution(nums: list[int], redundant: int, rng: random.Random, merge: float = 0.0) -> str:
    """Correct step-by-step lines with ``redundant`` extra lines inserted after random steps. With ``merge`` > 0
    each addition but the last joins the next one on the same line with that probability (``23+45+17=85``): less
    work written, and a small model that imitates it is mostly wrong (it cannot add three numbers in one shot)."""
    lines, steps = [], []
    acc, terms = nums[0], [nums[0]]
    for i, x in enumerate(nums[1:], 2):
        before = terms[0]  # the line's running sum so far
        terms.append(x)
        acc += x
        if merge and i < len(nums) and rng.random() < merge:  # no draw at merge=0: older tasks stay as they were
            continue
        lines.append("+".join(map(str, terms)) + f"={acc}")
        steps.append((len(lines), before, acc - before, acc))
        terms = [acc]
    for _ in range(redundant):  # insert after a random step, restating that step's numbers
        pos, a, b, c = rng.choice(steps)
        lines.insert(pos, rng.choice(REDUNDANT).format(a=a, b=b, c=c))
        steps = [(p + (p >= pos), *rest) for p, *rest in steps]
    return "\n".join(lines) + f"\n\\boxed{{{acc}}}"


def shortcut_solution(nums: list[int]) -> str:
    """The answer without any line of work: right in the data, mostly wrong when a small model imitates it."""
    return f"\\boxed{{{sum(nums)}}}"


def toy_problems(
    n: int,
    operands: int = 3,
    max_value: int = 99,
    seed: int = 0,
    split: str = "train",
    min_operands: int | None = None,
) -> list[Example]:
    """``n`` problems of ``operands`` numbers in [10, max_value] (of ``min_operands`` to ``operands`` numbers,
    uniformly, when ``min_operands`` is given). Splits are disjoint: a hash of the problem text puts one in
    eight into ``test``, so held-out accuracy is measured on unseen problems (a hash, not a property such as the
    parity of the sum, which a model would learn as a shortcut)."""
    low = 10 if max_value >= 10 else 0
    draws = sum_operands(random.Random(f"{seed}/{split}"), operands, max_value, low, min_operands)
    rows = []
    while len(rows) < n:
        nums = next(draws)
        if _is_test(problem(nums)) != (split == "test"):
            continue
        rows.append(Example(f"toy/{split}/{seed}/{len(rows)}", problem(nums), str(sum(nums))))
    return rows


def _is_test(text: str) -> bool:
    return hashlib.blake2b(text.encode(), digest_size=2).digest()[0] % 8 == 0


def sft_pairs(
    n: int,
    operands: int,
    max_value: int,
    max_redundant: int,
    seed: int,
    *,
    shortcut: float = 0.0,
    min_operands: int | None = None,
    merge: float = 0.0,
) -> list[tuple[str, str]]:
    """(problem, solution) pairs for supervised fine-tuning: redundancy uniform in [0, max_redundant], a
    ``shortcut`` share of solutions that are the bare boxed answer, and additions merged into one line with
    probability ``merge`` (``worked_solution``)."""
    rng = random.Random(f"{seed}/sft")
    out = []
    for ex in toy_problems(n, operands, max_value, seed, "train", min_operands):
        nums = [int(x) for x in ex.problem.split("+")]
        if shortcut and rng.random() < shortcut:
            out.append((ex.problem, shortcut_solution(nums)))
        else:
            out.append((ex.problem, worked_solution(nums, rng.randint(0, max_redundant), rng, merge)))
    return out
