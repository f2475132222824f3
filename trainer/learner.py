"""The learner: a DeepSpeed engine around a transformers causal LM, per-token log-probs, and the update.

Normalization is global (OpenRLHF / nano-aha-moment style): the loss of an optimizer step is the sum of every
row's contribution over all micro-batches and ranks divided by the *global* count of the objective's unit, so
gradient accumulation and data parallelism do not change the objective. DeepSpeed averages gradients over
ranks and (by default) divides by the accumulation steps; we call ``backward(scale_wrt_gas=False)`` and
multiply by the world size to undo both.

Micro-batches (``optim.max_tokens_per_micro_batch``): the rows of an update are sorted by length and packed
up to a token budget, so rows of similar length share a pass and little compute goes to padding. Their
number then varies by update and by rank, so the accumulation boundary is driven explicitly
(``engine.set_gradient_accumulation_boundary``) and ranks with fewer micro-batches run zero-weight passes
until all have run as many as the busiest one: under ZeRO-2/3 every backward (and under ZeRO-3 every forward)
is collective. The loss denominators are computed over the whole update before any packing, so the
objective does not depend on how rows are grouped. On CPU and GPU alike the packed micro-batch is the usual
padded layout through SDPA (padding-free position-id packing needs FlashAttention's varlen kernels).
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import deepspeed
import torch
from transformers import AutoModelForCausalLM

from losses import LossParams, count_units, get_objective
from losses.core import LossTerms, truncated_is_weights
from rollout.base import RolloutBatch
from trainer import dist
from trainer.config import Config
from trainer.logprobs import check_head, head_logprobs
from trainer.metrics import Stopwatch
from trainer.micro_batches import padded_tokens, plan_micro_batches

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def deepspeed_config(cfg: Config, micro_batches_per_update: int, world_size: int) -> dict:
    """The DeepSpeed JSON config, built from the typed config (never hand-edited)."""
    zero: dict = {"stage": cfg.deepspeed.zero_stage}
    if cfg.deepspeed.offload_optimizer and cfg.deepspeed.zero_stage > 0:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": cfg.optim.micro_batch_size,
        "gradient_accumulation_steps": micro_batches_per_update,
        "train_batch_size": cfg.optim.micro_batch_size * micro_batches_per_update * world_size,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.model.dtype == "bf16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def token_logprobs(
    model: torch.nn.Module, batch: RolloutBatch, temperature: float, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(y_t | x, y_<t) of the completion tokens at ``temperature``, and optionally the entropy.

    Returns ``logp [n, T]`` (grad flows) and ``entropy [n, T]`` (no grad) or None. The LM head computes them
    a chunk of tokens at a time from the final hidden states (``trainer.logprobs``): no ``[n, T, V]`` logits
    tensor exists in the forward or the backward pass.
    """
    t = batch.completion_mask.shape[1]
    pos = (batch.attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # [n, P+T]
    targets = batch.input_ids[:, batch.prompt_width :]  # [n, T]
    with head_logprobs(getattr(model, "module", model), targets, temperature, with_entropy):  # engine or HF model
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=pos,
            logits_to_keep=t + 1,
            use_cache=False,
        )
    pair = out.logits[:, :t, :]  # [n, T, 2]: (log-prob, entropy) per completion token
    return pair[..., 0], (pair[..., 1].detach() if with_entropy else None)


class StatSums:
    """(sum, count) records reduced over micro-batches and ranks; *_min/*_max reduce by min/max."""

    def __init__(self):
        self.sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

    def add(self, name: str, total: torch.Tensor | float, count: torch.Tensor | float) -> None:
        total, count = float(total), float(count)
        s = self.sums[name]
        if name.endswith("_min"):
            s[0] = total if s[1] == 0 else min(s[0], total)
        elif name.endswith("_max"):
            s[0] = total if s[1] == 0 else max(s[0], total)
        else:
            s[0] += total
        s[1] += count

    def reduce(self) -> dict[str, float]:
        """Means (and extremes) over all ranks; every rank must call this with the same names."""
        names = sorted(self.sums)
        out = {}
        for op, pick in (
            ("sum", lambda n: not n.endswith(("_min", "_max"))),
            ("min", lambda n: n.endswith("_min")),
            ("max", lambda n: n.endswith("_max")),
        ):
            keys = [n for n in names if pick(n)]
            if not keys:
                continue
            vals = dist.all_reduce(torch.tensor([self.sums[k][0] for k in keys], dtype=torch.float64), op)
            counts = dist.all_sum(torch.tensor([self.sums[k][1] for k in keys], dtype=torch.float64))
            for k, v, c in zip(keys, vals.tolist(), counts.tolist()):
                out[k] = v if op != "sum" else (v / c if c > 0 else 0.0)
        return out


