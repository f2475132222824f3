"""Guards: degenerate-output detection and the collapse guard.

A collapse (accuracy falling off a cliff, lengths shrinking to nothing, entropy vanishing, outputs turning
into empty strings or "!!!!") shows in the step metrics long before anyone looks at a curve. The guard
compares each step with the median of its recent history and fires when a signal stays out of bounds for
``patience`` consecutive steps; the loop then warns, halts, or rolls back to the last good checkpoint.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass


def is_degenerate(text: str, min_chars: int = 24, max_distinct: float = 0.25) -> bool:
    """Empty output, or a long one made of a few repeated pieces (distinct 4-gram share <= ``max_distinct``)."""
    s = text.strip()
    if not s:
        return True
    if len(s) < min_chars:
        return False
    grams = [s[i : i + 4] for i in range(len(s) - 3)]
    return len(set(grams)) / len(grams) <= max_distinct


@dataclass
class Trigger:
    signal: str  # which metric tripped
    value: float  # its value this step
    baseline: float  # median of the recent history
    rule: str  # the bound, in words


class CollapseGuard:
    """Watches ``accuracy``, ``length/mean``, ``entropy`` and ``degenerate_share`` against their recent
    median. Bounds (each configurable, ``GuardConfig``):

        accuracy          < max(baseline - accuracy_drop,     (absolute drop, or relative drop: at a
                                baseline * accuracy_ratio)     baseline below accuracy_drop only the
                                                               relative one can fire; the collapse lab's
                                                               kimi_lp runs fell from 0.3 to 0 unseen)
        length/mean       < baseline * length_ratio           (length collapse)
        entropy           < baseline * entropy_ratio          (entropy collapse)
        degenerate_share  > max(baseline, 0) + degenerate_rise

    Checks start once ``min_history`` steps are recorded; a step that trips a bound is not added to the
    history (so a collapse cannot become the new normal); the guard fires after ``patience`` such steps in a row.
    """

    def __init__(
        self,
        window: int = 20,
        min_history: int = 5,
        patience: int = 2,
        accuracy_drop: float = 0.3,
        length_ratio: float = 0.3,
        entropy_ratio: float = 0.1,
        degenerate_rise: float = 0.5,
        accuracy_ratio: float = 0.5,
    ):
        self.window, self.min_history, self.patience = window, min_history, patience
        self.accuracy_drop, self.length_ratio = accuracy_drop, length_ratio
        self.entropy_ratio, self.degenerate_rise = entropy_ratio, degenerate_rise
        self.accuracy_ratio = accuracy_ratio
        self.history: dict[str, deque[float]] = {}
        self.streak = 0

    def _check(self, name: str, value: float, base: float) -> Trigger | None:
        if name == "accuracy" and value < max(base - self.accuracy_drop, base * self.accuracy_ratio):
            return Trigger(
                name, value, base, f"< max(baseline - {self.accuracy_drop}, baseline x {self.accuracy_ratio})"
            )
        if name == "length/mean" and value < base * self.length_ratio:
            return Trigger(name, value, base, f"< baseline x {self.length_ratio}")
        if name == "entropy" and value < base * self.entropy_ratio:
            return Trigger(name, value, base, f"< baseline x {self.entropy_ratio}")
        if name == "degenerate_share" and value > max(base, 0.0) + self.degenerate_rise:
            return Trigger(name, value, base, f"> baseline + {self.degenerate_rise}")
        return None

    def observe(self, metrics: dict[str, float]) -> list[Trigger] | None:
        """Record one step; returns the triggers when the guard fires (``patience`` bad steps in a row)."""
        signals = {k: metrics[k] for k in ("accuracy", "length/mean", "entropy", "degenerate_share") if k in metrics}
        triggers = []
        for name, value in signals.items():
            hist = self.history.setdefault(name, deque(maxlen=self.window))
            if len(hist) >= self.min_history and value == value:  # NaN never trips (the NaN guard owns it)
                t = self._check(name, value, statistics.median(hist))
                if t is not None:
                    triggers.append(t)
        if triggers:
            self.streak += 1
        else:
            self.streak = 0
            for name, value in signals.items():
                if value == value:
                    self.history[name].append(value)
        if self.streak >= self.patience:
            self.streak = 0
            return triggers
        return None

    def state_dict(self) -> dict:
        return {"history": {k: list(v) for k, v in self.history.items()}, "streak": self.streak}

    def load_state_dict(self, state: dict) -> None:
        self.history = {k: deque(v, maxlen=self.window) for k, v in state["history"].items()}
        self.streak = state["streak"]
