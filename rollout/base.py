"""The rollout interface: prompts in, G completions per prompt out; and the padded batch the learner trains on.

Layout of a ``RolloutBatch`` (N = B*G rows, groups contiguous):
    input_ids       [N, P+T]  prompt left-padded to width P, completion right-padded to width T
    attention_mask  [N, P+T]  1 on real prompt and completion tokens
    completion_mask [N, T]    1.0 on sampled tokens (EOS included), 0.0 on padding
    sampler_logp    [N, T]    the sampler's log-probs of the sampled tokens (after temperature), 0 on padding
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

FINISH_REASONS = ("stop", "length")  # the normal ones; anything else (vllm: abort, error) is counted, not trained on


@dataclass
class Completion:
    prompt_ids: list[int]
    token_ids: list[int]  # sampled tokens, EOS included when the sequence stopped
    logprobs: list[float]  # sampler log-prob of each sampled token
    finish_reason: str  # "stop" (EOS), "length" (hit max_new_tokens), or the engine's word for a failure
    text: str  # decoded completion without special tokens
    weight_version: int | None = None  # server backend: the server's weight version read after the request
    # ... and read before it: the two differ when a push overlapped the request (``rollout.server.overlap_push``),
    # its tokens then came from the versions between them (``trainer/ahead.py`` bounds the oldest)
    first_weight_version: int | None = None


class RolloutBackend(Protocol):
    def generate(self, prompts: list[list[int]], group_size: int, seed: int) -> list[Completion]:
        """``len(prompts) * group_size`` completions, the G samples of prompt j at rows j*G .. j*G+G-1."""
        ...

    def sync_weights(self) -> None:
        """Make the engine sample from the learner's current weights (no-op when they share memory)."""
        ...

    def with_sampling(self, max_new_tokens: int, temperature: float, top_p: float) -> RolloutBackend:
        """The same engine and weights with other sampling settings (used by evaluation)."""
        ...


@dataclass
class RolloutBatch:
    input_ids: torch.Tensor  # [N, P+T]
    attention_mask: torch.Tensor  # [N, P+T]
    completion_mask: torch.Tensor  # [N, T]
    sampler_logp: torch.Tensor  # [N, T]
    prompt_width: int  # P

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(dim=1)  # [N]

    def rows(self, idx: slice | torch.Tensor) -> RolloutBatch:
        """A subset of rows, trimmed of columns that are padding in every selected row."""
        am = self.attention_mask[idx]
        cm = self.completion_mask[idx]
        first = int((am[:, : self.prompt_width].sum(dim=0) > 0).nonzero().min()) if am.numel() else 0
        t = int(cm.sum(dim=1).max().item()) if cm.numel() else 0
        t = max(t, 1)
        cols = slice(first, self.prompt_width + t)
        return RolloutBatch(
            input_ids=self.input_ids[idx][:, cols],
            attention_mask=am[:, cols],
            completion_mask=cm[:, :t],
            sampler_logp=self.sampler_logp[idx][:, :t],
            prompt_width=self.prompt_width - first,
        )


def collate(completions: list[Completion], pad_id: int) -> RolloutBatch:
    """Pad a list of completions into the learner's layout."""
    n = len(completions)
    p = max(len(c.prompt_ids) for c in completions)
    t = max(1, max(len(c.token_ids) for c in completions))
    ids = torch.full((n, p + t), pad_id, dtype=torch.long)
    attn = torch.zeros((n, p + t), dtype=torch.long)
    cmask = torch.zeros((n, t), dtype=torch.float32)
    slogp = torch.zeros((n, t), dtype=torch.float32)
    for i, c in enumerate(completions):
        lp, lc = len(c.prompt_ids), len(c.token_ids)
        ids[i, p - lp : p] = torch.tensor(c.prompt_ids, dtype=torch.long)
        attn[i, p - lp : p + lc] = 1
        if lc:
            ids[i, p : p + lc] = torch.tensor(c.token_ids, dtype=torch.long)
            cmask[i, :lc] = 1.0
            slogp[i, :lc] = torch.tensor(c.logprobs, dtype=torch.float32)
    return RolloutBatch(ids, attn, cmask, slogp, p)


def encode_prompt(
    tok, problem: str, instruction: str = "", max_tokens: int | None = None, row_id: str = ""
) -> list[int]:
    """The user message (problem + instruction) through the model's chat template, as token ids."""
    content = f"{problem}\n{instruction}" if instruction else problem
    if tok.chat_template:
        text = tok.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = content
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None and len(ids) > max_tokens:
        raise ValueError(
            f"prompt of row {row_id!r} has {len(ids)} tokens > data.max_prompt_tokens={max_tokens}; "
            "raise data.max_prompt_tokens or filter the data"
        )
    return ids
