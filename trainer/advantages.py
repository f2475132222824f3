"""Group-relative advantages (GRPO, arXiv 2402.03300 §4.1.2; Dr. GRPO arXiv 2503.20783 drops the std).

Pure torch. Rows are N = B*G completions; each group is a contiguous block of G rows.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, scale_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """A_i = (r_i - mean_group(r)) / (std_group(r) + eps), or r_i - mean_group(r) without std scaling.

    ``rewards [N]`` -> ``adv [N]`` in float64 (cast to the loss's dtype only inside the objective). The std
    is the unbiased sample std (n-1, as TRL and veRL use). A group whose rewards all tie gets exactly 0
    (never NaN, never float dust from the mean), and so does a group of size 1.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards must be [N] with N divisible by group_size={group_size}, got {tuple(rewards.shape)}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf; a reward function must return finite numbers")
    r = rewards.to(torch.float64).view(-1, group_size)  # [B, G]
    centered = r - r.mean(dim=1, keepdim=True)  # [B, G]
    if scale_std and group_size > 1:
        centered = centered / (r.std(dim=1, keepdim=True) + eps)
    tied = (r.max(dim=1).values == r.min(dim=1).values)[:, None]  # [B, 1]
    return torch.where(tied, torch.zeros_like(centered), centered).view(-1)


def zero_variance_share(rewards: torch.Tensor, group_size: int) -> float:
    """Share of groups whose rewards all tie (they carry no learning signal)."""
    r = rewards.view(-1, group_size)  # [B, G]
    return (r.max(dim=1).values == r.min(dim=1).values).float().mean().item()


def batch_std_advantages(
    rewards: torch.Tensor, group_size: int, eps: float = 1e-6, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """DLER's batch-wise normalization (arXiv 2510.15110, §3.1, the REINFORCE++-baseline form it adopts,
    arXiv 2501.03262): centre each reward on its group's mean, then standardize over the whole batch,

        A_i = (a_i - mean_batch(a)) / (std_batch(a) + eps),   a_i = r_i - mean_group(r).

    The batch statistics run over tokens, A_{i,t} = a_i at each of row i's L_i tokens, as the reference code
    does (verl ``compute_reinforce_plus_plus_baseline_outcome_advantage``: ``masked_whiten`` over the response
    mask, variance with Bessel's correction over the token count): with ``lengths [N]`` the mean and variance
    are weighted by L_i, so the batch mean is not 0 when long and short answers differ in a, and a row of a
    tied group (a_i = 0) gets -mean/std like every other. Without ``lengths`` each row counts once. ``rewards
    [N]`` is the whole step's batch (all ranks), so the statistics are global. A batch whose groups all tie
    gets exactly 0. [N] float64."""
    r = rewards.to(torch.float64).view(-1, group_size)  # [B, G]
    a = (r - r.mean(dim=1, keepdim=True)).view(-1)  # [N]
    tied = (r.max(dim=1).values == r.min(dim=1).values)[:, None].expand_as(r).reshape(-1)  # [N]
    a = torch.where(tied, torch.zeros_like(a), a)  # no float dust from a tied group's mean
    w = torch.ones_like(a) if lengths is None else lengths.to(torch.float64).clamp(min=1.0)  # [N] tokens per row
    if w.sum() < 2 or bool((a == 0).all()):
        return torch.zeros_like(a)
    mean = (w * a).sum() / w.sum()
    std = torch.sqrt((w * (a - mean) ** 2).sum() / (w.sum() - 1))
    return (a - mean) / (std + eps)


def gfpo_keep_mask(
    rewards: torch.Tensor, lengths: torch.Tensor, group_size: int, keep: int | torch.Tensor, metric: str
) -> torch.Tensor:
    """GFPO's filter (arXiv 2508.09726, §3): in each group the ``keep`` responses with the smallest length
    (``metric="length"``) or the largest reward per token r_i / L_i (``"token_efficiency"``); ties go to the
    lower index. ``keep``: one k for every group, or k per group [B] (Adaptive Difficulty GFPO). [N] bool."""
    r, L = rewards.to(torch.float64).view(-1, group_size), lengths.to(torch.float64).view(-1, group_size)  # [B, G]
    if metric == "length":
        score = -L
    elif metric == "token_efficiency":
        score = r / L.clamp(min=1.0)
    else:
        raise ValueError(f"loss.gfpo_metric {metric!r}: choose from ['length', 'token_efficiency']")
    order = torch.sort(-score, dim=1, stable=True).indices  # [B, G] best first, ties by index
    place = torch.empty_like(order).scatter_(1, order, torch.arange(group_size).expand_as(order))  # [B, G] rank
    k = torch.as_tensor(keep, dtype=torch.long).reshape(-1, 1)  # [B, 1] or [1, 1]
    return (place < k).view(-1)


def gfpo_advantages(
    rewards: torch.Tensor, kept: torch.Tensor, group_size: int, scale_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """GFPO's advantages (arXiv 2508.09726, Eq. 2): mean and std over each group's kept set S only,
    A_i = (r_i - mean_S(r)) / (std_S(r) + eps) for i in S, and 0 for the filtered-out rows (which also leave
    the loss). The std is the unbiased one over |S|, as ``group_advantages``. [N] float64."""
    r = rewards.to(torch.float64).view(-1, group_size)  # [B, G]
    m = kept.view(-1, group_size).to(torch.float64)  # [B, G]
    n = m.sum(dim=1, keepdim=True)  # [B, 1]
    mean = (r * m).sum(dim=1, keepdim=True) / n
    centered = (r - mean) * m  # [B, G]
    if scale_std:
        std = torch.sqrt((centered**2).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1))
        centered = centered / (std + eps)
    big = torch.finfo(torch.float64).max
    hi = torch.where(m > 0, r, torch.full_like(r, -big)).max(dim=1, keepdim=True).values
    lo = torch.where(m > 0, r, torch.full_like(r, big)).min(dim=1, keepdim=True).values
    return torch.where(hi == lo, torch.zeros_like(centered), centered).view(-1)
