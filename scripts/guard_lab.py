"""The collapse guard's accuracy rule, calibrated on some lab seeds and validated on others (issue #26).

    python scripts/guard_lab.py --runs runs/lab/length runs/lab/collapse --calibrate 0 1 --validate 2 3 4
    python scripts/guard_lab.py --runs runs/lab/length --out /tmp/guard.md      # one directory, default seeds

Reads the lab's run directories (``<runs>/<method>-s<seed>/``: ``groups.jsonl``, the per-prompt outcomes of each
step written by ``trainer.lifecycle.write_groups``, from which the step's accuracy and its per-prompt spread are
computed; ``events.jsonl`` for rollbacks; ``lab.json``, written when a run finished) and
replays accuracy rules offline, step by step, through ``trainer.collapse.CollapseGuard`` itself (the code the trainer
runs; in ``warn`` mode, so a run goes on after an alarm):

- ``relative p2``: the rule before issue #26 with the config's defaults (accuracy below max(median - 0.3, median x
  0.5) of the last 20 steps, 2 steps in a row); ``relative p3``: the same with patience 3 (configs/lab/guard.yaml);
- ``cusum default``: ``AccuracyCusum`` with GuardConfig's k, h, tau; ``cusum calibrated``: k, h, tau chosen on the
  calibration seeds by the rule in ``choose`` below.

Each at the lab's batch (the logged per-prompt outcomes as they are: 8 prompts x 16 samples) and at B = 128 prompts,
simulated: for each step t, 128 prompt outcomes drawn with replacement from the logged prompts of steps t-W..t+W of
the same run (W = ``SIM_W`` = 8: the pool, 8 x 17 = 136 prompts, is at least as large as the batch, so its own
noise does not dominate; seeded, ``--replicates`` draws). Every figure in the output is computed
here; the markdown section (``--out``) and its JSON (``--json``) are written by this script only.

Everything the verdict depends on is stated below, in code, before any lab result was looked at: which runs are
healthy, the collapse onset, what counts as a false alarm and a detection, the calibration target and choice, and
when a rollback (rather than a warning) is the justified default action.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trainer.collapse import CollapseGuard, cusum_arl0  # noqa: E402
from trainer.config import GuardConfig  # noqa: E402

# ----------------------------------------------------------------------------- definitions (fixed in advance)
# the lab's collapsing settings (kimi_lp_x2 added after the second edition); every other method is healthy (unless its
# run collapsed by the onset definition below: then it is neither, and left out with a note)
COLLAPSE_METHODS = ("kimi_lp", "kimi_lp_x2")
ROLLBACK_METHODS = ("guard",)  # runs whose own guard rolled back are neither healthy nor a plain collapse
ONSET_SPAN = 9  # onset: centred moving mean of training accuracy over this many steps ...
ONSET_BASE = 20  # ... falls below ONSET_FRACTION x its mean over the first ONSET_BASE steps ...
ONSET_FRACTION = 0.5  # ... and stays below it to the end of the run; the first such step is the onset
# Changed after the first real collapse runs (docs/toy-lab.md says so): Kimi's collapse there is a slow slide from
# the first steps, and its onset by the definition above comes late (accuracy at half its start), so counting a
# collapse run's steps before the onset as healthy made every alarm during the slide a "false alarm". Now a collapse
# run contributes no healthy steps; its detection delay is its first alarm minus the onset (negative: during the
# slide, before accuracy is down to half). False alarms are counted on healthy runs only.
SIM_B = 128  # the "real" batch, simulated
SIM_W = 8  # ... from the logged prompts of steps t-SIM_W..t+SIM_W of the same run (8 x 17 = 136 >= 128 prompts)
TARGET = 1.0  # at most this many false alarms per 1,000 healthy steps
MIN_ARL0 = 10_000  # design floor: Siegmund's in-control run length on N(0,1) scores, a 10x margin over TARGET
GRID_K = (0.5, 0.75, 1.0, 1.25, 1.5)
GRID_H = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
GRID_TAU = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1)
MAX_DELAY_FOR_ROLLBACK = 25  # a rollback returns to the last checkpoint (every 25 steps in the lab)
# docs/toy-lab.md, prediction 7 (written before the lab's runs): the calibrated CUSUM raises at most 2 false alarms
# per 1,000 healthy steps on the validation seeds at 8 prompts a step (fewer at 128) and detects every validation
# collapse within 15 steps of its onset (earlier at 128 prompts)
PREDICTED_RATE = 2.0
PREDICTED_DELAY = 15


def onset(accuracy: list[float], fraction: float = ONSET_FRACTION) -> int | None:
    """The collapse onset of one run (None: no collapse by this definition; ``fraction``: --onset-fraction)."""
    n = len(accuracy)
    if n < ONSET_BASE:
        return None
    base = statistics.mean(accuracy[:ONSET_BASE])
    half = ONSET_SPAN // 2
    smooth = [statistics.mean(accuracy[max(0, t - half) : t + half + 1]) for t in range(n)]
    below = [s < fraction * base for s in smooth]
    if not below[-1]:
        return None
    t = n - 1
    while t > 0 and below[t - 1]:
        t -= 1
    return t


def poisson_ci(x: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval for a Poisson mean after observing ``x`` events."""
    a = (1 - level) / 2

    def cdf(k: int, lam: float) -> float:  # P(X <= k)
        if lam == 0:
            return 1.0
        term = total = math.exp(-lam)
        for i in range(1, k + 1):
            term *= lam / i
            total += term
        return total

    def bisect(below, hi: float) -> float:  # the lam where the monotone ``below(lam)`` turns False
        lo = 0.0
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if below(mid) else (lo, mid)
        return (lo + hi) / 2

    top = 10.0 * x + 20.0
    upper = bisect(lambda lam: cdf(x, lam) > a, top)  # P(X <= x; upper) = a
    lower = 0.0 if x == 0 else bisect(lambda lam: 1 - cdf(x - 1, lam) < a, top)  # P(X >= x; lower) = a
    return lower, upper


