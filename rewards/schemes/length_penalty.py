"""Kimi k1.5's length penalty, on all answers (``kimi_lp``) and on correct answers only (``correct_lp``)."""

from __future__ import annotations

import torch

from rewards.schemes.base import RewardBatch, Stateless, register


def kimi_lambda(lengths: torch.Tensor, group_size: int) -> torch.Tensor:
    """Kimi k1.5's per-group length score lam_i = 0.5 - (L_i - L_min) / (L_max - L_min); 0 if all equal. [N]"""
    L = lengths.double().view(-1, group_size)  # [B, G]
    lo, hi = L.min(dim=1, keepdim=True).values, L.max(dim=1, keepdim=True).values
    span = hi - lo
    lam = 0.5 - (L - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, lam, torch.zeros_like(lam)).view(-1)


@register("kimi_lp", section="length_penalty")
class KimiLengthPenalty(Stateless):
    """Kimi k1.5 length penalty (arXiv 2501.12599, §2.3.3), on *all* answers:

    len_reward_i = lam_i if correct, min(0, lam_i) if incorrect;  r_i = c_i + w * len_reward_i.

    The paper does not give w (default 1.0). Penalizing incorrect answers for length is the configuration
    the ACOER paper shows to collapse under group normalization. The paper trains first without the
    penalty ("followed by a constant length penalty"), a phase of unstated length: ``warmup`` steps with
    ``len_reward = 0`` (default 0, the penalty from the first step, since the length is not published).
    """

    def __init__(self, weight: float = 1.0, warmup: int = 0):
        self.weight, self.warmup, self.steps = weight, warmup, 0

    @classmethod
    def from_config(cls, reward) -> KimiLengthPenalty:
        return cls(weight=reward.length_penalty.weight, warmup=reward.length_penalty.warmup)

    def length_term(self, b: RewardBatch) -> torch.Tensor:
        c = b.correct.double()
        lam = kimi_lambda(b.lengths, b.group_size)  # [N]
        return torch.where(c > 0, lam, lam.clamp(max=0.0))

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        c = b.correct.double()
        active = self.steps >= self.warmup
        self.steps += 1
        len_reward = self.length_term(b) if active else torch.zeros_like(c)
        return c + self.weight * len_reward, {"reward/length_term": len_reward.mean().item()}

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state.get("steps", 0)


@register("correct_lp", section="length_penalty")
class CorrectLengthPenalty(KimiLengthPenalty):
    """Kimi's lam_i applied to correct answers only (arXiv 2501.12599 §2.3.3, restricted as in the ACOER
    ablation): r_i = c_i * (1 + w * lam_i); incorrect answers get exactly 0. Same ``warmup`` as Kimi's."""

    def length_term(self, b: RewardBatch) -> torch.Tensor:
        return b.correct.double() * kimi_lambda(b.lengths, b.group_size)
