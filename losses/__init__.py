"""Objectives, selected by one name. ``OBJECTIVES[name]`` fixes ratio level, clipping and aggregation; each is
registered next to its function in ``losses/objectives.py`` (``@objective("grpo", paper=..., unit=...)``).

Imports only torch and the standard library, so tests and readers can use it without the trainer.
"""

from __future__ import annotations

import torch

from losses import objectives  # noqa: F401  (registers the objectives)
from losses.core import OBJECTIVES, LossParams, LossTerms, Objective, count_units, objective


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
    *,
    ref_logp: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LossTerms]:
    """The loss of one whole batch (local normalization), for tests and for reading next to the papers.

    The trainer uses the same per-row terms but divides by counts summed over micro-batches and ranks.
    """
    obj = get_objective(name)
    terms = obj.fn(logp, old_logp, adv, mask, params, ref_logp)
    return terms.per_row.sum() / count_units(mask, obj.unit).clamp(min=1.0), terms


__all__ = [
    "OBJECTIVES",
    "LossParams",
    "LossTerms",
    "Objective",
    "compute_loss",
    "count_units",
    "get_objective",
    "objective",
]
