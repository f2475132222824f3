"""The grader: extraction, an equivalence table by category (equal and not equal), hostile inputs."""

import time

import pytest

from rewards.math import extract_answer, hostile, is_equivalent
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
    ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),  # MATH few-shot
    ("So the final answer is $12$.\nI hope it is correct.", "12"),
    ("Answer $ 9 $", "9"),
    ("Answer \\[ 9 \\]", "9"),
    ("Answer \\( (9+1) \\)", "(9+1)"),
    ("Answer $ \\frac{1}{2} \\$ = \\frac{10}{9} $", "\\frac{1}{2} \\$ = \\frac{10}{9}"),  # \$ is not a delimiter
    ("Answer $ \n 9 \n $", None),  # inline math does not cross lines
    ("Answer: 42", "42"),
    ("work...\nanswer: -7\n", "-7"),
    ("**Answer:** 15", "15"),
    ("所以答案是 12", "12"),
    ("最终答案为 3。", "3"),
    ("The total is **73**", "73"),
    ("and so\n\\[ x = 9 \\]", "x = 9"),  # a display block ending the response
    ("$$\\frac{1}{2}$$", "\\frac{1}{2}"),
    ("\\boxed{1}, \\boxed{2} and \\boxed{3}", "1, 2, 3"),  # boxes that end the response together: a list
    ("first \\boxed{1}. Later we find that \\boxed{2}", "2"),  # otherwise the last box wins
    ("is $\\boxed{11,\\! 111}$", "11,\\! 111"),
    ("\\boxed{\\text{(C)}}", "\\text{(C)}"),
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


