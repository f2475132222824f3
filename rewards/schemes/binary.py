"""The 0/1 (or +-1) correctness reward."""

from __future__ import annotations

import torch

from rewards.schemes.base import RewardBatch, Stateless, register


@register("binary", section="binary")
class Binary(Stateless):
    """r_i = c_i: the rule-based accuracy reward of DeepSeek-R1 (arXiv 2501.12948, §2.2.2). ``incorrect`` is
    the reward of a wrong answer: 0 here; DAPO (arXiv 2503.14476, Eq. 10) uses +1 / -1, so that its overlong
    penalty (in [-1, 0]) is half the correct/incorrect gap rather than all of it."""

    def __init__(self, incorrect: float = 0.0):
        self.incorrect = incorrect

    def task(self, b: RewardBatch) -> torch.Tensor:
        c = b.correct.double()
        return c + (1.0 - c) * self.incorrect

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.task(b), {}

    @classmethod
    def from_config(cls, reward) -> Binary:
        return cls(incorrect=reward.binary.incorrect)
