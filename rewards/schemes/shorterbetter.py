"""ShorterBetter: a pull towards the group's sample-optimal length (its shortest correct response)."""

from __future__ import annotations

import torch

from rewards.schemes.base import RewardBatch, Stateless, register


def sample_optimal_length(correct: torch.Tensor, lengths: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each group's SOL, broadcast to its rows [N]: the shortest correct length, or the group's mean length
    when no answer is correct (arXiv 2504.21370, Eq. 2; the authors' ``check_correctness_and_length``)."""
    c, L = correct.double().view(-1, group_size), lengths.double().view(-1, group_size)  # [B, G]
    shortest = torch.where(c > 0, L, torch.full_like(L, float("inf"))).min(dim=1, keepdim=True).values  # [B, 1]
    sol = torch.where(c.any(dim=1, keepdim=True), shortest, L.mean(dim=1, keepdim=True))  # [B, 1]
    return sol.expand_as(L).reshape(-1)


@register("shorterbetter", section="shorterbetter")
class ShorterBetter(Stateless):
    """ShorterBetter (Yi, Wang, Li, arXiv 2504.21370, Eqs. 2-3):

        r_i = alpha * c_i - beta * |L_i - SOL(G)|,   SOL = min L over the correct answers, or the mean L of
        the group when none is correct.

    exact to the authors' code (``JingyangYi/ShorterBetter`` ``verl/verl/workers/reward_manager/naive.py``:
    ``check_correctness_and_length`` for the SOL, ``sb_compute_score`` with alpha = 2.0, beta = 0.001 for the
    reward), L_i verl's valid response length (EOS included; a truncated response counts its cut length).
    Every response, right or wrong, is pulled towards the SOL; a correct answer longer than the
    shortest correct one loses beta per extra token, and a wrong one is pulled towards the group's mean
    length. Truncated responses are not special-cased (the paper does not; they are usually wrong and long).
    ``task`` is alpha * c_i, so ``penalty_scale`` scales beta only.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 0.001):
        self.alpha, self.beta = alpha, beta

    def task(self, b: RewardBatch) -> torch.Tensor:
        return self.alpha * b.correct.double()

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        sol = sample_optimal_length(b.correct, b.lengths, b.group_size)  # [N]
        gap = (b.lengths.double() - sol).abs()  # [N]
        return self.task(b) - self.beta * gap, {"shorterbetter/sol": sol.mean().item()}

    @classmethod
    def from_config(cls, reward) -> ShorterBetter:
        return cls(alpha=reward.shorterbetter.alpha, beta=reward.shorterbetter.beta)
