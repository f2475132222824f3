"""The toy lab: every experiment of docs/toy-lab.md, several seeds each, then its tables and figures.

    python scripts/collapse_lab.py                        # both experiments, seeds 0-4, two runs at a time
    python scripts/collapse_lab.py --only offpolicy --seeds 0 1 --jobs 1
    python scripts/collapse_lab.py --report-only          # tables and figures from the runs already there

Each run is ``groupwise train -c configs/lab/base.yaml [-c configs/lab/<experiment>.yaml] -c
configs/lab/<method>.yaml seed=S`` in ``RUNS/<experiment>/<method>-s<S>`` with one CPU thread (runs in
parallel use a core each). Runs go seed by seed, so a lab stopped early has complete paired sets for the first
seeds. A finished run (``lab.json`` written) is not run again and an interrupted one resumes from its
checkpoint. Outputs: ``OUT/lab-<experiment>.png`` and ``OUT/lab-results.md``: each method against its
experiment's baseline at the same seeds, with two-stage bootstrap intervals (``app.lab_stats``).
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
from dataclasses import dataclass
from pathlib import Path

import torch

from app.lab_stats import Arm, Paired, mean_ci, paired
from app.report import run_summary
from trainer.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Experiment:
    configs: tuple[str, ...]  # configs/lab/ files after base.yaml (the method's file comes last)
    baseline: str  # every other method is reported as a paired difference from this one
    methods: tuple[str, ...]  # headline methods: every seed
    controls: tuple[str, ...] = ()  # controls: the first CONTROL_SEEDS seeds only
    model: str = "builtin:toy-shortcut5"


NEW_METHODS = ("l1_exact", "l1_max", "shorterbetter", "thinkprune", "gfpo", "dler")
EXPERIMENTS = {
    "offpolicy": Experiment(
        ("offpolicy.yaml",), "gspo", ("gspo", "luspo"), ("grpo", "dr_grpo", "dapo"), "builtin:toy-lengthpays"
    ),
    # fourth round (issue 36; predictions committed before its runs): the newer methods in `length` and `reasoner`
    "length": Experiment((), "grpo", ("grpo", "correct_lp", "grpo_lambda", "acoer", "kimi_lp", *NEW_METHODS)),
    # added before its first run, once the shipped toy-shortcut5 measured 81.8% (worked answers 96-100% right):
    # Kimi's penalty needs groups of mostly wrong worked answers to start its loop; toy-lengthpays has them
    # kimi_lp_x2 added after the second edition (its predictions committed before its runs): Kimi's penalty at
    # twice the weight, a collapse deliberate enough to cross the onset line, so the guard's detection has cases
    "collapse": Experiment(
        ("collapse.yaml",), "grpo", ("grpo", "kimi_lp", "kimi_lp_x2"), model="builtin:toy-lengthpays"
    ),
    # added in the third round (predictions committed before its runs): the length schemes from a second model
    "reasoner": Experiment(
        ("reasoner.yaml",),
        "grpo",
        ("grpo", "correct_lp", "grpo_lambda", "acoer", "kimi_lp_x2", *NEW_METHODS),
        model="builtin:toy-reasoner",
    ),
}
CONTROL_SEEDS = 3
COLORS = {"kimi_lp": "C3", "kimi_lp_x2": "C5", "correct_lp": "C1", "grpo_lambda": "C2", "acoer": "C0"}
COLORS.update({"l1_exact": "C8", "l1_max": "C9", "shorterbetter": "C6", "thinkprune": "tab:olive"})
COLORS.update({"gfpo": "tab:brown", "dler": "tab:pink"})
COLORS.update({"gspo": "C3", "luspo": "C0", "grpo": "C7", "dr_grpo": "C2", "dapo": "C4"})
# Decided before the second edition's first run (docs/toy-lab.md): a run has collapsed when its final held-out
# accuracy is below COLLAPSE_RATIO x its start; its length has collapsed when its final mean tokens are below
# LENGTH_FLOOR x the start.
COLLAPSE_RATIO = 0.5
LENGTH_FLOOR = 0.5


def kernels() -> str:
    """The instruction set the runs' kernels used: ATen's dispatch level and any oneDNN/MKL cap in the environment
    (``make lab-avx2`` caps all three to AVX2 to re-run the lab as an AVX2 machine would)."""
    caps = [f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if os.environ.get(k)]
    return f"CPU kernels {torch.backends.cpu.get_cpu_capability()}" + (f" ({', '.join(caps)})" if caps else "")


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def methods_of(exp: Experiment, seed: int) -> tuple[str, ...]:
    return exp.methods + (exp.controls if seed < CONTROL_SEEDS else ())


def read_jsonl(path: Path) -> list[dict]:
    """A run's metrics/eval/events rows; a file the run has not written (yet) has none."""
    return read_metrics(path) if path.exists() else []


