"""``groupwise check-gpu``: its flags and the run of every check into one report."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

from app.check_gpu import ROOT


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command's flags (``app.cli`` builds its subcommand with them)."""
    p.add_argument("--dry-run", action="store_true", help="list the numbered steps and their commands; run nothing")
    p.add_argument("--out", default=str(ROOT / "runs" / "check-gpu" / "report.json"), help="the JSON report")
    p.add_argument("--work", default=None, help="logs, models, the run (default: beside --out, work/)")
    p.add_argument("--deadline", type=float, default=480.0, help="global time limit in seconds (default 8 min)")
    p.add_argument("--only", nargs="+", default=None, help="run only these checks (names from --dry-run)")
    p.add_argument("--skip", nargs="+", default=[], help="leave these checks out")
    p.add_argument("--train-steps", type=int, default=5, help="steps of the training run (the first is warm-up)")
    p.add_argument("--train-gpus", type=int, default=1, help="ranks of the training run (torchrun when > 1)")
    p.add_argument("--train-zero", type=int, default=3, choices=[2, 3], help="ZeRO stage of the training run")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak per GPU for the MFU")
    p.add_argument("--keep-work", action="store_true", help="keep the run's checkpoint (GBs) after the report")


def run(args: argparse.Namespace) -> int:
    """The chosen checks, one after the other, then the report: 0 all passed, 1 some failed, 2 bad input or
    no GPU (before anything is run or written)."""
    from app.check_gpu.plan import plan
    from app.check_gpu.report import dry_run, refusal

    args.work = args.work or str(Path(args.out).resolve().parent / "work")
    checks = plan(args)
    names = [c.name for c in checks]
    unknown = [n for n in (args.only or []) + args.skip if n not in names]
    if unknown:
        print(f"check-gpu: unknown check(s) {unknown}; choose from {names}", file=sys.stderr)
        return 2
    wanted = set(names if args.only is None else args.only)
    wanted |= {n for c in checks if c.name in wanted for n in c.needs}  # --only train builds its model too
    checks = [c for c in checks if c.name in wanted and c.name not in args.skip]
    if args.dry_run:
        print(dry_run(checks, args))
        return 0
    why = refusal()
    if why:
        print(why, file=sys.stderr)
        return 2
    return _run_checks(checks, args)


def _run_checks(checks: list, args: argparse.Namespace) -> int:
    from app.check_gpu.report import render, summarize
    from app.check_gpu.running import budgets, run_check

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "host": socket.gethostname(), "deadline_s": args.deadline}
    meta.update(out=str(args.out), work=str(work), argv=sys.argv[1:])
    print(f"check-gpu: {len(checks)} checks, global limit {args.deadline:.0f} s; logs in {work}/logs/", flush=True)
    budget = budgets(checks, args.deadline)
    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    for i, check in enumerate(checks):
        print(f"[{time.perf_counter() - t0:5.0f} s] {i + 1}/{len(checks)} {check.name}: {check.title}", flush=True)
        res = run_check(check, budget(i, time.perf_counter() - t0), work, results)
        results[check.name] = res
        print(f"         {res['status'].upper()} ({res['seconds']:.0f} s) {res['reason']}", flush=True)
    report = summarize(list(results.values()), {**meta, "total_s": round(time.perf_counter() - t0, 1)})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(render(report))
    return 0 if report["ok"] else 1
