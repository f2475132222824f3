"""The parts the loop is assembled from: rollout backend, reward scheme, the step's prompts and completions
(with dynamic sampling), batch metrics, and the collapse response. Each is used once per step by
``trainer/loop.py``; they live here so the loop reads top to bottom on one screen."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from rewards.schemes import RewardBatch, scheme_from_config
from rollout.base import FINISH_REASONS, Completion, collate, encode_prompt
from rollout.hf import HFBackend
from rollout.server import RolloutUnavailable
from trainer import checkpoint, dist
from trainer.advantages import zero_variance_share
from trainer.collapse import is_degenerate
from trainer.config import Config, ConfigError, server_urls
from trainer.learner import Learner
from trainer.lifecycle import TrainingHalted, write_event


def rollout_seed(seed: int, step: int, rank: int, stream: int = 0) -> int:
    """Sampling seed of one rank at one step: a pure function, so a resumed run samples the same tokens."""
    return (seed * 1_000_003 + step * 7_919 + rank + stream * 104_729) % (2**63)


def context_tokens(cfg: Config) -> int:
    """Positions one sequence can need: the longest prompt plus the largest completion budget."""
    return cfg.data.max_prompt_tokens + max(cfg.rollout.max_new_tokens, cfg.eval.max_new_tokens)


def check_context(cfg: Config, limit: int | None) -> None:
    """A prompt + completion budget the model cannot hold (``limit`` positions; None: unknown) fails at
    start-up, not at the first long sample."""
    need = context_tokens(cfg)
    if limit is not None and need > limit:
        raise ConfigError(
            f"data.max_prompt_tokens + max(rollout.max_new_tokens, eval.max_new_tokens) = {need} tokens, but "
            f"{cfg.model.path} holds {limit} positions (max_position_embeddings); lower them so they sum to <= {limit}"
        )


def model_positions(model_path: str) -> int | None:
    """``max_position_embeddings`` of a saved or hub model (None when its config does not say)."""
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)


def check_backend(cfg: Config, device: torch.device) -> None:
    """What the configured backend needs from this machine and the config, checked at start-up before any
    model is built (the config's own checks never import a backend)."""
    r = cfg.rollout
    if r.backend == "vllm":
        from rollout.vllm_backend import vllm_available

        ok, why = vllm_available()
        if not ok:
            raise ConfigError(f"rollout.backend=vllm: {why}")
    if r.backend == "server":
        if not server_urls(cfg):
            raise ConfigError(
                "rollout.backend=server needs rollout.server.urls=http://HOST:PORT[,...] of running vllm servers; "
                "or let `groupwise launch` start them from this config"
            )
        if r.server.push == "nccl" and device.type != "cuda":
            raise ConfigError("rollout.server.push=nccl needs CUDA (NCCL); on CPU use rollout.server.push=file")


def build_backend(cfg: Config, learner: Learner, model_path: str, tok, device: torch.device, lockstep=None):
    """The rollout backend; the only place the trainer looks at ``rollout.backend``."""
    r = cfg.rollout
    if r.backend == "vllm":
        from rollout.vllm_backend import VLLMBackend

        return VLLMBackend(
            model_path,
            tok,
            r.max_new_tokens,
            r.temperature,
            r.top_p,
            dtype=cfg.model.dtype,
            named_tensors=learner.full_parameters,
            tensor_parallel_size=r.vllm.tensor_parallel_size,
            gpu_memory_utilization=r.vllm.gpu_memory_utilization,
            max_model_len=context_tokens(cfg),
            sleep=r.vllm.sleep,
            seed=cfg.seed,
            enforce_eager=r.vllm.enforce_eager,
        )
    if r.backend == "server":
        from rollout.server import ServerBackend
        from rollout.server_probe import TOLERANCE as PROBE_TOLERANCE

        push = r.server.push if r.server.push != "auto" else ("nccl" if device.type == "cuda" else "file")
        backend = ServerBackend(
            server_urls(cfg),
            model_path,
            tok,
            r.max_new_tokens,
            r.temperature,
            r.top_p,
            named_tensors=learner.full_parameters,
            push=push,
            push_dir=r.server.push_dir or str(Path(cfg.run_dir) / "weights-push"),
            request_timeout=r.server.request_timeout,
            max_model_len=context_tokens(cfg),
            tensor_parallel_size=r.vllm.tensor_parallel_size,
            module=learner.module,
            # --- rollout servers: the probe of each server new to the rotation (rollout/server_probe.py)
            score=lambda comps: learner_logprobs(learner, comps, tok.pad_token_id),
            logprob_tolerance=r.server.logprob_tolerance or PROBE_TOLERANCE[cfg.model.dtype],
        )
        backend.check_servers(wait=60.0)  # the model and context length the config asks for, or a clear error
        return backend
    return HFBackend(lambda: learner.module, tok, r.max_new_tokens, r.temperature, r.top_p, device, lockstep)


def learner_logprobs(learner: Learner, completions: list[Completion], pad_id: int) -> list[torch.Tensor]:
    """The learner's log-prob of each completion token (collective under ZeRO-3: every rank calls it)."""
    logp = learner.frozen_logprobs(learner.module, collate(completions, pad_id))  # [N, T]
    return [logp[i, : len(c.token_ids)] for i, c in enumerate(completions)]


def build_reward(cfg: Config):
    """The configured reward scheme, built by its own module from ``reward`` (``rewards/schemes/``), with the
    additive format/overlong terms."""
    return scheme_from_config(cfg.reward)


@dataclass
class Outcomes:
    """What the step's completions did, over the whole batch (every rank's rows, rank 0's first), each
    ``[N_global]``: the reward scheme's inputs and the counts the metrics report."""

    correct: torch.Tensor  # 1.0 for a correct final answer
    has_answer: torch.Tensor  # 1.0 when a final answer could be extracted
    lengths: torch.Tensor  # completion tokens, EOS included
    truncated: torch.Tensor  # 1.0 when the completion hit max_new_tokens
    grade_timeouts: torch.Tensor  # 1.0 when grading hit its time limit
    grade_errors: torch.Tensor  # 1.0 when grading raised
    degenerate: torch.Tensor  # 1.0 for an empty or repetitive completion
    abnormal: torch.Tensor  # 1.0 for a finish reason other than stop / length (vllm: abort, error)
    budgets: torch.Tensor | None = None  # the token budget in the prompt (L1), 0.0 without one

    @classmethod
    def gather(cls, completions: list[Completion], grades: list, budgets: list[float] | None = None) -> Outcomes:
        """This rank's completions and grades (and each one's prompt budget), gathered from every rank (a
        collective)."""
        budgets = budgets if budgets is not None else [0.0] * len(completions)
        local = [
            (
                float(gr.correct),
                float(gr.extracted is not None),
                float(len(c.token_ids)),
                float(c.finish_reason == "length"),
                float(gr.timed_out),
                float(gr.error),
                float(is_degenerate(c.text)),
                float(c.finish_reason not in FINISH_REASONS),
                float(n),
            )
            for c, gr, n in zip(completions, grades, budgets, strict=True)
        ]
        rows = [row for part in dist.gather_objects(local) for row in part]
        columns = torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(dataclasses.fields(cls))).T
        return cls(*(c.contiguous() for c in columns))

    def reward_batch(self, group_size: int, max_new_tokens: int) -> RewardBatch:
        budgets = self.budgets if self.budgets is not None and bool((self.budgets > 0).any()) else None
        return RewardBatch(
            self.correct, self.has_answer, self.lengths, self.truncated, group_size, max_new_tokens, budgets
        )


