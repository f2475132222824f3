"""The collapse guard: degenerate-output detection, the guard that watches a run for a collapse, and the
loop's response to one (``on_collapse``: warn, halt or roll back).

A collapse (accuracy falling off a cliff, lengths shrinking to nothing, entropy vanishing, outputs turning
into empty strings or "!!!!") shows in the step metrics long before anyone looks at a curve. Length, entropy
and degenerate outputs are compared with the median of their recent history and fire when a signal stays out
of bounds for ``patience`` consecutive steps. Accuracy, the noisiest of them (at 8 prompts a step one step's
accuracy swings between 0.06 and 0.66 in a healthy run), is watched by a CUSUM test that knows how noisy each
step's accuracy is (``AccuracyCusum``). The loop then warns, halts, or rolls back to the last good checkpoint.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from trainer import checkpoint, dist
from trainer.config import Config, GuardConfig
from trainer.lifecycle import TrainingHalted, write_event

_D = GuardConfig()  # the single source of the guard's defaults: the constructor's are read from it


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
    baseline: float  # median of the recent history (accuracy with the CUSUM rule: its reference level)
    rule: str  # the bound, in words


def cusum_arl0(k: float, h: float) -> float:
    """Siegmund's (1985) approximation of the in-control average run length of a one-sided CUSUM with
    reference ``k`` and threshold ``h`` on i.i.d. N(0, 1) scores: steps between false alarms."""
    b = h + 1.166
    return (math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k) if k > 0 else b * b


class AccuracyCusum:
    """Page's (1954) one-sided lower CUSUM on the step's standardized accuracy.

    The step's accuracy m_t is the mean over its B prompts of p_j = k_j / G (k_j right answers of G samples).
    Prompts are drawn at random and sampled independently, so given the policy's accuracy mu the p_j are
    i.i.d. with variance v = (between-prompt spread of difficulty) + E[p(1-p)] / G, and

        Var(m_t) = v / B.

    v is estimated from the per-prompt accuracies themselves (``accuracy/prompt_sd``^2, the sample variance
    over the step's prompts) and pooled over healthy steps: one step at B = 8 estimates it with 7 degrees of
    freedom, and dividing by that noisy value would give heavy-tailed scores. The reference level mu_ref is an
    exponentially weighted mean of past accuracies (rate a = 2 / (window + 1)); its own variance is f v / B
    with f = sum of the squared EWMA weights, tracked exactly. tau^2 allows for healthy drift of the policy's
    accuracy between steps (0.08 by default: on the lab's calibration seeds healthy accuracy wanders by 0.05-0.1
    over ten steps, several standard errors at 128 prompts). The score and the statistic:

        z_t = (m_t - mu_ref) / sigma_t,   sigma_t^2 = max(v / B_t + f v / B_ref + tau^2, (1 + f) r)
        S_t = max(0, S_{t-1} - z_t - k),    fire when S_t > h,

    where r, an EWMA of (m_t - mu_ref)^2 over the reference steps, is the variance of the step accuracy as
    observed: when the policy's accuracy wanders between steps by more than tau allows, the observed spread
    takes over from the model's (sampling noise is a floor, never the whole story).

    In control z_t is about N(0, 1); a sustained drop of delta standard deviations is detected fastest with k =
    delta / 2 (Page 1954; Moustakides 1986); k = 1 targets a drop of two standard errors (at 8 prompts x 16 samples
    and accuracy 0.3: about 0.25, most of the level; at 128 prompts and tau = 0.08 about 0.17). h sets the false
    alarm rate: by Siegmund's approximation (``cusum_arl0``) k = 1, h = 4 gives one false alarm per ~15,000 steps on
    N(0, 1) scores, a margin over the target of <= 1 per 1,000 healthy steps for scores that are only approximately
    normal; an abrupt fall from 0.3 to 0 (z ~ -2.2 at 8 prompts) is caught at its 3rd to 5th step, at its 2nd at
    128. ``scripts/guard_lab.py`` calibrates k, h, tau on lab runs of some seeds and reports false alarms and delays
    on the others (docs/guard-results.md).

    A step enters mu_ref and v only ``window`` steps after it was scored (the reference is the EWMA of the
    steps before the last ``window``), and not while S_t > h / 2: a collapse cannot become the new reference
    before the statistic has had ``window`` steps to see it, and a slow slide accumulates in S_t instead of
    dragging the reference along (the blind spot of a relative-to-recent-median rule). Admitting a step only
    while S_t = 0 would look simpler but biases the reference upwards (low steps are the ones kept out) and
    raised the false alarms from ~1 to ~270 in 20,000 simulated steps; the lag keeps every healthy step. The
    steps pending when the guard fires are dropped. Without per-prompt statistics in the metrics only the
    observed variance is used: sigma_t^2 = (1 + f) r + tau^2.
    NaN accuracy is ignored (the NaN guard owns it). After firing S_t restarts at 0.
    """

    def __init__(self, k: float, h: float, tau: float, window: int, min_history: int):
        self.k, self.h, self.tau, self.min_history = k, h, tau, min_history
        self.rate = 2.0 / (window + 1)
        self.lag = window
        self.pending: deque[tuple[float, float | None, float | None]] = deque()  # steps not yet in the reference
        self.n = 0  # steps in the reference
        self.n_v = 0  # ... of them with per-prompt statistics
        self.mu = 0.0  # reference accuracy
        self.f = 0.0  # variance factor of mu: the sum of its squared EWMA weights
        self.v = 0.0  # reference between-prompt variance of p_j
        self.b_ref = 0.0  # reference prompts per step
        self.step_var = 0.0  # r: observed variance of m_t around the reference
        self.s = 0.0  # the CUSUM statistic
        self.last_z: float | None = None  # the last score (for the evidence and the lab script)

    def sigma(self, prompts: float | None) -> float:
        """Standard deviation of m_t - mu_ref for a step of ``prompts`` prompts (None: unknown)."""
        empirical = self.step_var * (1.0 + self.f)
        if prompts is not None and self.n_v:
            return math.sqrt(max(self.v / prompts + self.f * self.v / self.b_ref + self.tau**2, empirical)) or 1e-6
        return math.sqrt(empirical + self.tau**2) or 1e-6

    def observe(self, m: float, sd: float | None, prompts: float | None, update: bool = True) -> Trigger | None:
        """One step's accuracy ``m``, the sd over its prompts of p_j and its number of prompts (None:
        unknown). Returns a trigger when the statistic crosses ``h``. ``update=False``: score the step but
        never let it into the reference (another signal tripped this step)."""
        if m != m:
            return None
        if not (sd is not None and prompts is not None and sd == sd and prompts >= 1):
            sd = prompts = None
        if self.n >= self.min_history:
            sigma = self.sigma(prompts)
            z = (m - self.mu) / sigma
            self.last_z = z
            self.s = max(0.0, self.s - z - self.k)
            if self.s > self.h:
                rule = f"CUSUM {self.s:.3g} > h={self.h} (z={z:.2f}, sigma={sigma:.3g}, k={self.k}, tau={self.tau})"
                self.s = 0.0
                self.pending.clear()  # the steps that led to the alarm never enter the reference
                return Trigger("accuracy", m, self.mu, rule)
        if update:
            self.pending.append((m, sd, prompts))
        if self.n < self.min_history and self.pending:
            self._update(*self.pending.popleft())
        while len(self.pending) > self.lag and self.s <= self.h / 2:  # frozen while the evidence mounts
            self._update(*self.pending.popleft())
        return None

    def _update(self, m: float, sd: float | None, prompts: float | None) -> None:
        if self.n:
            self.step_var += max(self.rate, 1.0 / self.n) * ((m - self.mu) ** 2 - self.step_var)
        self.n += 1
        a = max(self.rate, 1.0 / self.n)  # a running mean until it has 1 / rate steps, then an EWMA
        self.mu += a * (m - self.mu)
        self.f = (1 - a) ** 2 * self.f + a * a
        if sd is not None:
            self.n_v += 1
            a_v = max(self.rate, 1.0 / self.n_v)
            self.v += a_v * (sd * sd - self.v)
            self.b_ref += a_v * (prompts - self.b_ref)

    STATE = ("n", "n_v", "mu", "f", "v", "b_ref", "step_var", "s", "last_z")

    def state_dict(self) -> dict:
        return {**{name: getattr(self, name) for name in self.STATE}, "pending": [list(p) for p in self.pending]}

    def load_state_dict(self, state: dict) -> None:
        for name in self.STATE:
            setattr(self, name, state[name])
        self.pending = deque(tuple(p) for p in state["pending"])


class CollapseGuard:
    """Watches ``accuracy``, ``length/mean``, ``entropy`` and ``degenerate_share``. Bounds (each configurable,
    ``GuardConfig``, whose defaults are the constructor's):

        accuracy          accuracy_rule "cusum" (default): AccuracyCusum (k, h, tau = cusum_k, cusum_h,
                          cusum_tau) on the step's accuracy and its per-prompt spread (``accuracy/prompt_sd``,
                          ``prompts``); it fires on its own (it already accumulates evidence, no patience)
                          accuracy_rule "relative" (the rule before issue #26, kept for comparison):
                          < max(baseline - accuracy_drop, baseline * accuracy_ratio) for patience steps
        length/mean       < baseline * length_ratio           (length collapse)
        entropy           < baseline * entropy_ratio          (entropy collapse)
        degenerate_share  > max(baseline, 0) + degenerate_rise

    baseline: the median of the last ``window`` steps. Checks start once ``min_history`` steps are recorded; a
    step that trips a bound is not added to the history (so a collapse cannot become the new normal); the
    median rules fire after ``patience`` such steps in a row.
    """

    def __init__(
        self,
        *,
        window: int = _D.window,
        min_history: int = _D.min_history,
        patience: int = _D.patience,
        accuracy_drop: float = _D.accuracy_drop,
        length_ratio: float = _D.length_ratio,
        entropy_ratio: float = _D.entropy_ratio,
        degenerate_rise: float = _D.degenerate_rise,
        accuracy_ratio: float = _D.accuracy_ratio,
        accuracy_rule: str = _D.accuracy_rule,
        cusum_k: float = _D.cusum_k,
        cusum_h: float = _D.cusum_h,
        cusum_tau: float = _D.cusum_tau,
    ):
        if accuracy_rule not in ("cusum", "relative"):
            raise ValueError(f"accuracy_rule must be 'cusum' or 'relative', got {accuracy_rule!r}")
        self.window, self.min_history, self.patience = window, min_history, patience
        self.accuracy_drop, self.length_ratio = accuracy_drop, length_ratio
        self.entropy_ratio, self.degenerate_rise = entropy_ratio, degenerate_rise
        self.accuracy_ratio, self.accuracy_rule = accuracy_ratio, accuracy_rule
        self.cusum = AccuracyCusum(cusum_k, cusum_h, cusum_tau, window, min_history)
        self.history: dict[str, deque[float]] = {}
        self.streak = 0

    @classmethod
    def from_config(cls, g: GuardConfig) -> CollapseGuard:
        """The guard of the ``guard`` section (tests/trainer/test_guards.py checks that every parameter is passed)."""
        return cls(
            window=g.window,
            min_history=g.min_history,
            patience=g.patience,
            accuracy_drop=g.accuracy_drop,
            length_ratio=g.length_ratio,
            entropy_ratio=g.entropy_ratio,
            degenerate_rise=g.degenerate_rise,
            accuracy_ratio=g.accuracy_ratio,
            accuracy_rule=g.accuracy_rule,
            cusum_k=g.cusum_k,
            cusum_h=g.cusum_h,
            cusum_tau=g.cusum_tau,
        )

    @property
    def suspect(self) -> bool:
        """In the middle of a suspected collapse: a median rule's streak has begun, or the accuracy CUSUM is
        past half its threshold (where it stops admitting steps to its reference). The loop saves no periodic
        checkpoint then, so a rollback lands before the collapse."""
        return self.streak > 0 or (self.accuracy_rule == "cusum" and self.cusum.s > self.cusum.h / 2)

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
        """Record one step; returns the triggers when the guard fires (the accuracy CUSUM crossing its
        threshold, or ``patience`` steps in a row out of a median rule's bounds)."""
        median_signals = ("length/mean", "entropy", "degenerate_share")
        if self.accuracy_rule == "relative":
            median_signals = ("accuracy", *median_signals)
        signals = {k: metrics[k] for k in median_signals if k in metrics}
        triggers = []
        for name, value in signals.items():
            hist = self.history.setdefault(name, deque(maxlen=self.window))
            if len(hist) >= self.min_history and value == value:  # NaN never trips (the NaN guard owns it)
                t = self._check(name, value, statistics.median(hist))
                if t is not None:
                    triggers.append(t)
        cusum = None
        if self.accuracy_rule == "cusum" and "accuracy" in metrics:
            # a step where a median rule trips does not update the accuracy reference either
            stats = metrics.get("accuracy/prompt_sd"), metrics.get("prompts")
            cusum = self.cusum.observe(metrics["accuracy"], *stats, update=not triggers)
        if triggers:
            self.streak += 1
        else:
            self.streak = 0
            for name, value in signals.items():
                if value == value:
                    self.history[name].append(value)
        if cusum is not None:
            self.streak = 0
            return [cusum, *triggers]
        if self.streak >= self.patience:
            self.streak = 0
            return triggers
        return None

    def state_dict(self) -> dict:
        return {
            "history": {k: list(v) for k, v in self.history.items()},
            "streak": self.streak,
            "cusum": self.cusum.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.history = {k: deque(v, maxlen=self.window) for k, v in state["history"].items()}
        self.streak = state["streak"]
        if "cusum" in state:  # checkpoints written before the CUSUM rule start it afresh
            self.cusum.load_state_dict(state["cusum"])


def on_collapse(cfg: Config, run_dir: Path, step: int, triggers, *, run: dict, restore, logger) -> int:
    """Warn, halt or roll back after the guard's ``triggers`` at step ``step - 1``; returns the step to continue
    from. ``run``: the loop's checkpointed counters; ``restore``: loads a checkpoint, returns its step."""
    g = cfg.guard
    evidence = [vars(t) for t in triggers]
    text = "; ".join(f"{t.signal}={t.value:.4g} {t.rule} (baseline {t.baseline:.4g})" for t in triggers)
    action = g.collapse_action
    last = checkpoint.latest(run_dir)
    if action == "rollback" and (run["rollbacks"] >= g.max_rollbacks or last is None):
        why = "no checkpoint to roll back to" if last is None else f"{g.max_rollbacks} rollbacks already"
        action = "halt"
    else:
        why = ""
    if dist.is_main():
        write_event(
            run_dir, {"step": step - 1, "event": "collapse", "action": action, "triggers": evidence, "why": why}
        )
        logger.bar.write(f"collapse guard at step {step - 1}: {text} -> {action}{' (' + why + ')' if why else ''}")
    if action == "halt":
        raise TrainingHalted(
            f"collapse detected at step {step - 1}: {text}. Evidence in {run_dir}/events.jsonl; the last good "
            f"checkpoint is {last}. Lower the length penalty or learning rate, or set guard.collapse_action."
        )
    if action == "rollback":
        run["rollbacks"] += 1
        step = restore(last)
        logger.reopen(step)
        if dist.is_main():
            write_event(
                run_dir, {"step": step, "event": "rollback", "checkpoint": str(last), "rollbacks": run["rollbacks"]}
            )
    return step
