"""``python scripts/guard_lab.py`` (``make guard-lab``): the guard lab's flags, its study, its two outputs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import toylab.guard_lab
from toylab.guard_lab.replay import Study, choose, cusum, decide, evaluate, relative
from toylab.guard_lab.report import report
from toylab.guard_lab.rules import (
    COLLAPSE_METHODS,
    MIN_ARL0,
    ONSET_BASE,
    ONSET_FRACTION,
    ONSET_SPAN,
    SIM_B,
    SIM_W,
    TARGET,
)
from toylab.guard_lab.runs import Run, build_series, load_runs
from trainer.config import GuardConfig

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/guard_lab.py",
        description=toylab.guard_lab.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        default=[ROOT / "runs" / "lab" / "length", ROOT / "runs" / "lab" / "collapse"],
        help="dirs of <method>-s<seed> runs (default: the lab's length and collapse experiments)",
    )
    p.add_argument("--calibrate", nargs="+", type=int, default=[0, 1], help="seeds k, h, tau are chosen on")
    p.add_argument("--validate", nargs="+", type=int, default=[2, 3, 4], help="seeds the figures are reported on")
    p.add_argument(
        "--replicates",
        type=int,
        default=1,
        help=f"B={SIM_B} simulations per run (their steps add up: the interval then treats draws from the same "
        "logged prompts as independent, which they are not; 1 keeps it honest)",
    )
    p.add_argument("--partial", action="store_true", help="use unfinished runs (no lab.json) as far as they go")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "guard-results.md")
    p.add_argument("--json", type=Path, default=None, help="figures as JSON (default: --out with .json)")
    p.add_argument(
        "--onset-fraction",
        type=float,
        default=ONSET_FRACTION,
        help=f"collapse onset at this fraction of the start (pre-registered: {ONSET_FRACTION:g}; another value is a "
        "post-hoc analysis and the report says so)",
    )
    args = p.parse_args(argv)
    if set(args.calibrate) & set(args.validate):
        p.error("calibration and validation seeds must differ")
    return args


def read_runs(args: argparse.Namespace) -> tuple[list[Run], list[str]]:
    """Every usable run of the calibration and validation seeds in the --runs directories, with its guard
    inputs built, and a note for each directory or run left out."""
    runs, notes = [], []
    for d in args.runs:
        if not d.is_dir():
            notes.append(f"{d}: no such directory")
            continue
        prefix = f"{d.name}/" if len(args.runs) > 1 else ""
        got, said = load_runs(d, set(args.calibrate) | set(args.validate), args.partial, prefix, args.onset_fraction)
        runs, notes = runs + got, notes + said
    for run in runs:
        build_series(run, args.replicates)
    return runs, notes


def study(args: argparse.Namespace, runs: list[Run], notes: list[str]) -> Study:
    """Calibrate on the calibration seeds, replay every rule on the validation seeds, decide the default action."""
    batches = ["lab", f"B={SIM_B}"]
    cal = [r for r in runs if r.seed in args.calibrate]
    val = [r for r in runs if r.seed in args.validate]
    chosen, table = choose(cal, batches) if cal else (None, [])
    g = GuardConfig()
    rules = {
        f"relative p{g.patience} (old default)": relative(g.patience),
        "relative p3 (configs/lab/guard.yaml)": relative(3),
        f"cusum default (k={g.cusum_k:g}, h={g.cusum_h:g}, tau={g.cusum_tau:g})": cusum(
            g.cusum_k, g.cusum_h, g.cusum_tau
        ),
    }
    if chosen:
        rules[f"cusum calibrated (k={chosen['cusum_k']:g}, h={chosen['cusum_h']:g}, tau={chosen['cusum_tau']:g})"] = (
            chosen
        )
    results = {
        "definitions": {
            "collapse_methods": COLLAPSE_METHODS,
            "onset": {"span": ONSET_SPAN, "base_steps": ONSET_BASE, "fraction": args.onset_fraction},
            "sim": {"B": SIM_B, "W": SIM_W, "replicates": args.replicates},
            "target_per_1000": TARGET,
            "min_arl0": MIN_ARL0,
        },
        "calibrate": args.calibrate,
        "validate": args.validate,
        "runs": {r.name: {"kind": r.kind, "onset": r.onset, "steps": len(r.correct)} for r in runs},
        "left_out": notes,
        "chosen": chosen,
        "calibration": table,
        "validation": {label: {b: evaluate(val, rule, b).summary() for b in batches} for label, rule in rules.items()},
    }
    default_label = next(label for label in rules if label.startswith("cusum default"))
    decision = decide(results["validation"][default_label])
    results["default_action"] = {"action": decision[0], "why": decision[1]}
    return Study(runs, notes, chosen, table, results, decision)


def main(argv: list[str] | None = None) -> int:
    """Read the runs, study them, write ``--out`` (Markdown) and ``--json``; 1 when no validation run is usable."""
    args = parse_args(argv)
    runs, notes = read_runs(args)
    if not any(r.seed in args.validate for r in runs):
        where = " ".join(map(str, args.runs))
        print(f"no usable validation runs in {where}: " + "; ".join(notes), file=sys.stderr)
        return 1
    found = study(args, runs, notes)
    text = report(args, found)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    (args.json or args.out.with_suffix(".json")).write_text(json.dumps(found.results, indent=1, default=list) + "\n")
    print(text)
    return 0
