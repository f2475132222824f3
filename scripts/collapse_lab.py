"""The collapse lab: every experiment of docs/toy-lab.md, several seeds each, then its tables and figures.

    python scripts/collapse_lab.py                      # all three experiments, seeds 0 1 2, two runs at a time
    python scripts/collapse_lab.py --only length --seeds 0 --jobs 1
    python scripts/collapse_lab.py --report-only        # tables and figures from the runs already there

Each run is ``groupwise train -c configs/lab/base.yaml -c configs/lab/<name>.yaml seed=S`` in
``RUNS/<name>-s<S>`` with one CPU thread (runs in parallel use a core each). A finished run (``lab.json``
written) is not run again and an interrupted one resumes from its checkpoint, so the lab can be stopped and
restarted. Outputs: ``OUT/lab-<experiment>.png`` (one line per seed, one colour per method) and
``OUT/lab-results.md`` (mean and spread over seeds; the collapse criterion is stated there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app.report import run_summary
from trainer.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
START = "builtin:toy-shortcut5"  # configs/lab/base.yaml's model.path
EXPERIMENTS = {
    "length": ["kimi_lp", "correct_lp", "grpo_lambda", "acoer"],
    "objectives": ["gspo", "luspo", "grpo", "dr_grpo"],
    "guard": ["kimi_lp", "guard"],  # the guarded run next to the same run unguarded
}
COLORS = {"kimi_lp": "C3", "correct_lp": "C1", "grpo_lambda": "C2", "acoer": "C0", "gspo": "C3", "luspo": "C0"}
COLORS.update({"grpo": "C7", "dr_grpo": "C2", "guard": "C4"})
# Decided before the first lab run (docs/toy-lab.md): a run has collapsed when its held-out accuracy at the end is
# more than COLLAPSE_DROP below its start; its length has collapsed when the end's mean is below LENGTH_FLOOR x start.
COLLAPSE_DROP = 0.20
LENGTH_FLOOR = 0.5


def read_jsonl(path: Path) -> list[dict]:
    """A run's metrics/eval/events rows; a file the run has not written (yet) has none."""
    return read_metrics(path) if path.exists() else []


def run_one(name: str, seed: int, runs: Path, extra: list[str]) -> tuple[str, int, float]:
    """Train one (method, seed); returns its directory name, exit status and minutes."""
    run = runs / f"{name}-s{seed}"
    if (run / "lab.json").exists():
        return run.name, json.loads((run / "lab.json").read_text())["status"], 0.0
    cmd = [str(Path(sys.executable).with_name("groupwise")), "train", "-c", str(ROOT / "configs/lab/base.yaml")]
    cmd += ["-c", str(ROOT / f"configs/lab/{name}.yaml"), f"seed={seed}", f"run_dir={run}", "resume=auto", *extra]
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
    return run.name, status, minutes


def summarize(run: Path) -> dict | None:
    """The run's first and last held-out evaluation (``app.report.run_summary``), judged by the criteria."""
    s = run_summary(run)
    if s is None or len(s["history"]) < 2:
        return None
    events = read_jsonl(run / "events.jsonl")
    lab = json.loads((run / "lab.json").read_text()) if (run / "lab.json").exists() else {}
    return {
        "acc0": s["acc_before"],
        "acc": s["acc_after"],
        "acc_min": min(acc for _, acc, _ in s["history"]),
        "tok0": s["tokens_before"],
        "tok": s["tokens_after"],
        "steps": s["steps"],
        "collapsed": s["acc_after"] < s["acc_before"] - COLLAPSE_DROP,
        "length_collapsed": s["tokens_after"] < LENGTH_FLOOR * s["tokens_before"],
        "collapse_events": sum(e["event"] == "collapse" for e in events),
        "rollbacks": sum(e["event"] == "rollback" for e in events),
        "halted": lab.get("status") == 3,
        "minutes": lab.get("minutes"),
    }


def mean_sd(xs: list[float], scale: float = 1.0, fmt: str = ".1f") -> str:
    if not xs:
        return "-"
    m = statistics.mean(xs) * scale
    sd = statistics.stdev(xs) * scale if len(xs) > 1 else 0.0
    return f"{m:{fmt}} ± {sd:{fmt}}"


