"""DLER's truncation penalty, the scheme ``dler``: no knobs of its own (the limit is ``rollout.max_new_tokens``),
so no ``reward.dler`` section."""

from __future__ import annotations

import torch

from rewards.schemes.base import RewardBatch, Stateless, register


@register("dler")
class DLERTruncation(Stateless):
    """DLER's length penalty (Liu et al., "Doing Length pEnalty Right", arXiv 2510.15110, §3): plain
    truncation, r_i = c_i * (1 - truncated_i): a response that hits the generation limit
    (``rollout.max_new_tokens``, the truncation length) earns 0 even if its cut text holds the answer. The
    recipe around it (batch-wise advantage normalization, clip-higher, dynamic sampling) is
    ``configs/dler.yaml``; this scheme alone is the penalty. ``penalty_scale`` s gives 1 - s instead of 0.
    Under this scheme dynamic sampling drops groups whose rewards tie (``trainer.sampling.tied``), as DLER
    does, not groups whose correctness ties."""

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return b.correct.double() * (1.0 - b.truncated.double()), {}

    @classmethod
    def from_config(cls, reward) -> DLERTruncation:
        return cls()