# ----------------------------------------------------------------------------- runs
@dataclass
class Run:
    name: str
    method: str
    seed: int
    correct: list[list[int]]  # per step: right answers of each prompt
    G: list[int]  # per step: samples per prompt
    kind: str = ""  # healthy | collapse
    onset: int | None = None
    series: dict[str, list[list[dict]]] = field(default_factory=dict)  # batch label -> replicates -> step rows


def step_row(correct: np.ndarray, G: int) -> dict:
    p = correct / G
    return {
        "accuracy": float(p.mean()),
        "accuracy/prompt_sd": float(p.std(ddof=1)) if p.size > 1 else float("nan"),
        "prompts": float(p.size),
    }


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return rows


def load_runs(
    runs_dir: Path, seeds: set[int], partial: bool, prefix: str = "", fraction: float = ONSET_FRACTION
) -> tuple[list[Run], list[str]]:
    """The usable runs of ``seeds`` and a note for each run directory left out or cut short (and why).
    ``prefix`` goes before each run's name (several --runs directories can hold the same names); ``fraction``:
    the onset's fraction of the start."""
    runs, notes = [], []
    for d in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        m = re.fullmatch(r"(.+)-s(\d+)", d.name)
        name = prefix + d.name
        if not m or int(m.group(2)) not in seeds:
            continue
        method, seed = m.group(1), int(m.group(2))
        if not (d / "lab.json").exists() and not partial:
            notes.append(f"{name}: not finished (no lab.json), skipped")
            continue
        events = read_jsonl(d / "events.jsonl")
        if method in ROLLBACK_METHODS or any(e.get("event") == "rollback" for e in events):
            notes.append(f"{name}: its own guard rolled back (the logged steps are not one run's history), left out")
            continue
        groups = sorted(read_jsonl(d / "groups.jsonl"), key=lambda r: r["step"])
        if not groups:
            notes.append(f"{name}: no groups.jsonl (per-prompt outcomes; written since issue #26), left out")
            continue
        steps = [g["step"] for g in groups]
        if steps != list(range(len(steps))):
            notes.append(f"{name}: groups.jsonl steps are not 0..{len(steps) - 1} in order, left out")
            continue
        run = Run(name, method, seed, [g["correct"] for g in groups], [g["G"] for g in groups])
        acc = [sum(c) / (len(c) * g) for c, g in zip(run.correct, run.G)]
        if method in COLLAPSE_METHODS:
            run.kind, run.onset = "collapse", onset(acc, fraction)
            if run.onset is None:
                notes.append(f"{name}: a collapse method without an onset by the definition, left out")
                continue
        elif (at := onset(acc, fraction)) is not None:
            notes.append(f"{name}: collapsed by the onset definition (step {at}) though healthy by method, left out")
            continue
        else:
            run.kind = "healthy"
        if not (d / "lab.json").exists():
            notes.append(f"{name}: not finished, used with its {len(steps)} steps (--partial)")
        runs.append(run)
    return runs, notes