def table(experiment: str, runs: Path, seeds: list[int]) -> str:
    lines = [
        f"### {experiment}",
        "",
        "| method | seeds | accuracy start | accuracy end | lowest accuracy | tokens start | tokens end "
        "| collapsed (acc) | collapsed (length) | guard events | per seed: accuracy end / tokens end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in EXPERIMENTS[experiment]:
        rows = [(s, summarize(runs / f"{name}-s{s}")) for s in seeds]
        got = [r for _, r in rows if r]
        if not got:
            lines.append(f"| {name} | 0 | | | | | | | | | (not run) |")
            continue
        per_seed = ", ".join(
            f"s{s}: {100 * r['acc']:.0f}% / {r['tok']:.0f}" + (f" (ended at {r['steps']})" if r["halted"] else "")
            for s, r in rows
            if r
        )
        events = sum(r["collapse_events"] for r in got)
        lines.append(
            f"| {name} | {len(got)} | {mean_sd([r['acc0'] for r in got], 100)}% "
            f"| {mean_sd([r['acc'] for r in got], 100)}% "
            f"| {mean_sd([r['acc_min'] for r in got], 100)}% | {mean_sd([r['tok0'] for r in got])} "
            f"| {mean_sd([r['tok'] for r in got])} | {sum(r['collapsed'] for r in got)}/{len(got)} "
            f"| {sum(r['length_collapsed'] for r in got)}/{len(got)} "
            f"| {events} ({sum(r['rollbacks'] for r in got)} rollbacks) | {per_seed} |"
        )
    return "\n".join(lines)


def smooth(xs: list[float], k: int = 9) -> list[float]:
    out = []
    for i in range(len(xs)):
        w = xs[max(0, i - k + 1) : i + 1]
        out.append(sum(w) / len(w))
    return out


def figure(experiment: str, runs: Path, seeds: list[int], out: Path) -> Path:
    """Four panels: training accuracy and length (moving mean of 9 steps), held-out accuracy and tokens;
    one line per seed, one colour per method; steps undone by a rollback dotted, guard events marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    panels = [("accuracy", "training accuracy"), ("length/mean", "training length (tokens)")]
    for name in EXPERIMENTS[experiment]:
        color = COLORS.get(name, None)
        for i, seed in enumerate(seeds):
            run = runs / f"{name}-s{seed}"
            label = name if i == 0 else None
            for (key, _), ax in zip(panels, axes[0]):
                for path, style in (("metrics.discarded.jsonl", ":"), ("metrics.jsonl", "-")):
                    rows = [r for r in read_jsonl(run / path) if r.get(key) is not None]
                    if rows:
                        xs = [r["step"] for r in rows]
                        ax.plot(xs, smooth([r[key] for r in rows]), style, color=color, lw=1.2, alpha=0.8,
                                label=label if style == "-" else None)  # fmt: skip
            evals = read_jsonl(run / "eval.jsonl")
            for key, ax in (("accuracy", axes[1][0]), ("tokens", axes[1][1])):
                if evals:
                    ax.plot([e["after_steps"] for e in evals], [e[key] for e in evals], "o-", color=color, ms=3,
                            lw=1.2, alpha=0.8, label=label)  # fmt: skip
            for e in read_jsonl(run / "events.jsonl"):
                if e["event"] in ("collapse", "rollback"):
                    for ax in axes.flat:
                        ax.axvline(e["step"], color=color, lw=0.8, ls="--" if e["event"] == "collapse" else "-.")
    titles = ["training accuracy", "training length (tokens)", "held-out accuracy", "held-out tokens"]
    for ax, title in zip(axes.flat, titles):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"collapse lab: {experiment} (seeds {', '.join(map(str, seeds))}; one line per seed)")
    fig.tight_layout()
    path = out / f"lab-{experiment}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(EXPERIMENTS), default=list(EXPERIMENTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)), help="runs at a time")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "lab")
    p.add_argument("--out", type=Path, default=ROOT / "docs", help="where lab-*.png and lab-results.md go")
    p.add_argument("--report-only", action="store_true", help="tables and figures from existing runs only")
    p.add_argument(
        "--probe", type=int, default=200, help="held-out problems for the starting model's profile (0: skip)"
    )
    p.add_argument("--methods", nargs="+", help="only these methods of the chosen experiments (default: all)")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every run (e.g. steps=50)")
    args = p.parse_args()
    todo = [(n, s) for exp in args.only for n in EXPERIMENTS[exp] for s in args.seeds if n in (args.methods or [n])]
    if not args.report_only:
        print(f"{len(todo)} runs, {args.jobs} at a time, in {args.runs}", flush=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_one, n, s, args.runs, args.overrides) for n, s in todo]
            for i, f in enumerate(futures, 1):
                run, status, minutes = f.result()
                print(f"[{i}/{len(todo)}] {run}: exit {status} ({minutes:.1f} min)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    parts = [
        f"Collapse: held-out accuracy at the end more than {100 * COLLAPSE_DROP:.0f} points below the start. "
        f"Length collapse: mean tokens at the end below {LENGTH_FLOOR:g} x the start. Mean ± sd over seeds."
    ]
    if args.probe:
        from toylab.probe import profile, profile_table

        model = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("model.path=")), START)
        parts.append(f"### the starting model, {model} (held-out, 4 samples per problem)\n\n"
                     + profile_table(profile(model, args.probe)))  # fmt: skip
    for exp in args.only:
        parts.append(table(exp, args.runs, args.seeds))
        print(f"figure: {figure(exp, args.runs, args.seeds, args.out)}")
    (args.out / "lab-results.md").write_text("\n\n".join(parts) + "\n")
    print("\n\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
