"""Micro-batches of one learner update: which rows share a forward/backward pass.

Rows are sorted by length and packed up to a token budget (``optim.max_tokens_per_micro_batch``), so rows of
similar length share a pass and little compute goes to padding; ``padded_tokens`` says what a pass computes.
Only the learner plans micro-batches (``trainer/learner.py``); the batch layout is ``rollout.base.RolloutBatch``.
"""

from __future__ import annotations

import torch

from rollout.base import RolloutBatch
from trainer import dist


def padded_tokens(batch: RolloutBatch, idx: torch.Tensor) -> tuple[int, int]:
    """(real, computed) tokens of ``batch.rows(idx)``: computed = rows x (longest prompt + longest completion)."""
    prompt = batch.attention_mask[idx, : batch.prompt_width].sum(dim=1)  # [n]
    comp = batch.completion_mask[idx].sum(dim=1).long()  # [n]
    width = int(prompt.max()) + max(1, int(comp.max())) if len(idx) else 0
    return int(prompt.sum() + comp.sum()), len(idx) * width


def pack_by_tokens(batch: RolloutBatch, idx: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Rows ``idx`` of ``batch`` sorted by length (prompt + completion, longest first) and cut into consecutive
    groups whose padded size ``rows x (longest prompt + longest completion)`` stays within ``budget`` tokens (a
    row longer than the budget alone). The cuts minimize the padded tokens computed plus a fixed cost of
    ``budget // 8`` tokens per group (a pass has costs of its own: kernel launches, ZeRO-3 weight gathers), by
    dynamic programming over the sorted rows; equal lengths give groups of ``budget // length`` rows. Every row
    lands in exactly one group."""
    prompt = batch.attention_mask[idx, : batch.prompt_width].sum(dim=1).tolist()
    comp = batch.completion_mask[idx].sum(dim=1).long().clamp(min=1).tolist()
    order = sorted(range(len(idx)), key=lambda i: (-(prompt[i] + comp[i]), i))
    n, per_pass = len(order), budget // 8
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest cost of the first j sorted rows
    cut = [0] * (n + 1)  # cut[j]: where the last group of that cheapest split starts
    for j in range(1, n + 1):
        max_p = max_c = 0
        for i in range(j - 1, -1, -1):  # the last group is order[i:j]
            max_p, max_c = max(max_p, prompt[order[i]]), max(max_c, comp[order[i]])
            size = (j - i) * (max_p + max_c)
            if size > budget and j - i > 1:
                break
            if best[i] + size + per_pass < best[j]:
                best[j], cut[j] = best[i] + size + per_pass, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return [idx[torch.tensor(g, dtype=torch.long)] for g in reversed(groups)]


def plan_micro_batches(
    batch: RolloutBatch, rows: torch.Tensor, micro_batch_size: int, token_budget: int | None
) -> list[torch.Tensor | None]:
    """Row indices of each micro-batch of ``rows``, then ``None`` (a zero-weight pass) until this rank has as
    many entries as the rank with the most: under ZeRO-2/3 every backward (ZeRO-3: every forward) is
    collective, so every rank runs the same number of passes.

    ``token_budget`` 0: ``micro_batch_size`` rows at a time in rollout order; None: packed to the fixed path's
    largest micro-batch (``micro_batch_size`` rows as wide as the update's padded width); otherwise packed to
    that many tokens (``pack_by_tokens``)."""
    if token_budget == 0:
        plan: list[torch.Tensor | None] = list(rows.split(micro_batch_size))
    else:
        budget = token_budget or micro_batch_size * padded_tokens(batch, rows)[1] // len(rows)
        plan = list(pack_by_tokens(batch, rows, budget))
    if dist.world() > 1:
        most = int(dist.all_reduce(torch.tensor(len(plan)), "max").item())
        plan += [None] * (most - len(plan))
    return plan