def build_series(run: Run, replicates: int) -> None:
    """The guard's input rows: as logged (B as run) and at SIM_B prompts, ``replicates`` seeded draws each."""
    run.series["lab"] = [[step_row(np.asarray(c, dtype=float), g) for c, g in zip(run.correct, run.G)]]
    n = len(run.correct)
    sims = []
    for r in range(replicates):
        rng = np.random.default_rng([zlib.crc32(run.name.encode()), r, SIM_B, SIM_W])
        rows = []
        for t in range(n):
            lo, hi = max(0, t - SIM_W), min(n, t + SIM_W + 1)
            pool = np.asarray([k / run.G[s] for s in range(lo, hi) for k in run.correct[s]])
            p = pool[rng.integers(0, pool.size, SIM_B)]
            rows.append(step_row(p, 1))
        sims.append(rows)
    run.series[f"B={SIM_B}"] = sims


# ----------------------------------------------------------------------------- replay
def replay(rows: list[dict], rule: dict) -> tuple[list[int], list[tuple[int, float]]]:
    """Alarm steps of one rule over one run's rows (warn mode), and the CUSUM's (step, score) pairs."""
    guard = CollapseGuard(**rule)
    alarms, scores = [], []
    for t, row in enumerate(rows):
        fired = guard.observe(row)
        if guard.accuracy_rule == "cusum" and guard.cusum.last_z is not None:
            scores.append((t, guard.cusum.last_z))
            guard.cusum.last_z = None
        if fired:
            alarms.append(t)
    return alarms, scores


@dataclass
class Figures:
    healthy_steps: int = 0
    false_alarms: int = 0
    delays: dict[str, int | None] = field(default_factory=dict)  # collapse run -> delay (None: missed)
    scores: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return 1000 * self.false_alarms / self.healthy_steps if self.healthy_steps else float("nan")

    @property
    def detected(self) -> int:
        return sum(d is not None for d in self.delays.values())

    def summary(self) -> dict:
        lo, hi = poisson_ci(self.false_alarms)
        got = [d for d in self.delays.values() if d is not None]
        n = self.healthy_steps or 1
        return {
            "healthy_steps": self.healthy_steps,
            "false_alarms": self.false_alarms,
            "per_1000": self.rate,
            "per_1000_ci95": [1000 * lo / n, 1000 * hi / n],
            "collapses": len(self.delays),
            "detected": self.detected,
            "delays": self.delays,
            "median_delay": statistics.median(got) if got else None,
            "max_delay": max(got) if got else None,
            "score_mean": statistics.mean(self.scores) if len(self.scores) > 1 else None,
            "score_sd": statistics.stdev(self.scores) if len(self.scores) > 1 else None,
        }


def evaluate(runs: list[Run], rule: dict, batch: str) -> Figures:
    """False alarms on healthy steps and the detection delay of each collapse, for one rule at one batch."""
    fig = Figures()
    for run in runs:
        for r, rows in enumerate(run.series[batch]):
            alarms, scores = replay(rows, rule)
            tag = run.name if len(run.series[batch]) == 1 else f"{run.name}#{r}"
            if run.kind == "healthy":
                fig.healthy_steps += len(rows)
                fig.false_alarms += len(alarms)
                fig.scores += [z for _, z in scores]
            else:
                fig.delays[tag] = alarms[0] - run.onset if alarms else None
    return fig