def run_one(exp: str, name: str, seed: int, runs: Path, extra: list[str]) -> tuple[str, int, float]:
    """Train one (experiment, method, seed); returns its directory name, exit status and minutes."""
    run = runs / exp / f"{name}-s{seed}"
    if (run / "lab.json").exists():
        return f"{exp}/{run.name}", json.loads((run / "lab.json").read_text())["status"], 0.0
    configs = ["base.yaml", *EXPERIMENTS[exp].configs, f"{name}.yaml"]
    cmd = [str(Path(sys.executable).with_name("groupwise")), "train"]
    for c in configs:
        cmd += ["-c", str(ROOT / "configs" / "lab" / c)]
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


def summarize(run: Path) -> dict | None:
    """A finished run's first and last held-out evaluation, judged by the criteria, with its per-problem results
    and its mean clipped share over training; None for a run without a finished ``lab.json``."""
    s = run_summary(run)
    lab = json.loads((run / "lab.json").read_text()) if (run / "lab.json").exists() else None
    evals = [e for e in read_jsonl(run / "eval.jsonl") if "problem_correct" in e]
    if s is None or lab is None or len(evals) < 2:
        return None
    rows = read_jsonl(run / "metrics.jsonl")
    clip = [r[k] for r in rows for k in ("clip_frac_seq", "clip_frac_token") if r.get(k) is not None]
    first, last = evals[0], evals[-1]
    return {
        "acc0": first["accuracy"],
        "acc": last["accuracy"],
        "tok0": first["tokens"],
        "tok": last["tokens"],
        "steps": s["steps"],
        "samples": last["samples"],
        "problem_acc": [c / last["samples"] for c in last["problem_correct"]],
        "problem_tok": last["problem_tokens"],
        "clip": statistics.mean(clip) if clip else None,
        "collapsed": last["accuracy"] < COLLAPSE_RATIO * first["accuracy"],
        "length_collapsed": last["tokens"] < LENGTH_FLOOR * first["tokens"],
        "halted": lab.get("status") == 3,
        "minutes": lab.get("minutes"),
    }


def arm(results: list[dict]) -> Arm:
    return Arm(torch.tensor([r["problem_acc"] for r in results]), torch.tensor([r["problem_tok"] for r in results]))


Runs = dict[str, dict[int, dict | None]]  # method -> seed -> ``summarize`` (None: not finished)


def collect(experiment: str, runs: Path, seeds: list[int]) -> Runs:
    """Every (method, seed) of an experiment, summarized once for the table and the replication."""
    exp = EXPERIMENTS[experiment]
    return {m: {s: summarize(runs / experiment / f"{m}-s{s}") for s in seeds} for m in exp.methods + exp.controls}


def against_baseline(experiment: str, got: Runs) -> dict[str, Paired | None]:
    """Each non-baseline method minus the baseline at the seeds both finished (None: no such seed)."""
    base = got[EXPERIMENTS[experiment].baseline]
    out = {}
    for m, by_seed in got.items():
        if m == EXPERIMENTS[experiment].baseline:
            continue
        both = [s for s, r in by_seed.items() if r is not None and base.get(s) is not None]
        out[m] = paired(arm([by_seed[s] for s in both]), arm([base[s] for s in both])) if both else None
    return out


