"""The ``hf`` backend: batched sampling with a KV cache straight from the learner's module.

Our own decode loop rather than ``generate()``: it records the sampler's log-probs for free (the logits are
already there), stops as soon as every row hit EOS, and can keep ranks in lockstep under ZeRO-3, where every
forward is a collective and a rank that stopped early would hang the others.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from transformers import DynamicCache

from rollout.base import Completion


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches ``top_p``; others get -inf. [N, V]"""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # [N, V]
    probs = sorted_logits.softmax(dim=-1)
    drop = probs.cumsum(dim=-1) - probs > top_p  # mass before this token already reaches top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


def sample_tokens(
    logits: torch.Tensor, generator: torch.Generator, top_p: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row drawn exactly from ``softmax(logits)`` (restricted to the ``top_p`` nucleus), and its
    log-prob under the full softmax (what the learner computes): ``[N, V] -> (tokens [N, 1], log-probs [N, 1])``.

    Inverse-CDF sampling with one uniform number per row: one pass of ``exp``, one cumulative sum (float64, so
    rounding does not bias the tail of a 151,936-entry vocabulary) and a binary search. No softmax, log-softmax
    or ``[N, V]`` random tensor is formed (``multinomial`` on probabilities needs the first two, Gumbel-max the
    third); at V = 151,936 this is 2-4x faster than softmax + multinomial on CPU. Rows go a block at a time, so
    the float64 CDF never holds more than 32 MB."""
    n, v = logits.shape
    u = torch.rand(n, 1, generator=generator, device=logits.device, dtype=torch.float64)  # [N, 1]
    tok = torch.empty(n, 1, dtype=torch.long, device=logits.device)
    logz = torch.empty(n, 1, dtype=torch.float32, device=logits.device)
    rows = max(1, (32 << 20) // (8 * v))  # rows per block: a float64 CDF of at most 32 MB at a time
    for s in range(0, n, rows):
        z = logits[s : s + rows]  # [r, V]
        m = z.max(dim=-1, keepdim=True).values  # [r, 1]
        cdf = (z - m).exp_().cumsum(dim=-1, dtype=torch.float64)  # [r, V], unnormalized
        logz[s : s + rows] = m + cdf[:, -1:].log().float()
        if top_p < 1.0:
            cdf = (top_p_filter(z, top_p) - m).exp_().cumsum(dim=-1, dtype=torch.float64)
        pick = torch.searchsorted(cdf, u[s : s + rows] * cdf[:, -1:], right=True)  # first index with cdf > u
        tok[s : s + rows] = pick.clamp_(max=v - 1)
    return tok, logits.gather(1, tok) - logz


class HFBackend:
    """Samples from ``get_model()`` (the learner's module, so no weight sync is needed)."""

    def __init__(
        self,
        get_model: Callable[[], torch.nn.Module],
        tokenizer,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        device: str | torch.device = "cpu",
        *,
        all_ranks_done: Callable[[bool], bool] | None = None,
    ):
        self.get_model, self.tok = get_model, tokenizer
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.device = torch.device(device)
        # under ZeRO-3 with several ranks every forward is collective: keep stepping until all ranks are done
        self.lockstep = all_ranks_done is not None
        self.all_ranks_done = all_ranks_done or (lambda done: done)
        self.eos_id, self.pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id

    def sync_weights(self) -> None:
        """Nothing to do: this backend samples from the learner's own parameters."""

    def with_sampling(self, max_new_tokens: int, temperature: float, top_p: float) -> HFBackend:
        """The same model with other sampling settings (evaluation)."""
        view = copy.copy(self)
        view.max_new_tokens, view.temperature, view.top_p = max_new_tokens, temperature, top_p
        return view

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], group_size: int, seed: int = 0) -> list[Completion]:
        model = self.get_model()
        was_training = model.training
        model.eval()
        try:
            tokens, logps = self._sample(prompts, group_size, model, seed)
        finally:
            model.train(was_training)
        out = []
        for i, (toks, lps) in enumerate(zip(tokens, logps)):
            stopped = bool(toks) and toks[-1] == self.eos_id
            out.append(
                Completion(
                    prompt_ids=prompts[i // group_size],
                    token_ids=toks,
                    logprobs=lps,
                    finish_reason="stop" if stopped else "length",
                    text=self.tok.decode(toks, skip_special_tokens=True),
                )
            )
        return out

    def _sample(
        self, prompts: list[list[int]], group_size: int, model, seed: int
    ) -> tuple[list[list[int]], list[list[float]]]:
        """Sample ``group_size`` continuations of each prompt. The prompt is prefilled once and its KV cache
        repeated G times; rows that hit EOS leave the batch (their cache rows are dropped) once a quarter of
        the active rows has finished, unless ranks must stay in lockstep."""
        n = len(prompts) * group_size
        cache, logits_last, attn, next_pos = self._prefill(prompts, group_size, model)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        tok_mat = torch.full((n, self.max_new_tokens), self.pad_id, dtype=torch.long, device=self.device)
        lp_mat = torch.zeros((n, self.max_new_tokens), device=self.device)
        rows = torch.arange(n, device=self.device)  # output row of each active batch row
        finished = torch.zeros(n, dtype=torch.bool, device=self.device)  # over active rows
        steps = 0
        for t in range(self.max_new_tokens):
            logits = self.constrain(logits_last.float() / self.temperature, t, rows)  # [n_active, V]
            tok, logp = sample_tokens(logits, gen, self.top_p)  # [n_active, 1] each
            live = ~finished
            tok_mat[rows[live], t] = tok[live, 0]
            lp_mat[rows[live], t] = logp[live, 0]
            tok = tok.masked_fill(finished[:, None], self.pad_id)
            finished |= tok[:, 0] == self.eos_id
            steps = t + 1
            if self.all_ranks_done(bool(finished.all())):
                break
            if not self.lockstep and int(finished.sum()) * 4 >= len(rows):  # drop finished rows
                keep = (~finished).nonzero().squeeze(1)  # [n_keep]
                cache.batch_select_indices(keep)
                rows, tok, attn, next_pos, finished = rows[keep], tok[keep], attn[keep], next_pos[keep], finished[keep]
            attn = torch.cat([attn, torch.ones((len(rows), 1), dtype=attn.dtype, device=self.device)], dim=1)
            o = model(input_ids=tok, attention_mask=attn, position_ids=next_pos, past_key_values=cache, use_cache=True)
            logits_last = o.logits[:, -1, :]
            next_pos = next_pos + 1
        return self._trimmed(tok_mat[:, :steps].cpu(), lp_mat[:, :steps].cpu())  # [N, T] each

    def _prefill(self, prompts: list[list[int]], group_size: int, model):
        """One forward over the left-padded prompts; the cache, last logits, attention mask and next positions
        repeated ``group_size`` times (rows of a group contiguous)."""
        b, width = len(prompts), max(len(r) for r in prompts)
        ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((b, width), dtype=torch.long)
        for i, r in enumerate(prompts):  # left padding keeps every row's last prompt token in the last column
            ids[i, width - len(r) :] = torch.tensor(r)
            attn[i, width - len(r) :] = 1
        ids, attn = ids.to(self.device), attn.to(self.device)
        pos = (attn.cumsum(dim=1) - 1).clamp(min=0)  # [B, P]
        cache = DynamicCache()
        out = model(
            input_ids=ids,
            attention_mask=attn,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache.batch_repeat_interleave(group_size)  # [B, ...] -> [N, ...], rows of a group contiguous
        logits_last = out.logits[:, -1, :].repeat_interleave(group_size, dim=0)  # [N, V]
        attn = attn.repeat_interleave(group_size, dim=0)  # [N, P]
        next_pos = pos[:, -1:].repeat_interleave(group_size, dim=0) + 1  # [N, 1]
        return cache, logits_last, attn, next_pos

    def constrain(self, logits: torch.Tensor, t: int, rows: torch.Tensor) -> torch.Tensor:
        """The logits token ``t`` is drawn from, ``[n_active, V]`` for output rows ``rows``: unchanged here; a
        subclass that constrains sampling overrides it (``scripts/bench_vs_trl.py`` forces lengths)."""
        return logits

    def _trimmed(self, tok_mat: torch.Tensor, lp_mat: torch.Tensor) -> tuple[list[list[int]], list[list[float]]]:
        """Each row up to its first EOS (inclusive); later columns are padding."""
        n = tok_mat.shape[0]
        is_eos = tok_mat == self.eos_id
        first_eos = torch.where(is_eos.any(dim=1), is_eos.float().argmax(dim=1), torch.full((n,), tok_mat.shape[1]))
        lengths = (first_eos + is_eos.any(dim=1).long()).clamp(max=tok_mat.shape[1]).tolist()
        return (
            [tok_mat[i, : lengths[i]].tolist() for i in range(n)],
            [lp_mat[i, : lengths[i]].tolist() for i in range(n)],
        )
