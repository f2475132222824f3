"""Shared pieces of the objectives: clipped surrogates, KL estimators, masked reductions, metric records.

Conventions (see ../README.md "Objectives"):
- rows are N completions, columns T completion positions; ``mask [N, T]`` is 1.0 on sampled tokens
  (EOS included) and 0.0 on padding. Padding values of ``logp``/``old_logp`` never reach the loss:
  every tensor is passed through ``torch.where(mask, x, 0)`` before use, so NaN/inf garbage there is harmless.
- an objective returns one loss contribution per row, ``per_row [N]``, and the *unit* it is normalized by:
  the loss of an optimizer step is ``sum(per_row over all micro-batches and ranks) / global count of unit``.
- a row with no loss tokens (mask all zero: filtered, or padding) contributes 0 and is not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

Unit = Literal["sequences", "tokens"]


@dataclass
class LossParams:
    """The genuine knobs of an objective; everything else is fixed by its name."""

    clip_low: float  # ratio lower bound is 1 - clip_low
    clip_high: float  # ratio upper bound is 1 + clip_high
    beta: float = 0.0  # KL coefficient to the reference policy (0: no reference model)
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    max_tokens: int = 1024  # Dr. GRPO's constant divisor (the maximum completion length)


@dataclass
class LossTerms:
    """What an objective returns: per-row contributions and metric records (the unit they are divided by is
    the objective's, ``Objective.unit``)."""

    per_row: torch.Tensor  # [N] loss contribution of each row (0 for rows without tokens)
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    # name -> (sum, count) for means; names ending in _min/_max hold (value, 1) and reduce by min/max


@dataclass(frozen=True, kw_only=True)
class Objective:
    """An objective's function and what its name fixes, registered next to the function (``@objective``)."""

    name: str
    fn: Callable[..., LossTerms]  # (logp, old_logp, adv, mask, params, ref_logp) -> LossTerms
    paper: str
    ratio_level: str  # "token", "sequence" or "sequence (token grad)"
    aggregation: str  # human-readable, for the README table and logs
    clip_low: float  # the paper's default bounds
    clip_high: float
    scale_std: bool  # divide advantages by the group std by default
    unit: Unit = "sequences"  # what the summed per-row losses are divided by


OBJECTIVES: dict[str, Objective] = {}  # name -> objective, in registration order (grpo first)


def objective(name: str, **fields) -> Callable[[Callable[..., LossTerms]], Callable[..., LossTerms]]:
    """Function decorator: register it as the objective ``name`` (``loss.name``) with ``fields`` (keyword
    fields of ``Objective``: paper, ratio_level, aggregation, clip_low, clip_high, scale_std, unit)."""

    def add(fn: Callable[..., LossTerms]) -> Callable[..., LossTerms]:
        if name in OBJECTIVES:
            raise ValueError(f"objective {name!r} is registered twice")
        OBJECTIVES[name] = Objective(name=name, fn=fn, **fields)
        return fn

    return add


def count_units(mask: torch.Tensor, unit: Unit) -> torch.Tensor:
    """Number of rows that have at least one token (``sequences``), or number of tokens (``tokens``)."""
    if unit == "tokens":
        return mask.sum()
    return (mask.sum(dim=1) > 0).sum().to(mask.dtype)


def clean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero out padding positions so that whatever they hold (NaN, inf) cannot leak into sums or grads."""
    return torch.where(mask > 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (clean(x, mask) * mask).sum() if dim is None else (clean(x, mask) * mask).sum(dim=dim)


def masked_mean_rows(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each row's tokens, [N, T] -> [N]; an empty row gives 0 (its length is clamped to 1)."""
    return masked_sum(x, mask, dim=1) / mask.sum(dim=1).clamp(min=1.0)


def clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, clip_low: float, clip_high: float) -> torch.Tensor:
    """PPO's pessimistic surrogate as a loss: ``-min(ratio * A, clip(ratio, 1-lo, 1+hi) * A)``.

    Works elementwise for token ratios ``[N, T]`` with ``adv [N, 1]`` and sequence ratios ``[N]`` with
    ``adv [N]``. Where the clipped branch is taken the gradient w.r.t. ``ratio`` is exactly zero.
    """
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * adv
    return -torch.minimum(unclipped, clipped)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from samples of pi (Schulman, "Approximating KL divergence").

    k1 = log(pi/ref); k2 = 0.5 * log(pi/ref)^2; k3 = ref/pi - log(ref/pi) - 1 (unbiased, always >= 0;
    the estimator of DeepSeekMath Eq. 4).
    """
    log_ratio = ref_logp - logp  # [N, T] log(ref/pi)
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.pow(2)
    if estimator == "k3":
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"unknown kl_estimator {estimator!r}; choose from ['k1', 'k2', 'k3']")


def ratio_stats(
    ratio: torch.Tensor,
    log_ratio: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    p: LossParams,
    level: str,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Clip fractions, ratio extremes and approximate KL(old || new), as (sum, count) records.

    ``ratio``/``log_ratio``/``adv`` are [N, T]/[N, T]/[N, 1] at token level or [N]/[N]/[N] at sequence
    level. A clip is counted only where it binds: below 1-lo with A<0, above 1+hi with A>0.
    """
    with torch.no_grad():
        if level == "token":
            valid = mask > 0  # [N, T]
        else:
            valid = mask.sum(dim=1) > 0  # [N]
        n = valid.sum().to(torch.float32)
        r = ratio.detach()[valid]
        a = adv.expand_as(ratio)[valid]
        lr = log_ratio.detach()[valid]
        low = ((r < 1.0 - p.clip_low) & (a < 0)).sum().to(torch.float32)
        high = ((r > 1.0 + p.clip_high) & (a > 0)).sum().to(torch.float32)
        # k3 estimate of KL(old || new) with samples from old: (r - 1) - log r
        approx_kl = ((torch.exp(lr) - 1.0) - lr).sum().to(torch.float32)
        big = torch.tensor(float("inf"))
        one = torch.tensor(1.0)
        return {
            f"clip_frac_low_{level}": (low, n),
            f"clip_frac_high_{level}": (high, n),
            f"clip_frac_{level}": (low + high, n),
            "ratio_mean": (r.to(torch.float32).sum(), n),
            "ratio_min": (r.min().float() if r.numel() else big, one),
            "ratio_max": (r.max().float() if r.numel() else -big, one),
            "approx_kl_old": (approx_kl, n),
        }


def truncated_is_weights(
    old_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor, cap: float, level: str
) -> torch.Tensor:
    """Truncated importance sampling for the train/inference mismatch (Yao et al. 2025, "Your Efficient RL
    Framework Secretly Brings You Off-Policy RL Training"): w = min(pi_train / pi_sampler, C), no gradient.

    ``level="token"``: w_t = min(exp(old_t - sampler_t), C), [N, T] (0 on padding).
    ``level="sequence"``: w_i = min(exp(mean_t(old_t - sampler_t)), C), [N] (the length-normalized sequence
    ratio, matching GSPO's sequence ratio). Multiplying the advantage by w scales each surrogate term by w,
    since w > 0 commutes with the min/clip.
    """
    log_w = clean(old_logp - sampler_logp, mask).detach()  # [N, T]
    if level == "token":
        return torch.exp(log_w).clamp(max=cap) * mask
    return torch.exp(masked_mean_rows(log_w, mask)).clamp(max=cap)  # [N]
