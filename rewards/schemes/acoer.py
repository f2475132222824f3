"""ACOER: a brevity bonus on correct answers whose strength and length budget a controller adapts."""

from __future__ import annotations

import math
from collections import deque

import torch

from rewards.schemes.base import RewardBatch, register


@register("acoer", section="acoer")
class ACOER:
    """ACOER (Lee et al., arXiv 2606.22716), exact to the authors' ``js-lee-AI/ACOER`` ``acoer/reward.py``
    (class ``ACOERReward``) unless an option says otherwise:

        correct:   r = 1 + alpha_t * g(min(L / B_t, 1)),   g(x) = ln(1 + k (1 - x)) / ln(1 + k)   (k = 5)
        incorrect: r = 0      (no length term ever touches an incorrect answer)

    Controller, once per step from the whole batch, *after* that step's rewards (which use the state from
    before it): EMAs (span 50, decay 2/51) of batch accuracy and of the mean correct length; a step with no
    correct answer feeds a correct length of 0, as the authors do (``empty_step="zero"``; ``"skip"`` leaves
    the length EMA alone). The step-t accuracy EMA is appended to a history. From step index ``warmup``
    (200) on, once the history holds ``window`` (100) values, it is compared with ``history[-window]``, the
    value ``window - 1`` steps back: a drop *strictly* larger than delta = 0.02 multiplies alpha by 0.95,
    otherwise by 1.02, clipped to [0.01, 0.5]; alpha starts at 0.02. Only in that same adaptation step is
    the budget recomputed, ``B = max(B_min, gamma * EMA(correct length))`` when the EMA is positive (gamma =
    0.85, B_min = 512): B keeps its initial value through the warm-up and the first window. The initial
    budget is the authors' thinking budget, half their completion limit (4096 of 8192): ``initial_budget``,
    default half of ``rollout.max_new_tokens``. Lengths are completion tokens (the authors count characters
    of the thinking block and multiply token settings by 4).
    """

    def __init__(
        self,
        *,
        alpha: float = 0.02,
        k: float = 5.0,
        shape: str = "log",
        gamma: float = 0.85,
        min_budget: float = 512,
        span: int = 50,
        warmup: int = 200,
        window: int = 100,
        delta: float = 0.02,
        down: float = 0.95,
        up: float = 1.02,
        alpha_min: float = 0.01,
        alpha_max: float = 0.5,
        initial_budget: float | None = None,
        empty_step: str = "zero",
    ):
        if shape not in ("log", "linear"):
            raise ValueError(f"reward.acoer.shape {shape!r}: choose from ['log', 'linear']")
        if empty_step not in ("zero", "skip"):
            raise ValueError(f"reward.acoer.empty_step {empty_step!r}: choose from ['zero', 'skip']")
        self.k, self.shape, self.gamma, self.min_budget = k, shape, gamma, min_budget
        self.decay = 2.0 / (span + 1)
        self.warmup, self.window, self.delta = warmup, window, delta
        self.down, self.up, self.alpha_min, self.alpha_max = down, up, alpha_min, alpha_max
        self.empty_step = empty_step
        self.alpha = alpha
        self.budget = initial_budget  # None: half of max_new_tokens at the first call (the authors' rule)
        self.steps = 0
        self.ema_acc: float | None = None
        self.ema_len: float | None = None
        self.acc_history: deque[float] = deque(maxlen=window)

    def task(self, b: RewardBatch) -> torch.Tensor:
        return b.correct.double()

    def bonus_shape(self, x: torch.Tensor) -> torch.Tensor:
        """g(x) for x = L / B in [0, 1]: 1 at x = 0, 0 at x = 1."""
        if self.shape == "linear":
            return 1.0 - x
        return torch.log1p(self.k * (1.0 - x)) / math.log1p(self.k)

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        if self.budget is None:
            self.budget = b.max_new_tokens / 2
        c = b.correct.double()
        x = (b.lengths.double() / self.budget).clamp(max=1.0)
        r = c * (1.0 + self.alpha * self.bonus_shape(x))  # [N]
        metrics = {"acoer/alpha": self.alpha, "acoer/budget": self.budget}
        self.update(c.mean().item(), b.lengths.double()[c > 0].mean().item() if c.any() else None)
        return r, metrics

    def update(self, accuracy: float, mean_correct_length: float | None) -> None:
        """One controller step from a batch's accuracy and mean correct length (None: no correct answer)."""
        step, d = self.steps, self.decay  # step: 0-based index of the step just scored (the authors' global_step)
        self.steps += 1
        if mean_correct_length is None and self.empty_step == "zero":
            mean_correct_length = 0.0
        self.ema_acc = accuracy if self.ema_acc is None else (1 - d) * self.ema_acc + d * accuracy
        if mean_correct_length is not None:
            self.ema_len = (
                mean_correct_length if self.ema_len is None else (1 - d) * self.ema_len + d * mean_correct_length
            )
        self.acc_history.append(self.ema_acc)
        if step < self.warmup or len(self.acc_history) < self.window:
            return
        dropped = self.acc_history[0] - self.ema_acc > self.delta  # history[-window]: window - 1 steps back
        self.alpha = min(self.alpha_max, max(self.alpha_min, self.alpha * (self.down if dropped else self.up)))
        if self.ema_len is not None and self.ema_len > 0:
            self.budget = max(self.min_budget, self.gamma * self.ema_len)

    def state_dict(self) -> dict:
        return {
            "alpha": self.alpha,
            "budget": self.budget,
            "steps": self.steps,
            "ema_acc": self.ema_acc,
            "ema_len": self.ema_len,
            "acc_history": list(self.acc_history),
        }

    def load_state_dict(self, state: dict) -> None:
        self.alpha, self.budget, self.steps = state["alpha"], state["budget"], state["steps"]
        self.ema_acc, self.ema_len = state["ema_acc"], state["ema_len"]
        self.acc_history = deque(state["acc_history"], maxlen=self.window)

    @classmethod
    def from_config(cls, reward) -> ACOER:
        return cls(**dict(reward.acoer))  # initial_budget None: half of max_new_tokens at the first call
