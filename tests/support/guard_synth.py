"""Synthetic lab runs for the collapse guard's tests (tests/trainer/test_guards.py, tests/toylab/test_guard_lab.py).

A step draws B prompts whose accuracies p_j come from a Beta with mean mu_t (the policy's accuracy) and
concentration ``conc`` (between-prompt spread: sd = sqrt(mu (1 - mu) / (conc + 1)), about 0.29 at mu = 0.3 and
conc = 1.5, the spread of the lab's toy problems), and G samples each: k_j ~ Binomial(G, p_j).
Healthy: mu_t rises slowly (0.25 -> 0.40 over 150 steps, as the lab's healthy runs do). Collapse: after
``onset`` mu_t falls geometrically (x ``fall`` a step) to 0, and the length with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def mean_curve(steps: int, start: float = 0.25, end: float = 0.40, onset: int | None = None, fall: float = 0.85):
    mu = start + (end - start) * np.arange(steps) / max(1, steps - 1)
    if onset is not None:
        t = np.arange(steps)
        mu = np.where(t < onset, mu, mu[min(onset, steps - 1)] * fall ** (t - onset + 1))
    return mu


def draw_groups(mu: np.ndarray, rng: np.random.Generator, B: int = 8, G: int = 16, conc: float = 1.5):
    """Per step: (correct answers per prompt [B], mean tokens per prompt [B])."""
    out = []
    for m in mu:
        m = float(np.clip(m, 1e-4, 1 - 1e-4))
        p = rng.beta(m * conc, (1 - m) * conc, size=B)
        k = rng.binomial(G, p)
        out.append(k)
    return out


def step_metrics(k: np.ndarray, G: int, length: float, entropy: float = 0.5) -> dict:
    p = np.asarray(k) / G
    return {
        "accuracy": float(p.mean()),
        "accuracy/prompt_sd": float(p.std(ddof=1)) if len(p) > 1 else float("nan"),
        "prompts": float(len(p)),
        "length/mean": length,
        "entropy": entropy,
        "degenerate_share": 0.0,
    }


def stream(mu: np.ndarray, seed: int, B: int = 8, G: int = 16, conc: float = 1.5) -> list[dict]:
    """Guard input rows for an accuracy curve ``mu`` (length 40 tokens, entropy 0.5, nothing degenerate)."""
    rng = np.random.default_rng(seed)
    return [step_metrics(k, G, 40.0) for k in draw_groups(mu, rng, B, G, conc)]


def write_run(run: Path, seed: int, steps: int = 150, onset: int | None = None, B: int = 8, G: int = 16) -> None:
    """A lab run directory as scripts/collapse_lab.py leaves it: metrics.jsonl, groups.jsonl, events.jsonl
    (empty), eval.jsonl (start and end) and lab.json."""
    rng = np.random.default_rng(seed)
    mu = mean_curve(steps, onset=onset)
    run.mkdir(parents=True, exist_ok=True)
    metrics, groups = [], []
    for t, k in enumerate(draw_groups(mu, rng, B, G)):
        length = 40.0 if onset is None or t < onset else max(3.0, 40.0 * 0.85 ** (t - onset + 1))
        tokens = np.clip(rng.normal(length, 3.0, size=B), 1.0, None)
        row = step_metrics(k, G, float(tokens.mean()))
        metrics.append({"step": t, **row})
        groups.append(
            {"step": t, "G": G, "correct": [int(x) for x in k], "tokens": [round(float(x), 2) for x in tokens]}
        )
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (run / "groups.jsonl").write_text("".join(json.dumps(r) + "\n" for r in groups))
    (run / "events.jsonl").write_text("")
    evals = [{"after_steps": 0, "accuracy": float(mu[0]), "tokens": 40.0},
             {"after_steps": steps, "accuracy": float(mu[-1]), "tokens": 40.0}]  # fmt: skip
    (run / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    (run / "lab.json").write_text(json.dumps({"status": 0, "minutes": 0.0}))
