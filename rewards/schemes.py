"""Reward schemes: small picklable objects that turn the batch's grades and lengths into rewards.

A scheme sees the *whole* batch of the step (all ranks, groups contiguous), so batch-level schemes rank
groups globally and stateful ones keep identical state on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RewardBatch:
    correct: torch.Tensor  # [N] 1.0 if the extracted answer matches the reference
    has_answer: torch.Tensor  # [N] 1.0 if a final answer could be extracted
    lengths: torch.Tensor  # [N] completion tokens (EOS included)
    truncated: torch.Tensor  # [N] 1.0 if the completion hit max_new_tokens
    group_size: int
    max_new_tokens: int


class Binary:
    """1 for a correct answer, 0 otherwise (DeepSeek-R1, arXiv 2501.12948 §2.2.2, accuracy reward), plus
    ``format_weight`` for any response with an extractable final answer."""

    def __init__(self, format_weight: float = 0.0):
        self.format_weight = format_weight

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        r = b.correct.float() + self.format_weight * b.has_answer.float()  # [N]
        return r, {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


SCHEMES = {"binary": Binary}


def build_scheme(name: str, **kwargs):
    if name not in SCHEMES:
        raise KeyError(f"unknown reward.name {name!r}; choose from {sorted(SCHEMES)}")
    return SCHEMES[name](**kwargs)
