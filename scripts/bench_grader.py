"""Grading throughput on a MATH-500-like mix: groupwise's pool, groupwise in one process, Math-Verify alone.

Responses are built from the MATH-500 gold answers (math500.jsonl in $GROUPWISE_DATA, or --data): for each gold,
a correct response in its own notation, one with the answer rewritten (\\dfrac, spaces, a \\text unit), and a
near miss (one digit changed), each ending in \\boxed{}. ``--hostile`` mixes in 10% hostile answers (power
towers, huge exponents and factorials, deep nesting). Prints answers per second; figures go to
docs/benchmarks.md.

    python scripts/bench_grader.py                    # the mix, 4 variants of 500 problems
    python scripts/bench_grader.py --hostile --limit 200
    python scripts/bench_grader.py --math-verify-suite PATH/Math-Verify/tests   # agreement on its test cases
    python scripts/bench_grader.py --traps            # false-positive traps (tests/support/grader_traps.py)
    python scripts/bench_grader.py --extraction-worst # CPU time of extraction on pathological texts
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HOSTILE = [
    "10^{10^{10^{10}}}",
    "9^{9^{9^{9}}}",
    "(10^{100})!",
    "10^{-999999999}",
    "(" * 300 + "1" + ")" * 300,
    "\\binom{10^{9}}{10^{8}}",
    "(x+1)^{100000}",
    "2^{2^{2^{2^{2^{2}}}}}",
]


def responses(golds: list[str], hostile: bool, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, refs = [], []
    for g in golds:
        rewritten = g.replace("\\frac", "\\dfrac").replace(",", ", ")
        near = re.sub(r"\d", lambda m: str((int(m.group()) + 1) % 10), g, count=1)
        for ans in (g, rewritten, near, g + "\\text{ units}" if re.fullmatch(r"[\d.]+", g) else g):
            texts.append(f"Let us compute step by step.\n... so the final answer is $\\boxed{{{ans}}}$.")
            refs.append(g)
    if hostile:
        for i in rng.sample(range(len(texts)), len(texts) // 10):
            texts[i] = f"The answer is \\boxed{{{rng.choice(HOSTILE)}}}"
    return texts, refs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get("GROUPWISE_DATA")
    ap.add_argument(
        "--data",
        default=str(Path(env) / "math500.jsonl") if env else None,
        help="MATH-500 as JSONL (default: math500.jsonl in $GROUPWISE_DATA)",
    )
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--hostile", action="store_true")
    ap.add_argument("--deadline", type=float, default=300.0, help="wall seconds for the Math-Verify-alone leg")
    ap.add_argument("--math-verify-suite", metavar="DIR", help="agreement on Math-Verify's own tests/ (a checkout)")
    ap.add_argument("--traps", action="store_true", help="agreement on our false-positive traps")
    ap.add_argument("--extraction-worst", action="store_true", help="extraction CPU time on pathological texts")
    ap.add_argument("-v", "--verbose", action="store_true", help="list the cases where groupwise disagrees")
    args = ap.parse_args()
    if args.math_verify_suite:
        return agreement(math_verify_cases(Path(args.math_verify_suite)), "Math-Verify's test suite")
    if args.traps:
        from tests.support.grader_traps import TRAPS

        return agreement([(g, p, e, cat) for cat, rows in TRAPS.items() for p, g, e in rows], "false-positive traps")
    if args.extraction_worst:
        return extraction_worst()

    if not args.data or not Path(args.data).is_file():
        ap.error(f"MATH-500 not found ({args.data or 'GROUPWISE_DATA is not set'}): pass --data FILE.jsonl")
    golds = [json.loads(x)["answer"] for x in Path(args.data).read_text().splitlines()[: args.limit]]
    texts, refs = responses(golds, args.hostile)
    print(f"{len(texts)} responses ({'with' if args.hostile else 'without'} hostile answers), {args.workers} workers")

    from rewards.math import grade
    from rewards.pool import GraderPool

    pool = GraderPool(workers=args.workers, timeout=2.0)
    pool.grade(["\\boxed{x+1}"] * args.workers, ["1+x"] * args.workers)  # workers warm
    t = time.perf_counter()
    grades = pool.grade(texts, refs)
    dt = time.perf_counter() - t
    pool.close()
    print(
        f"groupwise pool       : {len(texts) / dt:7.1f} answers/s  (correct {sum(g.correct for g in grades)}, "
        f"timeouts {sum(g.timed_out for g in grades)})"
    )

    t = time.perf_counter()
    n_ok = sum(grade(x, r)[0] for x, r in zip(texts, refs))
    dt = time.perf_counter() - t
    print(f"groupwise, 1 process : {len(texts) / dt:7.1f} answers/s  (correct {n_ok})")

    import multiprocessing as mp

    done = mp.Value("i", 0)
    proc = mp.get_context("fork").Process(target=_math_verify_alone, args=(texts, refs, done))
    t = time.perf_counter()
    proc.start()
    proc.join(args.deadline)
    dt = time.perf_counter() - t
    if proc.is_alive():
        proc.kill()
        print(
            f"Math-Verify alone    : did not finish in {args.deadline:.0f} s ({done.value} of {len(texts)} answers; "
            "its signal.alarm cannot interrupt a power computed in C)"
        )
    else:
        print(f"Math-Verify alone    : {len(texts) / dt:7.1f} answers/s  (its own 5 s alarm per check)")


def math_verify_cases(folder: Path) -> list[tuple[str, str, int, str]]:
    """(gold, pred, expected, file) of every ``@pytest.mark.parametrize("gold,pred,expected", [...])`` row of
    Math-Verify's tests, read with ``ast`` (nothing of theirs is run or copied)."""
    import ast

    cases = []
    for path in sorted(folder.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "parametrize" and node.args):
                continue
            names = (
                [n.strip() for n in ast.literal_eval(node.args[0]).split(",")]
                if isinstance(node.args[0], ast.Constant)
                else []
            )
            if not {"gold", "pred", "expected"} <= set(names) or not isinstance(node.args[1], ast.List):
                continue
            for row in node.args[1].elts:
                try:
                    values = dict(zip(names, ast.literal_eval(row)))
                except ValueError:
                    continue
                if all(isinstance(values[k], str) for k in ("gold", "pred")):
                    cases.append((values["gold"], values["pred"], int(values["expected"]), path.stem))
    return cases


