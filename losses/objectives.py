"""The objectives, one pure function each: (logp, old_logp, adv, mask, params, ref_logp) -> LossTerms.

Shapes: ``logp, old_logp, ref_logp, mask [N, T]``, ``adv [N]``. Losses are quantities to minimize. Each
function states its paper and equation; aggregation and normalization units are fixed by the name.
"""

from __future__ import annotations

import torch

from losses.core import (
    LossParams,
    LossTerms,
    clean,
    clipped_surrogate,
    kl_penalty,
    masked_mean_rows,
    masked_sum,
    objective,
    ratio_stats,
)


def _token_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, p: LossParams
) -> tuple[torch.Tensor, dict]:
    """Per-token clipped surrogate l_t = -min(r_t A_i, clip(r_t) A_i) with r_t = exp(logp_t - old_t)."""
    log_ratio = clean(logp - old_logp, mask)  # [N, T]
    ratio = torch.exp(log_ratio)  # [N, T]
    a = (adv[:, None] if adv.dim() == 1 else adv).to(ratio.dtype)  # [N, 1], or [N, T] per-token advantages
    loss = clipped_surrogate(ratio, a, p.clip_low, p.clip_high)  # [N, T]
    return loss, ratio_stats(ratio, log_ratio, a, mask, p, "token")


def _add_kl(
    tok_loss: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    mask: torch.Tensor,
    p: LossParams,
    stats: dict,
) -> torch.Tensor:
    """Add beta * KL(pi || ref) per token (DeepSeekMath Eq. 3); a no-op when beta == 0."""
    if p.beta == 0.0:
        return tok_loss
    if ref_logp is None:
        raise ValueError("loss.beta > 0 needs ref_logp (the reference model's log-probs)")
    kl = kl_penalty(clean(logp, mask), clean(ref_logp, mask), p.kl_estimator)  # [N, T]
    stats["kl_ref"] = (masked_sum(kl.detach(), mask).float(), mask.sum().float())
    return tok_loss + p.beta * kl


@objective(
    "grpo",
    paper="arXiv 2402.03300",
    ratio_level="token",
    aggregation="seq-mean of token-means",
    clip_low=0.2,
    clip_high=0.2,
    scale_std=True,
)
def grpo(logp, old_logp, adv, mask, p: LossParams, ref_logp=None) -> LossTerms:
    """GRPO, DeepSeekMath (Shao et al., arXiv 2402.03300), Eq. 3:

    J = 1/G sum_i 1/|o_i| sum_t [ min(r_t A_i, clip(r_t, 1-eps, 1+eps) A_i) - beta D_KL ]

    token ratio r_t, mean over each sequence's tokens, then mean over sequences. Paper defaults:
    eps = 0.2 (both sides), beta = 0.04 with the k3 estimator (groupwise defaults beta to 0, as TRL does).
    """
    tok, stats = _token_surrogate(logp, old_logp, adv, mask, p)  # [N, T]
    tok = _add_kl(tok, logp, ref_logp, mask, p, stats)
    return LossTerms(per_row=masked_mean_rows(tok, mask), stats=stats)


@objective(
    "dr_grpo",
    paper="arXiv 2503.20783",
    ratio_level="token",
    aggregation="token-sum / L_max, seq-mean",
    clip_low=0.2,
    clip_high=0.2,
    scale_std=False,
)
def dr_grpo(logp, old_logp, adv, mask, p: LossParams, ref_logp=None) -> LossTerms:
    """Dr. GRPO, "Understanding R1-Zero-Like Training" (Liu et al., arXiv 2503.20783), Eq. 3:

    J = 1/G sum_i sum_t min(r_t A_i, clip(r_t) A_i) / L_max, with A_i = r_i - mean(r) (no std scaling).

    Removes GRPO's 1/|o_i| length bias by dividing token sums by a constant (``max_tokens``, the maximum
    completion length) instead of each sequence's length. eps = 0.2.
    """
    tok, stats = _token_surrogate(logp, old_logp, adv, mask, p)  # [N, T]
    tok = _add_kl(tok, logp, ref_logp, mask, p, stats)
    return LossTerms(per_row=masked_sum(tok, mask, dim=1) / p.max_tokens, stats=stats)


@objective(
    "dapo",
    paper="arXiv 2503.14476",
    ratio_level="token",
    aggregation="token-mean over batch",
    clip_low=0.2,
    clip_high=0.28,
    scale_std=True,
    unit="tokens",
)
def dapo(logp, old_logp, adv, mask, p: LossParams, ref_logp=None) -> LossTerms:
    """DAPO (Yu et al., arXiv 2503.14476), Eq. 8 (token-level policy gradient loss):

    J = 1/(sum_i |o_i|) sum_i sum_t min(r_t A_i, clip(r_t, 1-eps_low, 1+eps_high) A_i)

    every token of the batch weighs the same; clip-higher eps_low = 0.2, eps_high = 0.28. Dynamic sampling
    and overlong shaping are separate options (reward and sampling config), not part of the loss.
    """
    tok, stats = _token_surrogate(logp, old_logp, adv, mask, p)  # [N, T]
    tok = _add_kl(tok, logp, ref_logp, mask, p, stats)
    return LossTerms(per_row=masked_sum(tok, mask, dim=1), stats=stats)


def sequence_log_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's log s_i = (1/|y_i|) sum_t (logp_t - old_logp_t), [N, T] -> [N] (0 for empty rows)."""
    return masked_mean_rows(logp - old_logp, mask)


