"""Issue #35: grading real models' answers. Responses written the way Qwen-, DeepSeek-R1- and Minerva-style
models write them, and cases from the mathematics; the false positives each rule must refuse come first.
Policy: docs/grading.md."""

import time

import pytest

from rewards.extract import MAX_TEXT, extract_answer
from rewards.math import grade, is_equivalent
from rewards.pool import GraderPool

# Wrong answers that the grader called right before issue #35, each from the mathematics: (pred, gold).
REFUSED = {
    "names": [
        ("a = 5, b = -2", "a = -2, b = 5"),  # the values bound to the wrong names
        ("a = 5", "b = 5"),
        ("x = 1, y = 2", "y = 1, x = 2"),
        ("a = 5, b = -2", "a = 5, b = -2, c = 0"),  # a name missing
        ("x = 3, x = 4", "x = 3"),  # a hedge between two values of one name
        ("m = \\frac{1}{2}, n = 2", "m = 2, n = \\frac{1}{2}"),
    ],
    "units": [
        ("2 \\text{ m}", "2 \\text{ cm}"),
        ("5 \\text{ kg}", "5 \\text{ g}"),
        ("3 \\text{ hours}", "3 \\text{ minutes}"),
        ("12 \\text{ cm}^2", "12 \\text{ cm}"),  # an area against a length
        ("4 \\text{ square feet}", "4 \\text{ cubic feet}"),
        ("7 \\text{ dollars}", "7 \\text{ cents}"),
        ("100 \\text{ cm}", "1 \\text{ m}"),  # no conversion: the gold's unit is the one asked for
        ("2 \\text{ m}, 3 \\text{ m}", "2 \\text{ cm}, 3 \\text{ cm}"),
    ],
    "times of day": [
        ("12:00", "1:00"),  # both read as the ratios 12:0 and 1:0 before
        ("1:05", "1:50"),
        ("1:00 \\text{ p.m.}", "1:00 \\text{ a.m.}"),
        ("12:00 \\text{ am}", "12:00 \\text{ pm}"),  # midnight is not noon
        ("10:30:05", "10:30:00"),
        ("13:00", "1:00"),  # a 24-hour clock without am/pm: 1 pm is not 1 am
        ("9:24", "3:8"),  # a time (a MATH gold) is not a ratio that happens to equal it
        ("1:20", "2:40"),  # h:mm is a time: an unreduced ratio written like one is refused (docs/grading.md)
    ],
    "choices": [
        ("\\text{(b)}", "c"),
        ("(B)", "a"),
        ("\\textbf{(D)}", "b"),
        ("b", "\\text{(C)}"),
    ],
}

ACCEPTED = {
    "names": [
        ("b=-2, a=5", "a=5,b=-2"),  # order free
        ("a = 5, b = -2", "b = -2, a = 5"),
        ("x = \\frac{1}{2}, y = 3", "y=3, x=0.5"),
        ("x = 5", "5"),  # a value against an assignment: the value (the existing policy)
        ("a = 5, b = -2", "(5, -2)"),  # named values against a tuple: in written order (the existing policy)
        ("y = 2x + 1", "x = \\frac{y-1}{2}"),  # one equation, solved for either name
        ("a_1 = 3", "a_{1} = 3"),
    ],
    "units": [
        ("2 \\text{ m}", "2 \\text{ meters}"),
        ("24 \\text{ in}^2", "24 \\text{ square inches}"),
        ("3 \\text{ hrs}", "3 \\text{ hours}"),
        ("5 m²", "5 \\text{ m}^2"),
        ("12 \\text{ cm}", "12"),  # a unit on one side only is dropped (the existing policy)
        ("12", "12 \\text{ cm}"),
        ("24 \\text{ units}^2", "24 \\text{ square units}"),  # 'units' names no dimension
    ],
    "times of day": [
        ("1:00", "1:00"),
        ("1:00 \\text{ PM}", "13:00"),
        ("01:00", "1:00"),
        ("9:05 \\text{ a.m.}", "9:05"),  # am/pm on one side: the other read on a 12-hour clock
        ("7:32", "S_{MBCN}:S=7:32"),  # a labelled ratio: its value, as before
        ("1:4", "2:8"),  # ratios that are not shaped like times stay ratios
    ],
    "choices": [
        ("\\text{(b)}", "b"),
        ("(B)", "b"),
        ("\\textbf{(B)}", "b"),
        ("B", "b"),
        ("b", "\\text{(B)}"),
        ("(B) 12", "b"),
    ],
}