def agreement(cases: list[tuple[str, str, int, str]], name: str) -> None:
    """Share of cases where each grader gives the expected verdict; false positives counted apart. Ours: the
    extracted answer of each side (the side itself when it has no anchor), then ``is_equivalent``."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    from rewards.math import extract_answer, is_equivalent

    def ours(gold: str, pred: str) -> bool:
        g, p = extract_answer(gold) or gold, extract_answer(pred) or pred
        return is_equivalent(p, g, time_limit=5.0)

    def theirs(gold: str, pred: str) -> bool:
        config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
        try:
            return bool(verify(parse(gold, config), parse(pred, config), timeout_seconds=5))
        except Exception:
            return False

    for label, fn in (("groupwise", ours), ("Math-Verify alone", theirs)):
        hits = fps = fns = 0
        misses = []
        for gold, pred, expected, where in cases:
            got = fn(gold, pred)
            hits += got == bool(expected)
            fps += got and not expected
            fns += expected and not got
            if got != bool(expected):
                misses.append((where, gold[:60], pred[:60], expected))
        print(
            f"{name}, {label:17s}: {hits}/{len(cases)} = {100 * hits / len(cases):.1f}% agree, "
            f"{fps} false positives, {fns} false negatives"
        )
        if label == "groupwise" and "-v" in sys.argv:
            for m in misses:
                print("   ", m)


def extraction_worst() -> None:
    from rewards.extract import MAX_TEXT, extract_answer

    n = MAX_TEXT
    texts = {
        "\\boxed{ repeated": "\\boxed{" * (n // 7), "nested boxes": "\\boxed{" * (n // 14) + "}" * (n // 14),
        "{ repeated": "{" * n, "the answer is repeated": "the answer is " * (n // 14), "#### repeated": "#" * n,
        "$ repeated": "$" * n, "Answer: lines": "\nAnswer:" * (n // 8), "\\[ repeated": "\\[" * (n // 2),
        "** repeated": "*" * n, "boxes joined": "\\boxed{1}, " * (n // 11), "spaces": "the answer" + " " * n,
        "</think> repeated": "</think>" * (n // 8), "<answer> repeated": "<answer>" * (n // 8),
        "box, then anchors": "\\boxed{1}" + " the answer is" * (n // 14),
        "copulas": "Final Answer: " + "it is " * (n // 6),
    }  # fmt: skip
    worst = 0.0
    for label, text in texts.items():
        t = time.process_time()
        extract_answer(text)
        worst = max(worst, time.process_time() - t)
        print(f"{label:24s} {len(text):7d} chars  {time.process_time() - t:.3f} s CPU")
    print(f"worst: {worst:.3f} s CPU")


def _math_verify_alone(texts: list[str], refs: list[str], done) -> None:
    from math_verify import parse, verify

    for x, r in zip(texts, refs):
        try:
            verify(parse(f"${r}$"), parse(x), timeout_seconds=5)
        except Exception:
            pass
        done.value += 1


if __name__ == "__main__":
    main()