def relative(patience: int) -> dict:
    return {"accuracy_rule": "relative", "patience": patience}


def cusum(k: float, h: float, tau: float) -> dict:
    return {"accuracy_rule": "cusum", "cusum_k": k, "cusum_h": h, "cusum_tau": tau}


def choose(runs: list[Run], batches: list[str]) -> tuple[dict | None, list[dict]]:
    """Calibration, on the calibration seeds only. Among the grid's (k, h, tau) whose design run length
    (Siegmund, N(0,1) scores) is at least MIN_ARL0: keep those with at most TARGET false alarms per 1,000
    healthy steps and every collapse detected, at every batch; choose the smallest median delay at the lab's
    batch, then at the larger batch, then the largest h, the smallest k and the largest tau (the more
    conservative). Returns the choice (None if nothing qualifies) and every candidate's figures."""
    table = []
    for k in GRID_K:
        for h in GRID_H:
            if cusum_arl0(k, h) < MIN_ARL0:
                continue
            for tau in GRID_TAU:
                rule = cusum(k, h, tau)
                figs = {b: evaluate(runs, rule, b).summary() for b in batches}
                ok = all(f["per_1000"] <= TARGET and f["detected"] == f["collapses"] for f in figs.values())
                table.append({"rule": rule, "arl0": cusum_arl0(k, h), "ok": ok, "figures": figs})
    ok = [c for c in table if c["ok"]]
    if not ok:
        return None, table

    def key(c):
        delays = [c["figures"][b]["median_delay"] for b in batches]
        r = c["rule"]
        return (*[d if d is not None else -1e9 for d in delays], -r["cusum_h"], r["cusum_k"], -r["cusum_tau"])

    return min(ok, key=key)["rule"], table


def decide(validated: dict[str, dict]) -> tuple[str, str]:
    """The default ``guard.collapse_action`` from the validated figures of the default rule. A rollback
    undoes steps and halves the learning rate and length weight without asking, so it is the default only if,
    at every batch, the 95% upper bound on false alarms per 1,000 healthy steps is at most TARGET and every
    validation collapse was detected within MAX_DELAY_FOR_ROLLBACK steps (the rollback lands on a checkpoint
    from before the collapse). Otherwise warn."""
    reasons = []
    for batch, f in validated.items():
        hi = f["per_1000_ci95"][1]
        if hi > TARGET:
            reasons.append(
                f"at {batch} the 95% upper bound on false alarms is {hi:.2f} per 1,000 healthy steps (> {TARGET:g}; "
                f"{f['false_alarms']} in {f['healthy_steps']} steps: {math.ceil(3689 / TARGET)} alarm-free steps "
                "would be needed to show it)"
            )
        if f["collapses"] == 0:
            reasons.append(f"at {batch} there is no validation collapse to show detection")
        elif f["detected"] < f["collapses"] or (f["max_delay"] or 0) > MAX_DELAY_FOR_ROLLBACK:
            reasons.append(
                f"at {batch} {f['detected']}/{f['collapses']} collapses detected, longest delay {f['max_delay']}"
            )
    if reasons:
        return "warn", "; ".join(reasons)
    return "rollback", "false alarms shown below the target and every collapse caught in time, at every batch"