@dataclass
class Frozen:
    """Log-probs of every row of an update's batch under models that do not train during it, ``[N, T]`` on CPU."""

    old: torch.Tensor | None  # the policy before this batch's updates; None: one update (the current, detached)
    ref: torch.Tensor | None  # the reference model; None: loss.beta == 0


class Learner:
    """Owns the DeepSpeed engine (and the frozen reference model when ``loss.beta > 0``)."""

    def __init__(self, cfg: Config, model_path: str, device: torch.device):
        self.cfg, self.device = cfg, device
        world = dist.world()
        rows = cfg.data.prompts_per_step // world * cfg.rollout.group_size
        self.rows_per_update = rows // cfg.loss.updates_per_batch
        self.micro_batches = self.rows_per_update // cfg.optim.micro_batch_size
        self.ds_config = deepspeed_config(cfg, self.micro_batches, world)
        dtype = DTYPES[cfg.model.dtype]
        self._hf_ds = None
        if cfg.deepspeed.zero_stage == 3:  # partition weights at load time instead of materializing them
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_ds = HfDeepSpeedConfig(self.ds_config)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        o = cfg.optim
        if cfg.deepspeed.offload_optimizer and cfg.deepspeed.zero_stage > 0:
            # DeepSpeed's CPU Adam is required for offloaded optimizer state
            self.ds_config["optimizer"] = {
                "type": "AdamW",
                "params": {"lr": o.lr, "betas": [o.beta1, o.beta2], "weight_decay": o.weight_decay},
            }
            optimizer = None
        else:
            optimizer = torch.optim.AdamW(
                model.parameters(),
                lr=o.lr,
                betas=(o.beta1, o.beta2),
                weight_decay=o.weight_decay,
                fused=device.type == "cuda",
            )
        warmup = max(1, o.warmup_steps * cfg.loss.updates_per_batch)

        def schedule(opt):
            return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))

        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=schedule, config=self.ds_config
        )
        check_head(self.module)  # a head the chunked log-probs would get wrong is an error now, not a silent bias
        self.ref = None
        if cfg.loss.beta > 0:  # only then is a reference model loaded
            self.ref = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
            self.ref.requires_grad_(False)
        self.objective = get_objective(cfg.loss.name)
        self.params = LossParams(
            clip_low=cfg.loss.clip_low,
            clip_high=cfg.loss.clip_high,
            beta=cfg.loss.beta,
            kl_estimator=cfg.loss.kl_estimator,
            max_tokens=cfg.loss.max_tokens,
        )

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    @torch.no_grad()
    def frozen_logprobs(self, model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
        """Log-probs of all rows under ``model`` without grad (old policy or reference), [N, T]."""
        out = torch.zeros_like(batch.completion_mask)
        o = self.cfg.optim
        plan = plan_micro_batches(batch, torch.arange(len(out)), o.micro_batch_size, o.max_tokens_per_micro_batch)
        for rows in plan:
            mb = _to(batch.rows(rows if rows is not None else plan[0][-1:]), self.device)
            logp, _ = token_logprobs(model, mb, self.cfg.rollout.temperature)
            if rows is not None:  # None: a pass that only keeps this rank in step with the others
                out[rows, : logp.shape[1]] = logp.float().cpu()
        return out

    def update(self, batch: RolloutBatch, adv: torch.Tensor, step: int = 0) -> dict[str, float]:
        """``loss.updates_per_batch`` optimizer steps on this rank's rows ``batch`` with advantages ``adv [N]``.

        A non-finite loss or gradient on any rank skips that optimizer step on every rank (no change to the
        weights, optimizer moments or LR schedule); ``skipped_updates`` counts them. ``step`` is the training
        step (the update itself does not depend on it).
        """
        self.engine.train()
        clock = Stopwatch("old_ref_logprobs", "fwd_bwd", "optimizer")
        with clock("old_ref_logprobs"):
            # with one update per batch the policy has not moved: the old log-probs are the current ones,
            # detached, and ratios are exactly 1 without a second forward pass
            frozen = Frozen(
                old=self.frozen_logprobs(self.module, batch) if self.cfg.loss.updates_per_batch > 1 else None,
                ref=self.frozen_logprobs(self.ref, batch) if self.ref is not None else None,
            )
        stats, skipped = StatSums(), 0
        for rows in torch.arange(batch.completion_mask.shape[0]).split(self.rows_per_update):
            skipped += self._optimizer_step(batch, rows, adv, frozen, stats, clock)
        out = stats.reduce()  # loss and grad_norm are already global: every rank added the same value
        out["lr"] = self.scheduler.get_last_lr()[0] if self.scheduler is not None else self.cfg.optim.lr
        out["skipped_updates"] = float(skipped)
        return {**out, **clock.metrics()}

    def _optimizer_step(
        self, batch: RolloutBatch, rows: torch.Tensor, adv: torch.Tensor, frozen: Frozen, stats: StatSums, clock
    ) -> int:
        """One optimizer step on ``rows`` of ``batch``: plan their micro-batches; per micro-batch forward,
        objective, backward; at the last one the step, skipped on every rank if any saw a non-finite loss or
        gradient (returns 1 then). Per-micro-batch figures go to ``stats``, time to ``clock``."""
        o, temperature = self.cfg.optim, self.cfg.rollout.temperature
        count = dist.all_sum(count_units(batch.completion_mask[rows], self.objective.unit).double()).item()
        plan = plan_micro_batches(batch, rows, o.micro_batch_size, o.max_tokens_per_micro_batch)
        loss_total, finite, skipped = 0.0, True, 0
        for i, mb_rows in enumerate(plan):
            pad = mb_rows is None  # a zero-weight pass on one real row, so that collectives line up across ranks
            mb_rows = plan[0][-1:] if pad else mb_rows
            mb = _to(batch.rows(mb_rows), self.device)
            real, computed = padded_tokens(batch, mb_rows)
            stats.add("padding_share", computed - (0 if pad else real), computed)
            last = i == len(plan) - 1
            self.engine.set_gradient_accumulation_boundary(last)
            with clock("fwd_bwd"):
                logp, entropy = token_logprobs(self.engine, mb, temperature, with_entropy=True)  # [n, T] each
                terms = self._objective(mb, mb_rows, logp, adv, frozen, None if pad else stats)
                loss = terms.per_row.sum() / max(count, 1.0)  # this micro-batch's share of the global loss
                if pad:
                    loss = loss * 0.0
                loss_value = loss.item()  # one device sync per micro-batch
                finite &= math.isfinite(loss_value)
                self.engine.backward(loss * dist.world(), scale_wrt_gas=False)
            with clock("optimizer"):
                if last:
                    skipped, grad_norm = self._boundary_step(finite)
                else:
                    self.engine.step()
            if pad:
                continue
            loss_total += loss_value
            for k, (s, c) in terms.stats.items():
                stats.add(k, s, c)
            m = mb.completion_mask  # [n, T]
            stats.add("entropy", (entropy * m).sum(), m.sum())
            stats.add("logprob_gap", ((logp.detach() - mb.sampler_logp).abs() * m).sum(), m.sum())
        stats.add("loss", dist.all_sum(torch.tensor(loss_total, dtype=torch.float64)).item(), 1.0)
        stats.add("grad_norm", grad_norm, 1.0)
        return skipped

    def _objective(
        self,
        mb: RolloutBatch,
        rows: torch.Tensor,
        logp: torch.Tensor,
        adv: torch.Tensor,
        frozen: Frozen,
        stats: StatSums | None,
    ) -> LossTerms:
        """The objective's terms on micro-batch ``mb`` (rows ``rows`` of the update's batch, log-probs
        ``logp [n, T]``). With ``loss.tis_cap`` the advantages are weighted by the capped trainer/sampler
        ratio (truncated importance sampling), whose mean goes to ``stats`` (None: a padding pass)."""
        m, t = mb.completion_mask, mb.completion_mask.shape[1]  # [n, T]
        old_logp = frozen.old[rows, :t].to(self.device) if frozen.old is not None else logp.detach()  # [n, T]
        ref_logp = frozen.ref[rows, :t].to(self.device) if frozen.ref is not None else None  # [n, T]
        a = adv[rows].to(self.device)  # [n]
        cap = self.cfg.loss.tis_cap or 0
        if cap > 0:  # train/inference mismatch: cap the trainer/sampler ratio
            level = "token" if self.objective.ratio_level == "token" else "sequence"
            w = truncated_is_weights(old_logp, mb.sampler_logp, m, cap, level)  # [n, T] or [n]
            a = a[:, None] * w if level == "token" else a * w
            if stats is not None:
                total, count = ((w * m).sum(), m.sum()) if level == "token" else (w.sum(), len(w))
                stats.add("tis_weight", total, count)
        return self.objective.fn(logp, old_logp, a, m, self.params, ref_logp)

    def _boundary_step(self, loss_finite: bool) -> tuple[int, float]:
        """The optimizer step at an accumulation boundary, skipped on every rank if any rank saw a non-finite
        loss or gradient; returns (1 if skipped else 0, the gradient norm). ZeRO 1-3 detect non-finite
        gradient norms themselves (global, so every rank agrees). Under ZeRO 0 the plain torch optimizer does
        not: the engine steps on zeroed gradients (keeping its counters right) and weights, optimizer moments
        and LR schedule are put back."""
        norm = self._grad_norm_before_step()  # ZeRO 0 only (None otherwise): step() clears the gradients
        skipped = self._step_or_skip(not loss_finite or (norm is not None and not math.isfinite(norm)))
        return skipped, norm if norm is not None else self._grad_norm_after_step()

    def _step_or_skip(self, bad_local: bool) -> int:
        bad = dist.all_reduce(torch.tensor(int(bad_local)), "max").item() > 0
        if bad and self.cfg.deepspeed.zero_stage == 0:
            sched = self.scheduler.state_dict() if self.scheduler is not None else None
            opt_state = copy.deepcopy(self.optimizer.state_dict())
            params = list(self.module.parameters())
            saved = [p.detach().clone() for p in params]
            for p in params:
                p.grad = torch.zeros_like(p)
            self.engine.step()
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
            self.optimizer.load_state_dict(opt_state)
            if sched is not None:
                self.scheduler.load_state_dict(sched)
            return 1
        before = self.engine.skipped_steps
        self.engine.step()  # ZeRO 1-3: a non-finite gradient norm makes DeepSpeed skip the step on every rank
        return int(self.engine.skipped_steps > before)

    def scale_lr(self, factor: float) -> None:
        """Multiply the learning rate (schedule base and current value) by ``factor``; used by rollbacks."""
        if self.scheduler is not None:
            self.scheduler.base_lrs = [lr * factor for lr in self.scheduler.base_lrs]
        for group in self.optimizer.param_groups:
            group["lr"] *= factor

    def full_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF name, full tensor) of every parameter, one at a time. Collective under ZeRO-3: each partition
        is gathered, copied and released before the next, so peak memory stays one parameter above the
        shards. Used by checkpoints and by the vLLM weight sync."""
        for name, p in self.module.named_parameters():
            if self.cfg.deepspeed.zero_stage == 3:
                with deepspeed.zero.GatheredParameters([p]):
                    yield name, p.detach().clone()
            else:
                yield name, p.detach()

    def save_hf(self, out, tokenizer=None) -> None:
        """The policy in HF ``save_pretrained`` layout (rank 0 writes; every rank calls it under ZeRO-3)."""
        state = {}
        for name, t in self.full_parameters():  # every rank iterates: gathering is collective under ZeRO-3
            if dist.is_main():
                state[name] = t.cpu()
        if dist.is_main():
            persistent = self.module.state_dict().keys()  # non-persistent buffers (rotary tables) stay out
            state.update({name: b.cpu() for name, b in self.module.named_buffers() if name in persistent})
            self.module.save_pretrained(out, state_dict=state)
            if tokenizer is not None:
                tokenizer.save_pretrained(out)

    def _grad_norm_before_step(self) -> float | None:
        """ZeRO 0 keeps full gradients in ``.grad``: read the norm before ``step()`` clears them."""
        if self.cfg.deepspeed.zero_stage != 0:
            return None
        grads = [p.grad for p in self.module.parameters() if p.grad is not None]
        sq = sum(float(torch.linalg.vector_norm(g, dtype=torch.float32)) ** 2 for g in grads)  # no [V, H] temporary
        return math.sqrt(sq)

    def _grad_norm_after_step(self) -> float:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")


def _to(batch: RolloutBatch, device: torch.device) -> RolloutBatch:
    if device.type == "cpu":
        return batch
    return RolloutBatch(
        batch.input_ids.to(device),
        batch.attention_mask.to(device),
        batch.completion_mask.to(device),
        batch.sampler_logp.to(device),
        batch.prompt_width,
    )