def batch_metrics(out: Outcomes, rewards: torch.Tensor, group_size: int) -> dict[str, float]:
    """Reward, accuracy, length and grading statistics of the whole step's batch. ``accuracy/prompt_sd`` (sd
    over the step's prompts of each group's accuracy) and ``prompts`` give the sampling noise of ``accuracy``
    (its standard error is prompt_sd / sqrt(prompts)); the collapse guard's CUSUM standardizes with them."""
    correct, lengths = out.correct, out.lengths
    ok = correct > 0
    per_prompt = correct.view(-1, group_size).mean(1)  # [B]
    return {
        "reward/mean": rewards.mean().item(),
        "reward/std": rewards.std().item() if rewards.numel() > 1 else 0.0,
        "accuracy": correct.mean().item(),
        "accuracy/prompt_sd": per_prompt.std().item() if per_prompt.numel() > 1 else float("nan"),
        "prompts": float(per_prompt.numel()),
        "answer_rate": out.has_answer.mean().item(),
        "length/mean": lengths.mean().item(),
        "length/max": lengths.max().item(),
        "length/correct": lengths[ok].mean().item() if ok.any() else float("nan"),
        "length/incorrect": lengths[~ok].mean().item() if (~ok).any() else float("nan"),
        "truncation_rate": out.truncated.mean().item(),
        "zero_var_groups": zero_variance_share(rewards, group_size),
        "reward/grade_timeouts": out.grade_timeouts.sum().item(),
        "reward/grade_errors": out.grade_errors.sum().item(),
        "degenerate_share": out.degenerate.mean().item(),
        "abnormal_finishes": out.abnormal.sum().item(),
    }


