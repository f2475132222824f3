"""The step's advantages as the config asks: GRPO's per group (the default), DLER's batch-wise
normalization (``loss.adv_norm=batch``), or GFPO's filtered groups (``loss.gfpo_keep`` > 0, or k per prompt
with ``loss.gfpo_adaptive``). One call from the step (``trainer/loop.py``); the math is in
``trainer/advantages.py`` and ``trainer/difficulty.py``."""

from __future__ import annotations

import torch

from trainer.advantages import batch_std_advantages, gfpo_advantages, gfpo_keep_mask, group_advantages
from trainer.config import Config
from trainer.difficulty import difficulty_keep

DIGEST_KEY = "gfpo_difficulty"  # adaptive GFPO's streaming quartiles, in the run state (saved in checkpoints)


def step_advantages(
    cfg: Config, rewards_all: torch.Tensor, lengths_all: torch.Tensor, rank: int, n_local: int, run: dict
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """This rank's advantages [n_local], the rows that stay in the loss [n_local] (bool; GFPO drops the
    filtered ones) and metrics. ``rewards_all``, ``lengths_all``: the whole step's batch [N_global], the same on
    every rank. ``run``: the run state carried across steps and checkpoints (adaptive GFPO updates its
    difficulty digest there, from the gathered rewards, so every rank holds the same one)."""
    G, lo = cfg.rollout.group_size, cfg.loss
    mine = slice(rank * n_local, (rank + 1) * n_local)
    if lo.gfpo_keep or lo.gfpo_adaptive:
        keep, metrics = lo.gfpo_keep, {}
        if lo.gfpo_adaptive:
            ks = {b: getattr(lo, f"gfpo_k_{b}") for b in ("easy", "medium", "hard", "very_hard")}
            keep, run[DIGEST_KEY], metrics = difficulty_keep(
                rewards_all, G, ks, run.get(DIGEST_KEY), lo.gfpo_warmup_steps, lo.gfpo_tdigest_compression
            )  # keep: [B_global]
        kept_all = gfpo_keep_mask(rewards_all, lengths_all, G, keep, lo.gfpo_metric)  # [N_global]
        adv_all = gfpo_advantages(rewards_all, kept_all, G, lo.scale_std, lo.adv_eps)
        metrics["gfpo/kept_length"] = lengths_all[kept_all].double().mean().item()
        return adv_all[mine], kept_all[mine], metrics
    keep = torch.ones(n_local, dtype=torch.bool)
    if lo.adv_norm == "batch":
        return batch_std_advantages(rewards_all, G, lo.adv_eps, lengths_all)[mine], keep, {}
    return group_advantages(rewards_all[mine], G, lo.scale_std, lo.adv_eps), keep, {}
