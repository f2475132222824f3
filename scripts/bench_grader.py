"""Grading throughput on a MATH-500-like mix: groupwise's pool, groupwise in one process, Math-Verify alone.

Responses are built from the MATH-500 gold answers (../shared/data/math500.jsonl, or --data): for each gold,
a correct response in its own notation, one with the answer rewritten (\\dfrac, spaces, a \\text unit), and a
near miss (one digit changed), each ending in \\boxed{}. ``--hostile`` mixes in 10% hostile answers (power
towers, huge exponents and factorials, deep nesting). Prints answers per second; figures go to
docs/benchmarks.md.

    python scripts/bench_grader.py                    # the mix, 4 variants of 500 problems
    python scripts/bench_grader.py --hostile --limit 200
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/math500.jsonl"))
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--hostile", action="store_true")
    ap.add_argument("--deadline", type=float, default=300.0, help="wall seconds for the Math-Verify-alone leg")
    args = ap.parse_args()

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