def step_prompts(cfg: Config, step: int, sampler, tok, per_rank: int, rounds: int = 0):
    """This rank's examples of ``step`` (sampling round ``rounds``) and their prompts as token ids."""
    rank = dist.rank()
    examples = sampler.batch(step, stream=rounds)[rank * per_rank : (rank + 1) * per_rank]
    d = cfg.data
    prompts = [encode_prompt(tok, ex.problem, d.instruction, d.max_prompt_tokens, ex.id) for ex in examples]
    return examples, prompts


def sample_step(cfg: Config, step: int, sampler, backend, grader, tok, per_rank: int, ahead=None):
    """Completions, grades, examples, sampling rounds and staleness for this rank's ``per_rank`` prompts.

    With ``ahead`` (``rollout.max_staleness`` >= 1, ``trainer.ahead``) the batch was generated steps earlier.
    With ``rollout.dynamic_sampling`` (DAPO, arXiv 2503.14476 Eq. 11), groups whose correctness ties (all or
    none right: zero advantage under binary rewards) are dropped and extra prompt batches are drawn, up to
    ``rollout.max_sampling_rounds`` rounds; if the cap is hit the batch is topped up with dropped groups so
    every rank keeps its fixed size. Ranks decide together, so rounds stay in lockstep."""
    G, rank = cfg.rollout.group_size, dist.rank()
    kept, spare, rounds, staleness = [], [], 0, 0
    while True:
        examples, prompts = step_prompts(cfg, step, sampler, tok, per_rank, rounds)
        try:
            if ahead is not None:  # one round: dynamic sampling is refused with asynchrony
                comps, staleness = ahead.take(step)
            else:
                comps = backend.generate(prompts, G, seed=rollout_seed(cfg.seed, step, rank, rounds))
            lost = None
        except RolloutUnavailable as e:  # every rank stops with the error, none waits for the others forever
            lost = e
        if dist.all_reduce(torch.tensor(int(lost is not None)), "max").item():
            raise lost or RolloutUnavailable("another rank lost its rollout servers; restart them and --resume")
        grades = grader.grade([c.text for c in comps], [ex.answer for ex in examples for _ in range(G)])
        rounds += 1
        for j, ex in enumerate(examples):
            group = (ex, comps[j * G : (j + 1) * G], grades[j * G : (j + 1) * G])
            tied = len({gr.correct for gr in group[2]}) == 1
            (spare if cfg.rollout.dynamic_sampling and tied else kept).append(group)
        short = max(0, per_rank - len(kept))
        if dist.all_reduce(torch.tensor(short), "max").item() == 0 or rounds >= cfg.rollout.max_sampling_rounds:
            break
    groups = (kept + spare)[:per_rank]
    completions = [c for _, cs, _ in groups for c in cs]
    grades = [gr for _, _, grs in groups for gr in grs]
    return completions, grades, [ex for ex, _, _ in groups], rounds, staleness


def on_collapse(cfg: Config, run_dir: Path, step: int, triggers, run: dict, restore, logger) -> int:
    """Warn, halt or roll back; returns the step to continue from."""
    g = cfg.guard
    evidence = [vars(t) for t in triggers]
    text = "; ".join(f"{t.signal}={t.value:.4g} {t.rule} (baseline {t.baseline:.4g})" for t in triggers)
    action = g.collapse_action
    last = checkpoint.latest(run_dir)
    if action == "rollback" and (run["rollbacks"] >= g.max_rollbacks or last is None):
        why = "no checkpoint to roll back to" if last is None else f"{g.max_rollbacks} rollbacks already"
        action = "halt"
    else:
        why = ""
    if dist.is_main():
        write_event(
            run_dir, {"step": step - 1, "event": "collapse", "action": action, "triggers": evidence, "why": why}
        )
        logger.bar.write(f"collapse guard at step {step - 1}: {text} -> {action}{' (' + why + ')' if why else ''}")
    if action == "halt":
        raise TrainingHalted(
            f"collapse detected at step {step - 1}: {text}. Evidence in {run_dir}/events.jsonl; the last good "
            f"checkpoint is {last}. Lower the length penalty or learning rate, or set guard.collapse_action."
        )
    if action == "rollback":
        run["rollbacks"] += 1
        step = restore(last)
        logger.reopen(step)
        if dist.is_main():
            write_event(
                run_dir, {"step": step, "event": "rollback", "checkpoint": str(last), "rollbacks": run["rollbacks"]}
            )
    return step