REFUSED_CASES = [(c, p, g) for c, rows in REFUSED.items() for p, g in rows]
ACCEPTED_CASES = [(c, p, g) for c, rows in ACCEPTED.items() for p, g in rows]


@pytest.mark.parametrize("category, pred, gold", REFUSED_CASES)
def test_wrong_names_units_times_and_choices_are_wrong_either_way_round(category, pred, gold):
    assert not is_equivalent(pred, gold), (category, pred, gold)
    assert not is_equivalent(gold, pred), (category, gold, pred)


@pytest.mark.parametrize("category, pred, gold", ACCEPTED_CASES)
def test_the_same_answer_in_another_form_stays_right(category, pred, gold):
    assert is_equivalent(pred, gold), (category, pred, gold)


def test_the_pool_refuses_different_units_too():
    """The pool decides identical normalized strings in the parent: '2 m' and '2 cm' are both '2' there."""
    pool = GraderPool(workers=1, timeout=2.0)
    try:
        grades = pool.grade(
            ["\\boxed{2 \\text{ m}}", "\\boxed{2 \\text{ cm}}", "\\boxed{12:00}"], ["2 \\text{ cm}"] * 2 + ["1:00"]
        )
        assert [g.correct for g in grades] == [False, True, False]
    finally:
        pool.close()


# Responses written the way real models write them: (style, response, gold, correct?, extracted).
MINERVA = (
    "The number of non-empty subsets of an 8-element set is $2^8 - 1 = \\boxed{255}$. Each element lies in\n"
    "$2^7 = 128$ of them, so the sum of all the sums is $128 \\cdot (1 + 2 + \\cdots + 8) \\cdot \\ldots$\n"
    "Final Answer: The final answer is $10,455$. I hope it is correct."
)
R1 = (
    "<think>\nOkay, so I need the number of ways. Maybe it's \\boxed{8}? Wait, that double counts the\n"
    "empty arrangement. Let me recount: 3 + 3 + 3 = 9.\n</think>\n\nCounting each case once gives 9.\n\n"
    "**Final answer: 9**"
)
R1_TEMPLATE = (  # the chat template opened <think> in the prompt: the response starts inside the block
    "Okay, let me see. First guess: \\boxed{8}. Hmm, no, I forgot the case $n = 0$.\n</think>\n\n"
    "Including $n = 0$, there are 9 values.\n\n**Final Answer**\n\\[\n\\boxed{9}\n\\]"
)
QWEN_NAMES = (
    "To solve the system, we subtract the equations:\n\\[\n2b = -4 \\implies b = -2.\n\\]\nSubstituting back,"
    " $a = 5$.\n\nThus, the values are \\(a = 5\\) and \\(b = -2\\).\n\n\\[\n\\boxed{a = 5, b = -2}\n\\]"
)
QWEN_UNITS = "The side of the square is \\(\\sqrt{4} = 2\\) centimeters.\n\nThe answer is \\(\\boxed{2 \\text{ cm}}\\)."
QWEN_CHOICE = (
    "Only option (B) satisfies both conditions.\n\nTherefore, the correct answer is \\(\\boxed{\\text{(B)}}\\)."
)
QWEN_CLOCK = "After 7 hours the clock shows \\(5 + 7 = 12\\) o'clock.\n\nThe answer is \\(\\boxed{12:00}\\)."
MINERVA_SENTENCE = (
    "The cube has side $\\sqrt[3]{120}$, so its volume is 120.\nFinal Answer: The volume of $ABCDEFGH$ is 120."
)
OPEN_THOUGHTS = (
    "<|begin_of_thought|>\nTry 3: works? \\boxed{3}. No, 3 fails the second condition.\n<|end_of_thought|>\n\n"
    "<|begin_of_solution|>\nThe least value satisfying both conditions is $\\boxed{4}$.\n<|end_of_solution|>"
)
GRPO_TAGS = "<reasoning>\n6 times 7 is 42, and \\boxed{41} was a slip.\n</reasoning>\n<answer>\n42\n</answer>"

