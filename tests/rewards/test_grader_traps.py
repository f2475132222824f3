"""Issue #22: a grader that never calls a wrong answer right. False-positive traps by category (equal and not
equal, from the mathematics: tests/support/grader_traps.py), extraction anchors and empty answers, extraction in
linear time, a pool that survives dead workers and stops on workers that never start, and a Math-Verify that
is unchanged for every other caller."""

import time

import pytest
from support.grader_traps import TRAPS

from rewards.extract import MAX_TEXT, extract_answer
from rewards.math import grade, is_equivalent
from rewards.pool import GraderPool, GraderWorkersFailed

CASES = [(cat, p, g, e) for cat, rows in TRAPS.items() for p, g, e in rows]


@pytest.mark.parametrize("category, pred, gold, equal", CASES)
def test_traps(category, pred, gold, equal):
    assert is_equivalent(pred, gold) == bool(equal), (category, pred, gold)


@pytest.mark.parametrize("category, pred, gold, equal", [c for c in CASES if not c[3] and c[1] and c[2]])
def test_traps_are_not_equal_either_way_round(category, pred, gold, equal):
    """A wrong answer stays wrong with the sides swapped (hedges excepted: a list gold may hold the value)."""
    if category != "hedges":
        assert not is_equivalent(gold, pred), (category, gold, pred)


EXTRACTION = [
    ("The answer is \\boxed{}", None),  # an empty box is no answer (and earns no format bonus)
    ("\\boxed{ }", None),
    ("The answer is:", None),
    ("The answer is: $ $", None),
    ("The final answer is", None),
    ("the answer is indeed $5$", "5"),
    ("So the answer is simply 8.", "8"),
    ("The answer is therefore $\\frac{1}{2}$.", "\\frac{1}{2}"),
    ("The answer is 7. Yes, the answer is correct.", "7"),
    ("The answer is 7. I checked: the answer is right.", "7"),
    ("The answer is 12 since 3 times 4 is 12.", "12"),
    ("The answer is 12, because 3 times 4 is 12.", "12"),
    ("The answer is $12$ because $3 \\cdot 4 = 12$.", "12"),
    ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
    ("Final Answer: The final answer is $1,234$. I hope it is correct.", "1,234"),
    ("Final Answer: The final answer is 1,234. I hope it is correct.", "1,234"),
    ("Final Answer: The final answer is 3.5. I hope it is correct.", "3.5"),
    ("Answer: **12**", "12"),
    ("**Answer:** $12$", "12"),
    ("**Final Answer:** 12", "12"),
    ("**Final Answer:** $\\frac{1}{2}$", "\\frac{1}{2}"),
    ("**Final Answer**\n\n12", "12"),
    ("## Final Answer\n\\[ x = 3 \\]", "x = 3"),
    ("#### 1,000", "1,000"),
    ("\\boxed{\\boxed{5}}", "\\boxed{5}"),
    ("\\boxed{a \\boxed{b}", None),  # the outer box never closes
    ("\\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
]


@pytest.mark.parametrize("text, expected", EXTRACTION)
def test_extraction(text, expected):
    assert extract_answer(text) == expected


def test_an_empty_answer_earns_nothing():
    assert grade("The answer is \\boxed{}", "") == (False, None)
    assert grade("The answer is:", "") == (False, None)


PATHOLOGICAL = {
    "repeated \\boxed{": "\\boxed{" * (MAX_TEXT // 7),
    "nested boxes": "\\boxed{" * (MAX_TEXT // 14) + "}" * (MAX_TEXT // 14),
    "repeated braces": "{" * MAX_TEXT,
    "repeated anchors": "the answer is " * (MAX_TEXT // 14),
    "repeated Answer: lines": "\nAnswer:" * (MAX_TEXT // 8),
    "repeated ####": "#" * MAX_TEXT,
    "repeated $": "$" * MAX_TEXT,
    "repeated \\[": "\\[" * (MAX_TEXT // 2),
    "joined boxes": "\\boxed{1}, " * (MAX_TEXT // 11),
    "spaces after an anchor": "the answer" + " " * MAX_TEXT,
    "repeated \\boxed": "\\boxed" * (MAX_TEXT // 6),
}


@pytest.mark.parametrize("name", PATHOLOGICAL)
def test_extraction_is_linear_time(name):
    """Responses stuck in a repetition loop, at the size cap: a linear pass takes milliseconds; 2 s of CPU is a
    bound a quadratic one (150 s measured) cannot meet and a loaded machine cannot miss (CPU time, not wall)."""
    t = time.process_time()
    extract_answer(PATHOLOGICAL[name])
    assert time.process_time() - t < 2.0


def test_math_verify_is_unchanged_for_other_callers():
    """Our patches hold only inside our own calls: Math-Verify's parse gives the same before and after."""
    import latex2sympy2_extended.latex2sympy2 as l2s
    import math_verify.parser as mv_parser
    from math_verify import parse

    texts = ["$1+x$", "$0.1$", "x = 2", "\\boxed{\\frac{1}{2}}", "$123456789.123456789$"]
    names = (l2s.Number, l2s.parse_expr, mv_parser.parse_expr, mv_parser.parse_expr_cached)
    before = [str(parse(t)) for t in texts]
    assert is_equivalent("0.5", "\\frac{1}{2}") and is_equivalent("x^2+2x+1", "(x+1)^2")
    assert [str(parse(t)) for t in texts] == before
    assert (l2s.Number, l2s.parse_expr, mv_parser.parse_expr, mv_parser.parse_expr_cached) == names


def test_a_renamed_library_name_fails_loudly(monkeypatch):
    import rewards.verify as verify

    renamed = ("math_verify.parser", None, "no_such_name", "_refuse")
    monkeypatch.setattr(verify, "_PATCHES", (*verify._PATCHES, renamed))
    verify._library.cache_clear()
    try:
        with pytest.raises(ImportError, match="no_such_name"):
            verify._library()
    finally:
        monkeypatch.undo()
        verify._library.cache_clear()
        verify._library()


def _dies_at_start(pred, gold, timeout):  # pragma: no cover - runs in a grading worker
    import os

    os._exit(3)


def test_workers_that_always_die_at_start_raise_a_clear_error():
    pool = GraderPool(workers=1, timeout=1.0, check_fn=_dies_at_start)
    try:
        with pytest.raises(GraderWorkersFailed, match="died before they were ready"):
            pool.grade(["\\boxed{x+1}"], ["1+x"])
    finally:
        pool.close()


def test_a_worker_that_dies_while_idle_is_replaced():
    pool = GraderPool(workers=1, timeout=2.0)
    try:
        assert pool.grade(["\\boxed{x+1}"], ["1+x"])[0].correct
        first = pool.procs[0]
        first.kill()
        first.join(timeout=30)
        assert not first.is_alive()
        assert pool.grade(["\\boxed{x^2-1}"], ["(x-1)(x+1)"])[0].correct  # no BrokenPipeError, a fresh worker
        assert pool.procs[0].pid != first.pid
    finally:
        pool.close()
