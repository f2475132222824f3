"""Reward batches written by hand, for the reward schemes' tests."""

import torch

from rewards.schemes import RewardBatch, build_scheme


def reward_batch(correct, lengths, group_size, truncated=None, budgets=None, max_new_tokens=100) -> RewardBatch:
    """A batch of ``len(correct)`` completions in groups of ``group_size`` (float64; every answer parsable)."""
    c = torch.tensor(correct, dtype=torch.float64)
    t = torch.zeros_like(c) if truncated is None else torch.tensor(truncated, dtype=torch.float64)
    n = None if budgets is None else torch.tensor(budgets, dtype=torch.float64)
    L = torch.tensor(lengths, dtype=torch.float64)
    return RewardBatch(c, torch.ones_like(c), L, t, group_size, max_new_tokens, n)


def scheme_rewards(name: str, b: RewardBatch, **kw) -> list[float]:
    """The rewards the scheme called ``name`` (built with ``kw``) gives the batch."""
    return build_scheme(name, **kw)(b)[0].tolist()