REAL = [
    # false positives first: a discarded guess or an intermediate box that matches the gold
    ("Minerva, intermediate box", MINERVA, "255", False, "10,455"),
    ("R1, guess inside <think>", R1, "8", False, "9"),
    ("R1, template-opened <think>", R1_TEMPLATE, "8", False, "9"),
    ("OpenThoughts, box inside the thought", OPEN_THOUGHTS, "3", False, "4"),
    ("GRPO tags, box inside reasoning", GRPO_TAGS, "41", False, "42"),
    ("Qwen, names swapped", QWEN_NAMES, "a = -2, b = 5", False, "a = 5, b = -2"),
    ("Qwen, another unit", QWEN_UNITS, "2 \\text{ m}", False, "2 \\text{ cm}"),
    ("Qwen, another time", QWEN_CLOCK, "1:00", False, "12:00"),
    ("Qwen, another choice", QWEN_CHOICE, "c", False, "\\text{(B)}"),
    ("Minerva, sentence, wrong value", MINERVA_SENTENCE, "20", False, "120"),
    ("one equation, wrong value", "$k = \\frac{1}{3}$", "3", False, "\\frac{1}{3}"),
    # the same responses against the answer they state
    ("Minerva, final statement", MINERVA, "10455", True, "10,455"),
    ("R1, answer after </think>", R1, "9", True, "9"),
    ("R1, template-opened <think>", R1_TEMPLATE, "9", True, "9"),
    ("OpenThoughts, solution block", OPEN_THOUGHTS, "4", True, "4"),
    ("GRPO tags, <answer>", GRPO_TAGS, "42", True, "42"),
    ("Qwen, names in another order", QWEN_NAMES, "b=-2, a=5", True, "a = 5, b = -2"),
    ("Qwen, the same unit spelled out", QWEN_UNITS, "2 \\text{ centimeters}", True, "2 \\text{ cm}"),
    ("Qwen, the same time", QWEN_CLOCK, "12:00", True, "12:00"),
    ("Qwen, choice letter", QWEN_CHOICE, "b", True, "\\text{(B)}"),
    ("Minerva, sentence", MINERVA_SENTENCE, "120", True, "120"),
    ("one equation", "$k = \\frac{1}{3}$", "\\frac13", True, "\\frac{1}{3}"),
]


@pytest.mark.parametrize("style, text, gold, correct, extracted", REAL, ids=[r[0] for r in REAL])
def test_real_responses_are_graded_on_the_answer_they_state(style, text, gold, correct, extracted):
    assert grade(text, gold) == (correct, extracted), style


