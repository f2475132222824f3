"""The toy lab's runner: every experiment of docs/toy-lab.md, several seeds each, then its tables and figures.

    python scripts/collapse_lab.py                        # every experiment, seeds 0-4, two runs at a time
    python scripts/collapse_lab.py --only offpolicy --seeds 0 1 --jobs 1
    python scripts/collapse_lab.py --report-only          # tables and figures from the runs already there

Each run is ``groupwise train -c configs/lab/base.yaml [-c configs/lab/<experiment>.yaml] -c
configs/lab/<method>.yaml seed=S`` in ``RUNS/<experiment>/<method>-s<S>`` with one CPU thread (runs in
parallel use a core each). Runs go seed by seed, so a lab stopped early has complete paired sets for the first
seeds. A finished run (``lab.json`` written) is not run again and an interrupted one resumes from its
checkpoint. Outputs: ``OUT/lab-<experiment>.png`` and ``OUT/lab-results.md``: each method against its
experiment's baseline at the same seeds, with two-stage bootstrap intervals (``toylab.stats``). The experiments
and their methods are listed in ``toylab.experiments``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from toylab.experiments import COLLAPSE_RATIO, EXPERIMENTS, LENGTH_FLOOR, methods_of
from toylab.figures import figure
from toylab.results import against_baseline, collect, display, replication, table

ROOT = Path(__file__).resolve().parents[1]
LAB_CONFIGS = ROOT / "configs" / "lab"


def kernels() -> str:
    """The instruction set the runs' kernels used: ATen's dispatch level and any oneDNN/MKL cap in the environment
    (``make lab-avx2`` caps all three to AVX2 to re-run the lab as an AVX2 machine would)."""
    caps = [f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if os.environ.get(k)]
    return f"CPU kernels {torch.backends.cpu.get_cpu_capability()}" + (f" ({', '.join(caps)})" if caps else "")


def run_one(exp: str, name: str, seed: int, runs: Path, extra: list[str]) -> tuple[str, int, float]:
    """Train one (experiment, method, seed); returns its directory name, exit status and minutes."""
    run = runs / exp / f"{name}-s{seed}"
    if (run / "lab.json").exists():
        return f"{exp}/{run.name}", json.loads((run / "lab.json").read_text())["status"], 0.0
    configs = ["base.yaml", *EXPERIMENTS[exp].configs, f"{name}.yaml"]
    cmd = [str(Path(sys.executable).with_name("groupwise")), "train"]
    for c in configs:
        cmd += ["-c", str(LAB_CONFIGS / c)]
    cmd += [f"seed={seed}", f"run_dir={run}", "resume=auto", *extra]
    # each run is its own world of one: never hand it this process's torch.distributed rendezvous
    rendezvous = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in rendezvous}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
    t0 = time.time()
    run.mkdir(parents=True, exist_ok=True)
    with (run / "lab.log").open("a") as log:
        status = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    minutes = (time.time() - t0) / 60
    if status in (0, 3):  # 3: halted by a guard (the evidence is the result); anything else is retried next time
        (run / "lab.json").write_text(json.dumps({"status": status, "minutes": round(minutes, 2)}))
    return f"{exp}/{run.name}", status, minutes


def run_all(args: argparse.Namespace) -> None:
    """Every (experiment, method, seed) asked for, seed by seed, ``args.jobs`` at a time."""
    todo = [(e, m, s) for s in args.seeds for e in args.only for m in methods_of(EXPERIMENTS[e], s)]
    todo = [(e, m, s) for e, m, s in todo if m in (args.methods or [m])]
    print(f"{len(todo)} runs, {args.jobs} at a time, in {args.runs}", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, e, m, s, args.runs, args.overrides) for e, m, s in todo]
        for i, f in enumerate(futures, 1):
            run, status, minutes = f.result()
            print(f"[{i}/{len(todo)}] {run}: exit {status} ({minutes:.1f} min)", flush=True)


def write_report(args: argparse.Namespace) -> str:
    """``OUT/lab-results.md`` (the starting models' profiles, each experiment's table and, with a reference,
    its replication) and ``OUT/lab-<experiment>.png``; returns the Markdown."""
    args.out.mkdir(parents=True, exist_ok=True)
    parts = [
        f"Written by `scripts/collapse_lab.py` (never edited by hand) from the runs in `{display(args.runs)}`, "
        f"seeds {', '.join(map(str, args.seeds))}, {kernels()}. "
        f"Collapse: final held-out accuracy below {COLLAPSE_RATIO:g} x the start. Length collapse: final mean "
        f"tokens below {LENGTH_FLOOR:g} x the start. Held-out: the runs' own evaluation (eval.jsonl)."
    ]
    if args.probe:
        from toylab.probe import profile, profile_table

        for model in dict.fromkeys(EXPERIMENTS[e].model for e in args.only):
            parts.append(f"### the starting model {model} (held-out, {args.probe} problems x 4 samples)\n\n"
                         + profile_table(profile(model, args.probe)))  # fmt: skip
    for exp in args.only:
        got = collect(exp, args.runs, args.seeds)
        if args.methods:  # a round that ran some methods only: its table holds those (and the baseline)
            keep = {*args.methods, EXPERIMENTS[exp].baseline}
            got = {m: by_seed for m, by_seed in got.items() if m in keep}
        prs = against_baseline(exp, got)
        parts.append(table(exp, got, prs))
        if args.reference:
            parts.append(replication(exp, (got, prs), args.reference, args.reference_seeds))
        print(f"figure: {figure(exp, args.runs, args.seeds, args.out)}")
    text = "\n\n".join(parts)
    (args.out / "lab-results.md").write_text(text + "\n")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/collapse_lab.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", nargs="+", choices=list(EXPERIMENTS), default=list(EXPERIMENTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)), help="runs at a time")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "lab")
    p.add_argument("--out", type=Path, default=ROOT / "docs", help="where lab-*.png and lab-results.md go")
    done = p.add_mutually_exclusive_group()
    done.add_argument("--report-only", action="store_true", help="tables and figures from existing runs only")
    done.add_argument("--run-only", action="store_true", help="the runs only: no tables, figures or profiles")
    p.add_argument(
        "--probe", type=int, default=200, help="held-out problems for the starting models' profiles (0: skip)"
    )
    p.add_argument("--methods", nargs="+", help="only these methods of the chosen experiments (default: all)")
    p.add_argument("--reference", type=Path, help="a lab's runs to compare with (e.g. runs/lab from runs/lab-avx2)")
    p.add_argument("--reference-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="the reference's seeds")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every run (e.g. steps=50)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``scripts/collapse_lab.py``: the runs (unless --report-only), then the report (unless --run-only)."""
    args = parse_args(argv)
    if not args.report_only:
        run_all(args)
    if not args.run_only:
        print(write_report(args))
    return 0