def _sequence_surrogate(logp, old_logp, adv, mask, p: LossParams) -> tuple[torch.Tensor, dict]:
    """Per-sequence clipped surrogate l_i = -min(s_i A_i, clip(s_i) A_i), [N]."""
    log_s = sequence_log_ratio(logp, old_logp, mask)  # [N]
    s = torch.exp(log_s)  # [N]
    a = adv.to(s.dtype)  # [N]
    return clipped_surrogate(s, a, p.clip_low, p.clip_high), ratio_stats(s, log_s, a, mask, p, "seq")


def _sequence_kl(logp, ref_logp, mask, p: LossParams, stats: dict) -> torch.Tensor:
    """beta * mean_t KL_t per row (0 when beta == 0), the sequence-level objectives' KL term, [N]."""
    if p.beta == 0.0:
        return torch.zeros(mask.shape[0], dtype=logp.dtype, device=logp.device)
    return masked_mean_rows(_add_kl(torch.zeros_like(logp), logp, ref_logp, mask, p, stats), mask)


@objective(
    "gspo",
    paper="arXiv 2507.18071",
    ratio_level="sequence",
    aggregation="seq-mean",
    clip_low=3e-4,
    clip_high=4e-4,
    scale_std=True,
)
def gspo(logp, old_logp, adv, mask, p: LossParams, ref_logp=None) -> LossTerms:
    """GSPO (Zheng et al., Qwen, arXiv 2507.18071), Eq. 5-7:

    J = 1/G sum_i min(s_i A_i, clip(s_i, 1-eps_low, 1+eps_high) A_i),
    s_i = (pi(y_i|x) / pi_old(y_i|x))^(1/|y_i|) = exp(1/|y_i| sum_t log(pi_t / pi_old_t)).

    Sequence-level ratio and clipping, mean over sequences. Paper (v2, §5.1): eps_low = 3e-4,
    eps_high = 4e-4; no KL term.
    """
    seq, stats = _sequence_surrogate(logp, old_logp, adv, mask, p)  # [N]
    seq = seq + _sequence_kl(logp, ref_logp, mask, p, stats)
    has_tokens = (mask.sum(dim=1) > 0).to(seq.dtype)
    return LossTerms(per_row=seq * has_tokens, stats=stats)


@objective(
    "gspo_token",
    paper="arXiv 2507.18071",
    ratio_level="sequence (token grad)",
    aggregation="seq-mean of token-means",
    clip_low=3e-4,
    clip_high=4e-4,
    scale_std=True,
)
def gspo_token(logp, old_logp, adv, mask, p: LossParams, ref_logp=None) -> LossTerms:
    """GSPO-token (arXiv 2507.18071, Eq. 13-14):

    s_{i,t} = sg[s_i] * pi(y_t) / sg[pi(y_t)];  J = 1/G sum_i 1/|y_i| sum_t min(s_{i,t} A_{i,t}, clip(s_{i,t}) A_{i,t})

    Numerically equal to GSPO (s_{i,t} == s_i) and with A_{i,t} = A_i the same gradient; the token form
    exists so per-token advantages can be plugged in: ``adv`` is ``[N]`` (A_i) or ``[N, T]`` (A_{i,t}); the
    gradient on token t is then -s_i A_{i,t} / (G |y_i|) where unclipped. Same clip bounds as GSPO.
    """
    log_s = sequence_log_ratio(logp, old_logp, mask)  # [N]
    log_s_tok = log_s.detach()[:, None] + logp - logp.detach()  # [N, T], value log s_i
    ratio = torch.exp(clean(log_s_tok, mask))  # [N, T]
    a = (adv[:, None] if adv.dim() == 1 else clean(adv, mask)).to(ratio.dtype)  # [N, 1] or [N, T]
    tok = clipped_surrogate(ratio, a, p.clip_low, p.clip_high)  # [N, T]
    a_seq = adv.to(log_s.dtype) if adv.dim() == 1 else masked_mean_rows(a, mask).to(log_s.dtype)  # [N] for stats
    stats = ratio_stats(torch.exp(log_s), log_s, a_seq, mask, p, "seq")
    tok = _add_kl(tok, logp, ref_logp, mask, p, stats)
    return LossTerms(per_row=masked_mean_rows(tok, mask), stats=stats)


@objective(
    "luspo",
    paper="arXiv 2602.05261",
    ratio_level="sequence",
    aggregation="seq-mean of |y|-weighted loss",
    clip_low=2e-3,
    clip_high=2.5e-3,
    scale_std=True,
)
def luspo(logp, old_logp, adv, mask, p: LossParams, ref_logp=None) -> LossTerms:
    """LUSPO, length-unbiased sequence policy optimization (Liu, Yin et al., arXiv 2602.05261):

    J = 1/G sum_i |y_i| min(s_i A_i, clip(s_i, 1-eps_low, 1+eps_high) A_i)

    GSPO's per-sequence loss times the sequence length. GSPO's geometric-mean ratio puts 1/|y_i| on every
    token's gradient; the |y_i| factor cancels it, so every token of row i gets weight s_i A_i whatever the
    length, removing GSPO's preference for short correct and long incorrect answers. Paper: eps_low =
    2e-3, eps_high = 2.5e-3.

    Normalization: exactly the paper's 1/G (mean over sequences), so the loss value grows with the mean
    length (its gradient matches DAPO's token sum, not its token mean). Adam is invariant to that scale;
    gradient clipping is not, so ``optim.grad_clip`` binds more often than under GSPO (see README).
    """
    seq, stats = _sequence_surrogate(logp, old_logp, adv, mask, p)  # [N]
    seq = seq + _sequence_kl(logp, ref_logp, mask, p, stats)
    length = mask.sum(dim=1).to(seq.dtype)  # [N] |y_i|, 0 for empty rows
    return LossTerms(per_row=seq * length, stats=stats)
