"""Objectives, selected by one name. ``OBJECTIVES[name]`` fixes ratio level, clipping and aggregation.

Imports only torch and the standard library, so tests and readers can use it without the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from losses import objectives
from losses.core import LossParams, LossTerms, count_units


@dataclass(frozen=True)
class Objective:
    name: str
    fn: Callable[..., LossTerms]
    paper: str
    ratio_level: str  # "token" or "sequence"
    aggregation: str  # human-readable, for the README table and logs
    clip_low: float  # the paper's default bounds
    clip_high: float
    scale_std: bool  # divide advantages by the group std by default
    unit: str = "sequences"  # what the summed per-row losses are divided by (must match fn's LossTerms.unit)


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in [
        Objective("grpo", objectives.grpo, "arXiv 2402.03300", "token", "seq-mean of token-means", 0.2, 0.2, True),
        Objective(
            "dr_grpo",
            objectives.dr_grpo,
            "arXiv 2503.20783",
            "token",
            "token-sum / L_max, seq-mean",
            0.2,
            0.2,
            False,
        ),
        Objective(
            "dapo",
            objectives.dapo,
            "arXiv 2503.14476",
            "token",
            "token-mean over batch",
            0.2,
            0.28,
            True,
            unit="tokens",
        ),
        Objective("gspo", objectives.gspo, "arXiv 2507.18071", "sequence", "seq-mean", 3e-4, 4e-4, True),
        Objective(
            "gspo_token",
            objectives.gspo_token,
            "arXiv 2507.18071",
            "sequence (token grad)",
            "seq-mean of token-means",
            3e-4,
            4e-4,
            True,
        ),
        Objective(
            "luspo",
            objectives.luspo,
            "arXiv 2602.05261",
            "sequence",
            "seq-mean of |y|-weighted loss",
            2e-3,
            2.5e-3,
            True,
        ),
    ]
}


def get_objective(name: str) -> Objective:
    """The objective called ``name``; an unknown name lists the valid ones."""
    if name not in OBJECTIVES:
        raise KeyError(f"unknown loss.name {name!r}; choose from {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


def compute_loss(
    name: str,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    params: LossParams,
    ref_logp: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LossTerms]:
    """The loss of one whole batch (local normalization), for tests and for reading next to the papers.

    The trainer uses the same per-row terms but divides by counts summed over micro-batches and ranks.
    """
    terms = get_objective(name).fn(logp, old_logp, adv, mask, params, ref_logp)
    return terms.per_row.sum() / count_units(mask, terms.unit).clamp(min=1.0), terms


__all__ = [
    "OBJECTIVES",
    "LossParams",
    "LossTerms",
    "Objective",
    "compute_loss",
    "count_units",
    "get_objective",
]
