"""The accuracy rules replayed step by step through the trainer's own ``CollapseGuard`` (warn mode), their
false alarms and detection delays, the CUSUM calibrated on some seeds, and the default action decided."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from toylab.guard_lab.rules import (
    GRID_H,
    GRID_K,
    GRID_TAU,
    MAX_DELAY_FOR_ROLLBACK,
    MIN_ARL0,
    TARGET,
    poisson_ci,
)
from toylab.guard_lab.runs import Run
from trainer.collapse import CollapseGuard, cusum_arl0


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


@dataclass
class Study:
    """What the report is written from: the runs used, the notes on those left out, the calibration (its choice
    and every candidate's figures), the validation figures per rule and batch, and the default action."""

    runs: list[Run]
    notes: list[str]
    chosen: dict | None
    calibration: list[dict]
    results: dict
    decision: tuple[str, str]  # (action, why)