EXTRACTION = [
    # thinking is never the answer when text follows it
    ("<think>\\boxed{8}</think>\nThe answer is 9", "9"),
    ("<thinking>\\boxed{8}</thinking> Answer: 9", "9"),
    ("<reasoning>\\boxed{8}</reasoning>\n\\boxed{9}", "9"),
    ("◁think▷\\boxed{8}◁/think▷\\boxed{9}", "9"),
    ("<think>a</think><think>\\boxed{8}</think>\n$\\boxed{9}$", "9"),  # the last block
    ("<think>\\boxed{8}</think>\nI could not finish.", None),  # text follows, without an answer: none
    # nothing follows the thinking: it is all the author wrote
    ("<think>\nso it is \\boxed{8}", "8"),  # unclosed (cut off)
    ("<think>\nso it is \\boxed{8}\n</think>\n<|im_end|>", "8"),
    # a final-answer statement after the last box
    ("$x = \\boxed{3}$, so $y = 6$.\nFinal Answer: The final answer is $6$. I hope it is correct.", "6"),
    ("\\boxed{8}\n\n**Final answer: 9**", "9"),
    ("\\boxed{8}\n\nThe answer is 9", "9"),
    ("\\boxed{8}\n\nAnswer: 9", "9"),
    ("The answer is \\boxed{9}.", "9"),  # the statement holds the box
    ("\\boxed{9}. So the answer is correct.", "9"),  # a verdict, not an answer
    ("\\boxed{12}. The answer is the number of ways to pick them.", "12"),  # not a value: the box stays
    ("$x = \\boxed{49}$. (Checking the answer is necessary: squaring adds roots.)", "49"),  # MATH train/algebra/642
    ("\\boxed{A}\n\nWait, (A) fails. The answer is B.", "B"),  # a choice letter is a value
    # one equation, one span
    ("$k = \\frac{1}{3}$", "\\frac{1}{3}"),
    ("\\( x = -2 \\).", "-2"),
    ("$\\frac{1}{3}$", "\\frac{1}{3}"),
    ("$k = 1$ and $m = 2$", None),  # two spans: not one equation, and no anchor
    ("$y = -\\frac{1}{2}x + \\frac{3}{4}$", "y = -\\frac{1}{2}x + \\frac{3}{4}"),  # a line: its names are the answer
    # a final-answer sentence gives its value
    ("Final Answer: The volume of $ABCDEFGH$ is 120.", "120"),
    ("Final Answer: $AB$ is $5$.", "5"),
    ("**Final Answer:** The number of students who passed equals 37.", "37"),
    ("Final Answer: It is not 5.", "It is not 5"),  # 'is not' states no value: the sentence stays whole
    ("Answer: $x = 3$", "x = 3"),  # math after the anchor stays as written
    ('Final Answer: The final answer is "$12$ and $13$". I hope it is correct.', "12 and 13"),  # spans joined
    ("\\boxed{12 $ and $13}. Final Answer: The final answer is $12$ and $13$.", "12 and 13"),
]


@pytest.mark.parametrize("text, expected", EXTRACTION)
def test_extraction_reads_the_answer_its_author_meant(text, expected):
    assert extract_answer(text) == expected


PATHOLOGICAL = {
    "repeated </think>": "</think>" * (MAX_TEXT // 8),
    "repeated <think>": "<think>" * (MAX_TEXT // 7),
    "repeated <answer>": "<answer>" * (MAX_TEXT // 8),
    "repeated solution markers": "<|begin_of_solution|>" * (MAX_TEXT // 21),
    "one long span": "$" + "x" * (MAX_TEXT - 2) + "$",
    "a box then anchors": "\\boxed{1}" + " the answer is" * (MAX_TEXT // 14),
    "copulas after an anchor": "Final Answer: " + "it is " * (MAX_TEXT // 6),
    "open parens after an anchor": "Final Answer: a " + "\\(" * (MAX_TEXT // 2),
}


@pytest.mark.parametrize("name", PATHOLOGICAL)
def test_extraction_stays_linear_on_the_new_paths(name):
    """As tests/rewards/test_grader_traps.py: 2 s of CPU is far above a linear pass and far below a quadratic one."""
    t = time.process_time()
    extract_answer(PATHOLOGICAL[name])
    assert time.process_time() - t < 2.0


def test_the_new_rules_execute_no_model_text(executed_model_text):
    """As tests/rewards/test_grader.py: parse_expr, eval and exec recorded while grading this file's cases; none."""
    calls = executed_model_text
    for _, pred, gold in REFUSED_CASES + ACCEPTED_CASES:
        is_equivalent(pred, gold)
        is_equivalent(gold, pred)
    for _, text, gold, _, _ in REAL:
        grade(text, gold)
    assert calls == []
