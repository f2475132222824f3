"""The grader: extraction, an equivalence table by category (equal and not equal), hostile inputs."""

import time

import pytest

from rewards.math import extract_answer, is_equivalent
from rewards.pool import GraderPool

EXTRACTION = [
    ("so the answer is \\boxed{5}.", "5"),
    ("\\boxed{\\frac{1}{2}} and then \\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),  # last box, nested
    ("We get $\\boxed 7$", "7"),
    ("\\fbox{42}", "42"),
    ("The final answer is 12.", "12"),
    ("Therefore, the answer is: $x = 3$", "x = 3"),
    ("48/2 = 24\n#### 72", "72"),
    ("\\boxed{3} then \\boxed{1 + 2", None),  # the last box is unclosed
    ("I think it is 17", None),  # no guessing of the last number
    ("", None),
]


@pytest.mark.parametrize("text, expected", EXTRACTION)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


EQUAL = [
    ("1,000", "1000"), ("1000 dollars", "1000"), ("\\$1{,}000", "1000"), ("12 \\text{ cm}", "12"),
    ("0.5", "\\frac{1}{2}"), ("1/2", "\\dfrac{1}{2}"), ("\\tfrac12", "0.5"), ("\\frac12", "\\frac{1}{2}"),
    ("50\\%", "50"), ("50\\%", "0.5"), ("2\\sqrt{3}", "\\sqrt{12}"), ("\\frac{\\pi}{2}", "\\pi/2"),
    ("1.5 \\times 10^{3}", "1500"), ("1.5e3", "1500"), ("-3", "- 3"), ("-\\frac{2}{3}", "\\frac{-2}{3}"),
    ("(1, 2)", "\\left( 1, 2 \\right)"), ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
    ("[1, 3)", "[1,3)"), ("(-\\infty, 0) \\cup (1, \\infty)", "(-\\infty,0)\\cup(1,\\infty)"),
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}"), ("x = 5", "5"), ("5", "x=5"), ("y = 2x + 1", "2x - y + 1 = 0"),
    ("x^2 + 2x + 1", "(x+1)^2"), ("\\sin^2 x + \\cos^2 x", "1"),
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}"),
    ("90^\\circ", "90"), ("90°", "90"), ("(B)", "B"), ("\\text{(C)}", "C"), ("\\text{Monday}", "monday"),
    ("\\infty", "\\infty"), ("1 \\pm \\sqrt{2}", "1+\\sqrt{2}, 1-\\sqrt{2}"), ("3, 1", "1, 3"),
    ("\\sqrt[3]{8}", "2"), ("5!", "120"), ("2^{10}", "1024"),
]  # fmt: skip

NOT_EQUAL = [
    ("0.33", "\\frac{1}{3}"), ("1+1/e", "1-1/e"), ("(1, 2)", "(2, 1)"), ("[1, 3)", "(1, 3)"),
    ("\\{1, 2\\}", "\\{1, 2, 3\\}"), ("x^2 + 1", "(x+1)^2"), ("A", "B"), ("5", "-5"), ("1000", "100"),
    ("\\sqrt{2}", "1.414"), ("-\\infty", "\\infty"), ("\\text{Tuesday}", "monday"), ("y = 2x", "y = 3x"),
    ("x", "y"), ("", "5"), ("2", "\\begin{pmatrix} 2 \\end{pmatrix}"),
]  # fmt: skip


@pytest.mark.parametrize("pred, gold", EQUAL)
def test_equal_forms(pred, gold):
    assert is_equivalent(pred, gold), (pred, gold)


@pytest.mark.parametrize("pred, gold", NOT_EQUAL)
def test_near_misses_are_not_equal(pred, gold):
    assert not is_equivalent(pred, gold), (pred, gold)


HOSTILE = [
    "__import__('os').system('touch /tmp/groupwise_pwned')",
    "\\boxed{__import__('os').system('touch /tmp/groupwise_pwned')}",
    "exec('import os')",
    "9^{9^{9^{9^{9}}}}",
    "10^{10^{10^{10}}}!",
    "(" * 5000 + "1" + ")" * 5000,
    "\\frac{" * 3000 + "1" + "}{2}" * 3000,
    "1" * 1_000_000,
    "x\x00y",
    "１２３",  # full-width digits (NFKC makes them 123, not 5)
    "lambda: 0",
    "\\sqrt{" * 2000,
]


@pytest.fixture(scope="module")
def pool():
    p = GraderPool(workers=2, timeout=2.0)
    yield p
    p.close()


def test_hostile_inputs_return_false_quickly_and_execute_nothing(pool, tmp_path):
    texts = [f"The answer is \\boxed{{{h}}}" for h in HOSTILE] + HOSTILE
    golds = ["5"] * len(texts)
    t0 = time.monotonic()
    grades = pool.grade(texts, golds)
    assert time.monotonic() - t0 < 30
    assert not any(g.correct for g in grades)
    import os

    assert not os.path.exists("/tmp/groupwise_pwned")


def test_look_alike_digits_are_normalized(pool):
    assert [g.correct for g in pool.grade(["\\boxed{１２３}", "\\boxed{𝟓}"], ["123", "5"])] == [True, True]


def test_timeout_kills_the_worker_and_counts(monkeypatch):
    slow = GraderPool(workers=1, timeout=0.5)
    try:
        # a check that cannot finish within 0.5 s: the worker is killed, the grade is False and counted
        grades = slow.grade(["\\boxed{9^{9^{9^{9}}} - 9^{9^{9^{9}}} + x^{1000} (x+1)^{999}}"] * 2, ["0", "0"])
        assert [g.correct for g in grades] == [False, False]
        assert all(g.timed_out or not g.correct for g in grades)
        # the pool still works after a kill
        assert slow.grade(["\\boxed{x^2+2x+1}"], ["(x+1)^2"])[0].correct
    finally:
        slow.close()


def test_pool_matches_in_process_grading(pool):
    texts = [f"\\boxed{{{p}}}" for p, _ in EQUAL[:12] + NOT_EQUAL[:6]]
    golds = [g for _, g in EQUAL[:12] + NOT_EQUAL[:6]]
    assert [g.correct for g in pool.grade(texts, golds)] == [True] * 12 + [False] * 6


def test_a_grading_function_that_raises_costs_one_sample_and_is_counted(pool, monkeypatch):
    import rewards.pool as pool_module

    def broken(pred, gold):
        if pred == "13":
            raise RuntimeError("bug in a grading rule")
        return pred == gold

    monkeypatch.setattr(pool_module, "_fast_path", broken)
    grades = pool.grade(["\\boxed{13}", "\\boxed{12}"], ["13", "12"])
    assert [(g.correct, g.error) for g in grades] == [(False, True), (True, False)]
