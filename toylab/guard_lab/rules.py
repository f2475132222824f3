"""The guard lab's definitions, fixed before any lab result was looked at: healthy and collapse runs, the collapse
onset, the simulated batch, the calibration target and grid, the rollback criterion, and prediction 7."""

from __future__ import annotations

import math
import statistics

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
