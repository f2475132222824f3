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
