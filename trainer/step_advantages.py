"""The step's advantages as the config asks: GRPO's per group (the default), DLER's batch-wise
normalization (``loss.adv_norm=batch``), or GFPO's filtered groups (``loss.gfpo_keep`` > 0). One call from
the step (``trainer/loop.py``); the math is in ``trainer/advantages.py``."""

from __future__ import annotations

import torch

from trainer.advantages import batch_std_advantages, gfpo_advantages, gfpo_keep_mask, group_advantages
from trainer.config import Config


def step_advantages(
    cfg: Config, rewards_all: torch.Tensor, lengths_all: torch.Tensor, rank: int, n_local: int
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """This rank's advantages [n_local], the rows that stay in the loss [n_local] (bool; GFPO drops the
    filtered ones) and metrics. ``rewards_all``, ``lengths_all``: the whole step's batch [N_global]."""
    G, lo = cfg.rollout.group_size, cfg.loss
    mine = slice(rank * n_local, (rank + 1) * n_local)
    if lo.gfpo_keep:
        kept_all = gfpo_keep_mask(rewards_all, lengths_all, G, lo.gfpo_keep, lo.gfpo_metric)  # [N_global]
        adv_all = gfpo_advantages(rewards_all, kept_all, G, lo.scale_std, lo.adv_eps)
        kept_len = lengths_all[kept_all].double().mean().item()
        return adv_all[mine], kept_all[mine], {"gfpo/kept_length": kept_len}
    keep = torch.ones(n_local, dtype=torch.bool)
    if lo.adv_norm == "batch":
        return batch_std_advantages(rewards_all, G, lo.adv_eps, lengths_all)[mine], keep, {}
    return group_advantages(rewards_all[mine], G, lo.scale_std, lo.adv_eps), keep, {}
