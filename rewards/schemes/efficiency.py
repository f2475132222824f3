"""Length rewards z-scored among a group's correct answers: Arora & Zanette (every group) and GRPO-λ (the
batch's most accurate groups)."""

from __future__ import annotations

import math

import torch

from rewards.schemes.base import RewardBatch, Stateless, register


def efficiency_reward(
    correct: torch.Tensor, lengths: torch.Tensor, alpha: float, truncated: torch.Tensor | None = None
) -> torch.Tensor:
    """c_i (1 - alpha * sigmoid((L_i - mean_c L) / std_c L)) within one group; mean/std over its correct
    answers (population std, numpy's default as in the authors' code). A std of 0 (one correct answer, or
    equal lengths) is treated as 1 (the authors add 1e-7; z is 0 there either way). With ``truncated`` given
    (the authors' ``check_eos``), a response that never stopped counts as incorrect: reward 0 and no part in
    the mean and std. [G]"""
    c = correct.double()
    if truncated is not None:
        c = c * (1.0 - truncated.double())
    n = c.sum()
    if n == 0:
        return torch.zeros_like(c)
    L = lengths.double()
    mean = (L * c).sum() / n
    std = torch.sqrt(((L - mean) ** 2 * c).sum() / n)
    std = std if std > 0 else torch.ones_like(std)
    return c * (1.0 - alpha * torch.sigmoid((L - mean) / std))


@register("grpo_lambda", section="efficiency")
class GRPOLambda(Stateless):
    """GRPO-λ (Dai, Liu, Si, arXiv 2505.18086): rank the batch's groups by accuracy (ties: lower group index
    first); the top ceil(lambda * n_groups) get the efficiency reward

        r_i = c_i (1 - alpha * sigmoid((L_i - mean_correct(L)) / std_correct(L)))

    (the Arora & Zanette form, arXiv 2502.04463, over the group's correct answers, with their ``check_eos``
    when ``eos_required``: a truncated response gets 0 and leaves the statistic) and the rest plain 0/1.
    lambda = 0.2 as in the paper; the paper's alpha is not public (default 0.2; a reimplementation uses 0.6).
    The ranking is over the whole batch, all ranks, because the scheme is called on the gathered batch.
    """

    def __init__(self, top_fraction: float = 0.2, alpha: float = 0.2, eos_required: bool = True):
        self.top_fraction, self.alpha, self.eos_required = top_fraction, alpha, eos_required

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        G = b.group_size
        c = b.correct.double().view(-1, G)  # [B, G]
        L, T = b.lengths.view(-1, G), b.truncated.view(-1, G)  # [B, G]
        n_groups = c.shape[0]
        k = math.ceil(self.top_fraction * n_groups)
        order = sorted(range(n_groups), key=lambda g: (-float(c[g].mean()), g))
        r = c.clone()
        for g in order[:k]:
            r[g] = efficiency_reward(c[g], L[g], self.alpha, T[g] if self.eos_required else None)
        return r.view(-1), {"reward/penalized_groups": float(k)}

    @classmethod
    def from_config(cls, reward) -> GRPOLambda:
        e = reward.efficiency
        return cls(top_fraction=e.lambda_top, alpha=e.alpha, eos_required=e.eos_required)


@register("arora_zanette", section="efficiency")
class AroraZanette(Stateless):
    """Efficient reasoning (Arora & Zanette, arXiv 2502.04463, Eq. 4), checked against the authors'
    ``Zanette-Labs/efficient-reasoning`` ``reward_server/math_server.py`` (``reward_type=sigmoid``): every
    group gets r_i = c_i (1 - alpha * sigmoid(z-scored length among the group's correct answers)); alpha
    default 0.2. ``eos_required`` (default, their ``check_eos``): a response without EOS (truncated) gets
    reward 0 and is left out of the group's mean and std; False rewards truncated correct answers too.
    The reward of a truncated answer is then 0, not 1 (``task``), and ``penalty_scale`` keeps it 0."""

    def __init__(self, alpha: float = 0.2, eos_required: bool = True):
        self.alpha, self.eos_required = alpha, eos_required

    def task(self, b: RewardBatch) -> torch.Tensor:
        c = b.correct.double()
        return c * (1.0 - b.truncated.double()) if self.eos_required else c

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        G = b.group_size
        c, L, T = b.correct.view(-1, G), b.lengths.view(-1, G), b.truncated.view(-1, G)
        rows = [efficiency_reward(c[g], L[g], self.alpha, T[g] if self.eos_required else None) for g in range(len(c))]
        return torch.cat(rows), {}

    @classmethod
    def from_config(cls, reward) -> AroraZanette:
        return cls(alpha=reward.efficiency.alpha, eos_required=reward.efficiency.eos_required)