CATEGORIES = {  # (pred, gold, equal?) per category of the issue, from the mathematics
    "mixed numbers": [
        ("1\\frac{4}{5}", "\\frac{9}{5}", 1),
        ("1\\frac{4}{5}", "1.8", 1),
        ("2\\frac{1}{3}", "\\frac{2}{3}", 0),
        ("-3\\frac{1}{2}", "-\\frac{7}{2}", 1),
        ("1\\frac{4}{5}", "\\frac{4}{5}", 0),
    ],
    "base subscripts": [
        ("52_8", "52_{8}", 1),
        ("1011_2", "1011_{2}", 1),
        ("52_8", "53_{8}", 0),
        ("2012_3", "2012_{3}", 1),
    ],
    "thousands": [
        ("11,\\! 111", "11111", 1),
        ("1,000,000", "1000000", 1),
        ("10,\\!000", "10000", 1),
        ("1,001", "1000", 0),
        ("12,\\! 345", "12346", 0),
    ],
    "units": [
        ("\\mbox{ 24 inches}^2", "24", 1),
        ("24 \\mbox{ inches}^2", "24", 1),
        ("5\\text{ meters}", "5", 1),
        ("5 \\textnormal{ cm}", "5", 1),
        ("7\\text{ cm}^2", "7", 1),
        ("6\\text{ meters}", "5", 0),
        ("\\$18.90", "18.90", 1),
        ("18.9", "\\$18.90", 1),
    ],
    "percent": [
        ("28 %", "28\\%", 1),
        ("28 pct", "28\\%", 1),
        ("28 percent", "28\\%", 1),
        ("28", "28\\%", 1),
        ("0.28", "28\\%", 1),
        ("29\\%", "28\\%", 0),
    ],
    "cfrac/dfrac": [
        ("\\cfrac{1}{3}", "\\frac{1}{3}", 1),
        ("\\dfrac{2}{4}", "\\frac12", 1),
        ("\\cfrac{1}{3}", "\\frac{1}{4}", 0),
    ],
    "boxed inside": [("\\boxed{5}", "5", 1), ("\\boxed{\\frac{1}{2}}", "0.5", 1), ("\\boxed{6}", "5", 0)],
    "relations": [
        ("x \\geq 5", "x >= 5", 1),
        ("x \\ge 5", "x\\geq5", 1),
        ("x > 3", "x \\gt 3", 1),
        ("x \\neq 2", "x != 2", 1),
        ("5 \\geq x", "x \\leq 5", 1),
        ("5 \\leq x", "x \\geq 5", 1),
        ("-x > -1", "x < 1", 1),
        ("x > 5", "x \\geq 5", 0),
        ("x < 5", "x > 5", 0),
        ("x \\leq 4", "x \\leq 5", 0),
    ],
    "intervals": [
        ("x \\in [-2,7]", "[-2,7]", 1),
        ("-2 \\leq x \\leq 7", "[-2,7]", 1),
        ("x \\in [-2, 7]", "-2 \\le x \\le 7", 1),
        ("(-\\infty, 1) \\cup (2, \\infty)", "(2,\\infty)\\cup(-\\infty,1)", 1),
        ("[1,2)", "[1,2]", 0),
        ("(1,3)", "(1,2)", 0),
        ("x \\in (0, 1]", "0 < x \\leq 1", 1),
    ],
    "approx/chains": [
        ("x \\approx 11", "11", 1),
        ("x = 5+5+1 = 11", "11", 1),
        ("x = 5+5+1 = 11", "x = 11", 1),
        ("x = 5+5+1 = 12", "11", 0),
        ("3.14", "\\pi", 0),
        ("7 = 11a + c", "11a+c", 0),
    ],
    "sets/lists": [
        ("\\{1, 2, 3\\}", "1, 2, 3", 1),
        ("3, 1, 2", "\\{1,2,3\\}", 1),
        ("1; 2; 3", "1, 2, 3", 1),
        ("1 or 2", "1, 2", 1),
        ("2 and 3", "\\{2, 3\\}", 1),
        ("1, 2", "1, 2, 3", 0),
        ("\\{1, 2, 4\\}", "\\{1,2,3\\}", 0),
        ("-1, 1", "\\pm 1", 1),
    ],
    "tuples": [
        ("(p,q)=(3,2)", "(3,2)", 1),
        ("(3,2)", "(p,q)=(3,2)", 1),
        ("(2,3)", "(3,2)", 0),
        ("(7,6)", "(7, 6)", 1),
        ("(1,2),(3,4)", "(3,4),(1,2)", 1),
        ("(1,2),(3,4)", "(1,2),(4,3)", 0),
        ("p=5,q=2;p=7,q=2", "(5,2),(7,2)", 1),
        ("(5,2),(7,2)", "p=5,q=2;p=7,q=2", 1),
        ("p=5,q=3;p=7,q=2", "(5,2),(7,2)", 0),
    ],
    "matrices": [
        (
            "\\left[\\begin{array}{cc}1 & 2 \\\\ 3 & 4\\end{array}\\right]",
            "\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}",
            1,
        ),
        ("\\begin{bmatrix}1 & 2 \\\\ 3 & 4\\end{bmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", 1),
        ("\\begin{pmatrix}1 & 2 \\\\ 3 & 5\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", 0),
        (
            "\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix} + \\begin{pmatrix}5 & 6 \\\\ 7 & 8\\end{pmatrix}",
            "\\begin{pmatrix}6 & 8 \\\\ 10 & 12\\end{pmatrix}",
            1,
        ),
        ("2\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}", "\\begin{pmatrix}2 \\\\ 4\\end{pmatrix}", 1),
    ],
    "imaginary": [
        ("i^2", "-1", 1),
        ("2i^2 + 3", "1", 1),
        ("(1+i)^2", "2i", 1),
        ("i^2", "1", 0),
        ("3+4i", "4i+3", 1),
        ("3-4i", "3+4i", 0),
    ],
    "labelled": [
        ("7:32", "S_{MBCN}:S=7:32", 1),
        ("\\frac{1}{\\sqrt{6}}", "\\frac{NO}{BO}=\\frac{1}{\\sqrt{6}}", 1),
        ("11:21", "V_{1}:V_{2}=11:21", 1),
        ("1", "|AB|=1", 1),
        ("7:31", "S_{MBCN}:S=7:32", 0),
    ],
    "precision": [
        ("1.0000000001", "1", 0),
        ("0.333333", "\\frac{1}{3}", 1),
        ("\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}", 0),
        ("2^{-99}", "2^{-98}", 0),
        ("1 - \\frac{1}{e}", "1 + \\frac{1}{e}", 0),
        ("1-e^{-1}", "1 - \\frac{1}{e}", 1),
        ("1e400", "\\infty", 0),
        ("10^{400}", "\\infty", 0),
        ("0.5", "\\frac{1}{2}", 1),
        ("0.0000001", "0.0000002", 0),
        ("3.0", "3", 1),
    ],
    "sequences": [
        ("1, 2, 4, \\ldots", "1, 2, 4, \\dots", 1),
        ("1, 2, 3, \\ldots", "1, 2, 4, \\ldots", 0),
        ("2, 4, 6, \\ldots", "2, 4, 6", 0),
    ],
    "expressions": [
        ("x^2+2x+1", "(x+1)^2", 1),
        ("\\sin^2 x + \\cos^2 x", "1", 1),
        ("2\\sqrt{2}", "\\sqrt{8}", 1),
        ("\\sqrt{8}", "3", 0),
        ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", 1),
        ("x^2-1", "(x-1)(x+1)", 1),
        ("x^2+1", "(x+1)^2", 0),
        ("y = 2x + 1", "2x - y + 1 = 0", 1),
    ],
    "choices/text": [
        ("(B)", "B", 1),
        ("\\text{(C)}", "C", 1),
        ("B", "C", 0),
        ("\\text{Monday}", "Monday", 1),
        ("Tuesday", "Monday", 0),
    ],
}

CATEGORY_CASES = [(cat, p, g, e) for cat, rows in CATEGORIES.items() for p, g, e in rows]


@pytest.mark.parametrize("category, pred, gold, equal", CATEGORY_CASES)
def test_categories(category, pred, gold, equal):
    assert is_equivalent(pred, gold) == bool(equal), (category, pred, gold)


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
    grades = pool.grade(texts, golds)  # no wall-clock bound here: a loaded machine may take long (CPU bounds below)
    assert not any(g.correct for g in grades)
    import os

    assert not os.path.exists("/tmp/groupwise_pwned")


