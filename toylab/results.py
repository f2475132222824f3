"""The toy lab's tables: each finished run summarized by the stated criteria, each method paired with its
experiment's baseline at the same seeds (``toylab.stats``), and a replication's effects next to a reference lab's."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from toylab.experiments import COLLAPSE_RATIO, EXPERIMENTS, LENGTH_FLOOR
from toylab.stats import Arm, Paired, mean_ci, paired
from trainer.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def display(path: Path) -> str:
    """``path`` relative to the checkout when it is inside it (as the reports print it)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def read_jsonl(path: Path) -> list[dict]:
    """A run's metrics/eval/events rows; a file the run has not written (yet) has none."""
    return read_metrics(path) if path.exists() else []


def summarize(run: Path) -> dict | None:
    """A finished run's first and last held-out evaluation, judged by the criteria, with its per-problem results
    and its mean clipped share over training; None for a run without a finished ``lab.json``."""
    lab = json.loads((run / "lab.json").read_text()) if (run / "lab.json").exists() else None
    held_out = read_jsonl(run / "eval.jsonl")
    evals = [e for e in held_out if "problem_correct" in e]
    if lab is None or len(evals) < 2:
        return None
    rows = read_jsonl(run / "metrics.jsonl")
    clip = [r[k] for r in rows for k in ("clip_frac_seq", "clip_frac_token") if r.get(k) is not None]
    first, last = evals[0], evals[-1]
    return {
        "acc0": first["accuracy"],
        "acc": last["accuracy"],
        "tok0": first["tokens"],
        "tok": last["tokens"],
        "steps": held_out[-1]["after_steps"],
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