# ----------------------------------------------------------------------------- report
def prediction(validation: dict[str, dict]) -> str:
    """Prediction 7 of docs/toy-lab.md against the calibrated rule (the default rule if none was chosen)."""
    label = next((k for k in validation if k.startswith("cusum calibrated")), None) or next(
        k for k in validation if k.startswith("cusum default")
    )
    lab, big = validation[label]["lab"], validation[label][f"B={SIM_B}"]
    checks = [
        (
            f"<= {PREDICTED_RATE:g} false alarms per 1,000 healthy steps at the lab's batch",
            lab["per_1000"] <= PREDICTED_RATE,
        ),
        (f"fewer (or as few) at B={SIM_B}", big["per_1000"] <= lab["per_1000"]),
        (
            f"every validation collapse detected within {PREDICTED_DELAY} steps",
            lab["collapses"] > 0 and lab["detected"] == lab["collapses"] and lab["max_delay"] <= PREDICTED_DELAY,
        ),
        (
            f"earlier at B={SIM_B}",
            big["median_delay"] is not None
            and lab["median_delay"] is not None
            and big["median_delay"] <= lab["median_delay"],
        ),
    ]
    if lab["collapses"] == 0:
        checks = [*checks[:2], ("detection", None)]
    verdict = "; ".join(
        f"{text}: {'yes' if ok else 'no' if ok is False else 'no collapse to judge'}" for text, ok in checks
    )
    held = all(ok for _, ok in checks)
    outcome = (
        "Not judged: no validation collapse." if lab["collapses"] == 0 else "Confirmed." if held else "Not confirmed."
    )
    return f"**Prediction 7 of docs/toy-lab.md** (written before the runs), for {label}: {verdict}. {outcome}"


def fmt_delays(f: dict) -> str:
    parts = [f"{name}: {'missed' if d is None else f'{d:+d}'}" for name, d in f["delays"].items()]
    return ", ".join(parts) if parts else "-"