def test_look_alike_digits_are_normalized(pool):
    assert [g.correct for g in pool.grade(["\\boxed{１２３}", "\\boxed{𝟓}"], ["123", "5"])] == [True, True]


def _slow_on_marker(pred: str, gold: str, timeout):  # pragma: no cover - runs in a grading worker
    """rewards.math.check itself, whose comparison spins forever in Python (where its SIGPROF deadline reaches)
    when the prediction is SLOW: the check runs over on any machine, however fast."""
    import rewards.math as math_module

    if pred == "SLOW":

        def spin(p, g):
            while True:
                pass

        math_module._equivalent, real = spin, math_module._equivalent
        try:
            return math_module.check(pred, gold, timeout)
        finally:
            math_module._equivalent = real
    return math_module.check(pred, gold, timeout)


def test_a_check_that_runs_over_is_false_and_counted():
    """The worker's own CPU deadline ends a slow (not hostile-looking) check: False, timed out, worker kept."""
    slow = GraderPool(workers=1, timeout=0.3, check_fn=_slow_on_marker)
    try:
        assert not hostile("SLOW")
        grades = slow.grade(["\\boxed{SLOW}"], ["1"])
        assert [(g.correct, g.timed_out) for g in grades] == [(False, True)]
        assert slow.timeouts == 1
        assert slow.grade(["\\boxed{x^2+2x+1}"], ["(x+1)^2"])[0].correct  # the pool still works
    finally:
        slow.close()


def _hangs_on_marker(pred: str, gold: str, timeout):  # pragma: no cover - runs in a grading worker
    """A check that spins forever (no timer of its own, as a hang in C code) when the prediction is HANG."""
    from rewards.math import check

    if pred == "HANG":
        while True:
            pass
    return check(pred, gold, timeout)


def test_a_worker_past_the_hard_limit_is_killed_and_replaced():
    """A check hung in C code cannot take a signal: the parent kills the worker by its CPU time and a fresh
    worker (warmed up before it gets work) grades the next check. The hang is real and endless, so the
    outcome does not depend on how fast the machine is or how busy."""
    hung = GraderPool(workers=1, timeout=0.5, check_fn=_hangs_on_marker)
    try:
        assert hung.grade(["\\boxed{x+1}"], ["1+x"])[0].correct  # warm
        first = hung.procs[0].pid
        grades = hung.grade(["\\boxed{HANG}"], ["x(x^2+1)"])
        assert [(g.correct, g.timed_out) for g in grades] == [(False, True)]
        assert hung.timeouts == 1
        assert hung.grade(["\\boxed{x^3 + x}"], ["x(x^2+1)"])[0].correct
        assert hung.procs[0].pid != first
    finally:
        hung.close()


def _burn(seconds: float) -> None:  # pragma: no cover - a load process
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_correct_answers_stay_correct_under_full_cpu_load():
    """Busy loops on every core (twice over) while a fresh pool starts and grades: the limit is CPU time
    spent on the check, so waiting for a core costs nothing."""
    import multiprocessing as mp
    import os

    ctx = mp.get_context("spawn")
    load = [ctx.Process(target=_burn, args=(120.0,), daemon=True) for _ in range(2 * (os.cpu_count() or 1))]
    for p in load:
        p.start()
    pool = GraderPool(workers=2, timeout=1.0)
    try:
        pairs = [("x^2+2x+1", "(x+1)^2"), ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"), ("x \\geq 5", "5 \\leq x")]
        grades = pool.grade([f"\\boxed{{{p}}}" for p, _ in pairs] * 4, [g for _, g in pairs] * 4)
        assert [(g.correct, g.timed_out) for g in grades] == [(True, False)] * 12
    finally:
        pool.close()
        for p in load:
            p.kill()


@pytest.mark.parametrize(
    "text",
    [
        *HOSTILE,
        "10^{-999999999}",
        "2^{2^{2^{2^{2^{2}}}}}",
        "(10^{100})!",
        "\\binom{10^{9}}{10^{8}}",
        "(x+1)^{100000}",
        "1e999999999",
    ],
)
def test_is_equivalent_alone_is_bounded(text):
    """Without the pool: False within 2 s of CPU each (the CPU deadline ends what the size guards let through;
    CPU time, so a busy machine cannot fail this test)."""
    t0 = time.process_time()
    assert not is_equivalent(text, "5")
    assert not is_equivalent("5", text)
    assert time.process_time() - t0 < 4


def test_model_text_never_reaches_eval_sympify_or_parse_expr(executed_model_text):
    """Every call of sympy's parse_expr (what sympify does with a string), eval and exec is recorded while
    grading hostile text and the whole table: there must be none, in our code or Math-Verify's."""
    calls = executed_model_text
    texts = HOSTILE + [p for p, _ in EQUAL + NOT_EQUAL] + [p for _, p, _, _ in CATEGORY_CASES]
    golds = ["5"] * len(HOSTILE) + [g for _, g in EQUAL + NOT_EQUAL] + [g for _, _, g, _ in CATEGORY_CASES]
    for text, gold in zip(texts, golds):
        is_equivalent(text, gold)
        is_equivalent(gold, text)
    assert calls == []


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