def mean_clip(results: list[dict]) -> float | None:
    clip = [r["clip"] for r in results if r["clip"] is not None]
    return statistics.mean(clip) if clip else None


def table(experiment: str, got: Runs, prs: dict[str, Paired | None]) -> str:
    """One row per method: start, end (95% interval over seeds and problems), the paired difference from the
    baseline at the seeds both finished (``prs``, from ``against_baseline``), the criteria, and each seed's end."""
    exp = EXPERIMENTS[experiment]
    lines = [
        f"### {experiment}: against `{exp.baseline}` ({exp.model}; configs/lab/base.yaml"
        + "".join(f", {c}" for c in exp.configs)
        + ")",
        "",
        f"Differences are the method minus `{exp.baseline}` at the same seeds (paired), at the end of training; "
        "95% intervals from 10,000 two-stage bootstrap resamples (seeds, then held-out problems).",
        "",
        "| method | seeds | accuracy start | accuracy end [95% CI] | tokens start | tokens end | "
        f"Δ accuracy vs {exp.baseline} (points) | Δ tokens vs {exp.baseline} | clipped share | collapsed "
        "(acc / length) | per seed: accuracy end / tokens end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m, by_seed in got.items():
        done = [(s, r) for s, r in by_seed.items() if r is not None]
        if not done:
            lines.append(f"| {m} | 0 | | | | | | | | | (not run) |")
            continue
        rs = [r for _, r in done]
        acc, lo, hi = mean_ci(arm(rs).accuracy)
        if m == exp.baseline:
            d_acc, d_tok = "(baseline)", "(baseline)"
        elif (pr := prs[m]) is not None:
            d_acc, d_tok = pr.cells()
            d_acc += f" (n={pr.seeds})" if pr.seeds != len(done) else ""
        else:
            d_acc, d_tok = "(no paired seed)", ""
        clip = mean_clip(rs)
        per_seed = ", ".join(f"s{s}: {100 * r['acc']:.1f}% / {r['tok']:.1f}" for s, r in done)
        lines.append(
            f"| {m} | {len(rs)} | {100 * statistics.mean(r['acc0'] for r in rs):.1f}% "
            f"| {100 * acc:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] | {statistics.mean(r['tok0'] for r in rs):.1f} "
            f"| {statistics.mean(r['tok'] for r in rs):.1f} | {d_acc} | {d_tok} "
            f"| {f'{clip:.3f}' if clip is not None else '-'} "
            f"| {sum(r['collapsed'] for r in rs)}/{len(rs)} / {sum(r['length_collapsed'] for r in rs)}/{len(rs)} "
            f"| {per_seed} |"
        )
    minutes = [r["minutes"] for by_seed in got.values() for r in by_seed.values() if r and r["minutes"]]
    if minutes:
        lines += ["", f"{len(minutes)} runs, {statistics.mean(minutes):.1f} minutes each on average "
                  f"({sum(minutes) / 60:.1f} core-hours in all, runs on one thread each)."]  # fmt: skip
    return "\n".join(lines)


def agreement(here: tuple[float, float], ref: tuple[float, float]) -> str:
    """Does an effect hold in a replication? Judged on the two 95% intervals' signs."""
    sign = [0 if lo <= 0 <= hi else (1 if lo > 0 else -1) for lo, hi in (here, ref)]
    if sign[0] == sign[1]:
        return "holds" if sign[0] else "no effect in either"
    if sign[0] and sign[1]:
        return "**reversed**"
    return "not shown here" if sign[1] else "**new here**"


def replication(experiment: str, here: tuple[Runs, dict[str, Paired | None]], ref: Path, ref_seeds: list[int]) -> str:
    """The experiment's effects here (``collect`` and ``against_baseline``, as for the table) next to a reference
    lab's (other seeds, other kernels or machine)."""
    got, prs = here
    ref_got = collect(experiment, ref, ref_seeds)
    ref_prs = against_baseline(experiment, ref_got)
    base = EXPERIMENTS[experiment].baseline
    lines = [
        f"### {experiment}: the effects here and in the reference lab (`{display(ref)}`, seeds "
        f"{', '.join(map(str, ref_seeds))})",
        "",
        f"Each cell: method minus `{base}`, paired by seed, with its 95% interval (n: seeds here / reference). "
        "Verdict per measure: holds (both intervals exclude 0 on the same side), no effect in either (both "
        "include 0), not shown here (only the reference's excludes 0), new here, reversed.",
        "",
        "| method | n | Δ accuracy here | Δ accuracy reference | verdict | Δ tokens here | Δ tokens reference | "
        "verdict | clipped share here / reference |",
        "|---|---:|---:|---:|---|---:|---:|---|---:|",
    ]
    for m, pr in prs.items():
        rp = ref_prs.get(m)
        if pr is None or rp is None:
            lines.append(f"| {m} | {pr.seeds if pr else 0} / {rp.seeds if rp else 0} | | | (not run in both) | | | | |")
            continue
        (a, t), (ra, rt) = pr.cells(), rp.cells()
        clip = [mean_clip([r for r in g[m].values() if r is not None]) for g in (got, ref_got)]
        clips = " / ".join(f"{c:.3f}" if c is not None else "-" for c in clip)
        lines.append(
            f"| {m} | {pr.seeds} / {rp.seeds} | {a} | {ra} | {agreement(pr.d_accuracy_ci, rp.d_accuracy_ci)} "
            f"| {t} | {rt} | {agreement(pr.d_tokens_pct_ci, rp.d_tokens_pct_ci)} | {clips} |"
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
    exp = EXPERIMENTS[experiment]
    for name in exp.methods + exp.controls:
        color = COLORS.get(name, None)
        for i, seed in enumerate(seeds):
            run = runs / experiment / f"{name}-s{seed}"
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
    fig.suptitle(f"toy lab: {experiment} (seeds {', '.join(map(str, seeds))}; one line per seed)")
    fig.tight_layout()
    path = out / f"lab-{experiment}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(EXPERIMENTS), default=list(EXPERIMENTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)), help="runs at a time")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "lab")
    p.add_argument("--out", type=Path, default=ROOT / "docs", help="where lab-*.png and lab-results.md go")
    p.add_argument("--report-only", action="store_true", help="tables and figures from existing runs only")
    p.add_argument(
        "--probe", type=int, default=200, help="held-out problems for the starting models' profiles (0: skip)"
    )
    p.add_argument("--methods", nargs="+", help="only these methods of the chosen experiments (default: all)")
    p.add_argument("--reference", type=Path, help="a lab's runs to compare with (e.g. runs/lab from runs/lab-avx2)")
    p.add_argument("--reference-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="the reference's seeds")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every run (e.g. steps=50)")
    args = p.parse_args()
    todo = [(e, m, s) for s in args.seeds for e in args.only for m in methods_of(EXPERIMENTS[e], s)]
    todo = [(e, m, s) for e, m, s in todo if m in (args.methods or [m])]
    if not args.report_only:
        print(f"{len(todo)} runs, {args.jobs} at a time, in {args.runs}", flush=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_one, e, m, s, args.runs, args.overrides) for e, m, s in todo]
            for i, f in enumerate(futures, 1):
                run, status, minutes = f.result()
                print(f"[{i}/{len(todo)}] {run}: exit {status} ({minutes:.1f} min)", flush=True)
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
        prs = against_baseline(exp, got)
        parts.append(table(exp, got, prs))
        if args.reference:
            parts.append(replication(exp, (got, prs), args.reference, args.reference_seeds))
        print(f"figure: {figure(exp, args.runs, args.seeds, args.out)}")
    (args.out / "lab-results.md").write_text("\n\n".join(parts) + "\n")
    print("\n\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