def report(args, runs, notes, chosen, table, results, decision) -> str:
    g = GuardConfig()
    cal = [r for r in runs if r.seed in args.calibrate]
    val = [r for r in runs if r.seed in args.validate]
    fraction = args.onset_fraction
    posthoc = (
        f" (**post hoc**: {fraction:g}, not the pre-registered {ONSET_FRACTION:g})"
        if fraction != ONSET_FRACTION
        else ""
    )

    def names(rs, kind):
        return ", ".join(r.name + (f" (onset {r.onset})" if r.onset is not None else "") for r in rs if r.kind == kind)

    lines = [
        "## The collapse guard's accuracy rule: calibration and validation",
        "",
        f"Generated by `python scripts/guard_lab.py --runs {' '.join(map(str, args.runs))} --calibrate "
        f"{' '.join(map(str, args.calibrate))} --validate {' '.join(map(str, args.validate))}"
        f"{f' --replicates {args.replicates}' if args.replicates != 1 else ''}"
        f"{' --partial' if args.partial else ''}`; do not edit by hand.",
        "",
        "**Definitions (fixed in the script before any result).** Healthy runs: every method but "
        f"{', '.join(COLLAPSE_METHODS)} (a run of another method that collapsed by the onset definition is left out), "
        "and no run whose own guard rolled back. Collapse onset: the first step from "
        f"which the centred {ONSET_SPAN}-step moving mean of training accuracy stays below {fraction:g} x its "
        f"mean over the first {ONSET_BASE} steps to the end of the run{posthoc}. Detection delay: a collapse "
        "run's first alarm minus its onset (negative: during the slide, before accuracy is that far down); "
        "collapse runs contribute no healthy steps (changed after the first real collapse runs, which slide from "
        "the first steps: before, their steps up to onset - 10 counted healthy, alarms there false). Rules: replayed "
        "step by step through `CollapseGuard` on accuracy alone (warn mode: a run goes on after alarms). "
        f"B={SIM_B}: for each step t, {SIM_B} prompt outcomes drawn with replacement from the logged prompts of "
        f"steps t-{SIM_W}..t+{SIM_W} of the same run (seeded by run name and replicate; {args.replicates} "
        "replicate(s)); neighbouring simulated steps share logged prompts, so their noise is correlated, which can "
        "only add false alarms. Intervals: exact Poisson 95%.",
        "",
        f"**Runs.** Calibration (seeds {', '.join(map(str, args.calibrate))}): healthy {names(cal, 'healthy') or '-'}; "
        f"collapse {names(cal, 'collapse') or '-'}. Validation (seeds {', '.join(map(str, args.validate))}): "
        f"healthy {names(val, 'healthy') or '-'}; collapse {names(val, 'collapse') or '-'}.",
    ]
    if notes:
        lines += ["", "Runs left out or cut short: " + "; ".join(notes) + "."]
    n_grid = len(table)
    n_ok = sum(c["ok"] for c in table)
    lines += [
        "",
        f"**Calibration.** Target: at most {TARGET:g} false alarm per 1,000 healthy steps and every calibration "
        f"collapse detected, at the lab's batch and at B={SIM_B}; candidates: k in {list(GRID_K)}, h in "
        f"{list(GRID_H)}, tau in {list(GRID_TAU)} with a design run length (Siegmund, N(0,1) scores) of at least "
        f"{MIN_ARL0:,} steps ({n_grid} candidates, {n_ok} meet the target); chosen: the smallest median delay, "
        "ties to the larger h, smaller k, larger tau.",
    ]
    if chosen:
        same = (chosen["cusum_k"], chosen["cusum_h"], chosen["cusum_tau"]) == (g.cusum_k, g.cusum_h, g.cusum_tau)
        lines.append(
            f"Chosen: k = {chosen['cusum_k']:g}, h = {chosen['cusum_h']:g}, tau = {chosen['cusum_tau']:g} "
            f"(design run length {cusum_arl0(chosen['cusum_k'], chosen['cusum_h']):,.0f} steps). GuardConfig's "
            f"defaults: k = {g.cusum_k:g}, h = {g.cusum_h:g}, tau = {g.cusum_tau:g} "
            f"({'the same' if same else 'different: both are validated below'})."
        )
        picked = next(c for c in table if c["rule"] == chosen)
        for batch, f in picked["figures"].items():
            lines.append(
                f"On the calibration seeds at {batch}: {f['false_alarms']} false alarms in {f['healthy_steps']} "
                f"healthy steps, {f['detected']}/{f['collapses']} collapses detected ({fmt_delays(f)})."
            )
    else:
        lines.append("No candidate met the target on the calibration seeds; GuardConfig's defaults are validated.")
    lines += [
        "",
        f"**Validation (seeds {', '.join(map(str, args.validate))} only).**",
        "",
        "| rule | batch | healthy steps | false alarms | per 1,000 healthy steps [95% CI] | collapses detected "
        "| delay per collapse run (steps) | median delay | scores mean / sd |",
        "|---|---|---:|---:|---|---:|---|---:|---|",
    ]
    for label, per_batch in results["validation"].items():
        for batch, f in per_batch.items():
            lo, hi = f["per_1000_ci95"]
            md = "-" if f["median_delay"] is None else f"{f['median_delay']:g}"
            sc = "-" if f["score_sd"] is None else f"{f['score_mean']:.2f} / {f['score_sd']:.2f}"
            lines.append(
                f"| {label} | {batch} | {f['healthy_steps']} | {f['false_alarms']} | {f['per_1000']:.2f} "
                f"[{lo:.2f}, {hi:.2f}] | {f['detected']}/{f['collapses']} | {fmt_delays(f)} | {md} | {sc} |"
            )
    lines += ["", prediction(results["validation"])]
    lines += [
        "",
        "Scores: the CUSUM's standardized accuracy z on healthy steps; near mean 0, sd 1 when its noise model "
        "(per-prompt variance / B + reference variance + tau^2) is right.",
        "",
        f"**Default action: `{decision[0]}`.** {decision[1][0].upper() + decision[1][1:]}. The rule: rollback only "
        f"if, for the default rule at every batch, the 95% upper bound on false alarms is at most {TARGET:g} per "
        f"1,000 healthy steps and every validation collapse is caught within {MAX_DELAY_FOR_ROLLBACK} steps "
        "(`decide` in the script). `guard.collapse_action=rollback` remains available, and a run that sets it "
        "(configs/lab/guard.yaml) keeps it.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    batches = ["lab", f"B={SIM_B}"]
    cal = [r for r in runs if r.seed in args.calibrate]
    val = [r for r in runs if r.seed in args.validate]
    if not val:
        where = " ".join(map(str, args.runs))
        print(f"no usable validation runs in {where}: " + "; ".join(notes), file=sys.stderr)
        return 1
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
    text = report(args, runs, notes, chosen, table, results, decision)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    (args.json or args.out.with_suffix(".json")).write_text(json.dumps(results, indent=1, default=list) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
