"""The training loop, one step top to bottom:

    prompts -> rollout (G completions each) -> grade -> reward scheme (whole batch, all ranks)
    -> group advantages -> learner update (DeepSpeed backward/step) -> weight sync -> metrics
    -> guards (non-finite streak, collapse) -> checkpoint

Each rank takes a contiguous share of the step's prompts; groups never straddle ranks. Reward schemes see
the whole batch (gathered), so batch-level statistics are global and every rank computes the same rewards.
A step is a pure function of (config, step, state after the previous step), which is what makes resume exact.
The parts a run is built from, and its checkpointed state, are in ``trainer/session.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rollout.base import FINISH_REASONS, collate
from rollout.data import Example
from rollout.server import RolloutUnavailable
from trainer import checkpoint, dist
from trainer.collapse import on_collapse
from trainer.config import Config, to_dict
from trainer.lifecycle import Preempted, Preemption, TrainingHalted, truncate_history, write_event, write_groups
from trainer.metrics import MetricsLogger, Outcomes, Stopwatch, batch_metrics
from trainer.sampling import sample_batch
from trainer.session import Session, open_session
from trainer.step_advantages import step_advantages


@dataclass
class RunInputs:
    """What the entry point resolves before any model is built (``app.inputs``): the loop trains on plain rows
    and a model directory, whatever made them (a JSONL file, the hub, the toy lab in memory)."""

    rows: list[Example]  # the training problems
    eval_rows: list[Example]  # eval.benchmark's problems ([] without periodic evaluation)
    model_path: Callable[[], str]  # the model directory; rank 0 calls it first (it may build the model), then all
    positions: int | None = None  # positions the model holds, when known before it exists (a builtin model)
    skipped_rows: list[str] = field(default_factory=list)  # malformed rows skipped with data.skip_bad_rows


def train(cfg: Config, inputs: RunInputs) -> Path:
    """Run training to ``cfg.steps`` steps (continuing a checkpoint with ``resume=auto``); returns the run dir."""
    s, ckpt = open_session(cfg, inputs)
    start = s.restore(ckpt) if ckpt is not None else 0
    if ckpt is None:
        s.push_weights(0)  # a server or engine may hold another run's weights: start from the learner's
    s.start_ahead(start)
    if dist.is_main():
        if ckpt is None:
            truncate_history(s.run_dir, 0)  # a run that died before its first checkpoint starts over
        print(f"resuming from {ckpt} at step {start}" if ckpt else f"starting {s.run_dir} from step 0", flush=True)
        if inputs.skipped_rows:
            print(f"skipped {len(inputs.skipped_rows)} bad data rows; first: {inputs.skipped_rows[0]}", flush=True)
    wandb = {"project": cfg.log.wandb_project, "mode": cfg.log.wandb_mode, "config": to_dict(cfg)}
    logger = MetricsLogger(
        s.run_dir, cfg.steps, start, dist.is_main(), cfg.log.tensorboard, wandb if cfg.log.wandb else None
    )
    preemption, step = Preemption(), start
    try:
        if s.evaluator is not None and start == 0:
            _show_eval(0, s.evaluator(0), logger)
        while step < cfg.steps:
            metrics = run_step(s, step)
            if s.evaluator is not None and ((step + 1) % cfg.eval.every == 0 or step + 1 == cfg.steps):
                metrics.update(_show_eval(step + 1, s.evaluator(step + 1), logger))
            logger.log(step, metrics)
            step = guard_step(s, step + 1, metrics, logger)
            # checkpoint (never in the middle of a suspected collapse), and preemption
            signum = preemption.requested()
            due = cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and not s.guard.suspect
            if signum or due or step == cfg.steps:
                s.save(step)
            if signum:
                raise Preempted(
                    f"stopped by signal {signum} after step {step - 1}; checkpoint {s.run_dir}/checkpoints/"
                    f"step-{step:06d}. Resume with the same command plus --resume (or resume=auto).",
                    128 + signum,
                )
    except RolloutUnavailable as e:
        last = checkpoint.latest(s.run_dir)
        raise TrainingHalted(f"{e}. The last complete checkpoint is {last or 'none (the run restarts at 0)'}.") from e
    finally:
        s.close()
        preemption.restore()
        logger.close()
    dist.barrier()
    return s.run_dir


def run_step(s: Session, step: int) -> dict[str, float]:
    """Steps 1-4 of one training step on this rank; returns the step's metrics (global). ``s`` needs no
    checkpoint, guard or evaluator: a ``Session`` built by hand (a benchmark's) runs the same step."""
    cfg, G = s.cfg, s.cfg.rollout.group_size
    clock = Stopwatch("rollout", "reward", "learner", "update", "settle", "push")
    # 1. this rank's prompts -> G completions each (more rounds with dynamic sampling) -> grades
    with clock("rollout"):
        sampled = sample_batch(s, step)

    # 2. score the whole batch (all ranks) with the reward scheme; advantages of this rank's rows
    with clock("reward"):
        out = Outcomes.gather(sampled.completions, sampled.grades, sampled.budgets)
        rewards_all, reward_metrics = s.scheme(out.reward_batch(G, cfg.rollout.max_new_tokens))  # [N_global]
        if dist.is_main():
            write_groups(s.run_dir, step, out, G)
        # GRPO / DLER / GFPO: this rank's advantages [N] and the rows that stay in the loss [N]
        n_local = len(sampled.completions)
        adv, kept, adv_metrics = step_advantages(cfg, rewards_all, out.lengths, dist.rank(), n_local, s.state)

    # 3. learner update, then make the sampler use the new weights
    with clock("learner"):
        with clock("update"):
            batch = collate(sampled.completions, s.tok.pad_token_id)
            # an aborted or failed sample (vllm) is not a sample of the policy; with DAPO overlong filtering a
            # truncated one leaves the loss too
            leave = ("length",) if cfg.reward.overlong_filter else ()
            keep = [c.finish_reason in FINISH_REASONS and c.finish_reason not in leave for c in sampled.completions]
            keep = torch.tensor(keep) & kept  # GFPO: the filtered-out rows leave the loss (and its token count)
            batch.completion_mask *= keep[:, None].float()
            learner_metrics = s.learner.update(batch, adv, step)
        with clock("settle"):  # without overlap_push the push overlaps no generation of ours: wait for it
            if s.ahead is not None and not s.ahead.overlap:
                s.ahead.settle()
        with clock("push"):
            s.backend.sync_weights()
            if s.ahead is not None:
                s.ahead.pushed(step + 1)

    # 4. metrics (global: the outcomes were gathered; learner metrics are reduced over ranks)
    t = clock.seconds
    gen_tokens = dist.all_sum(torch.tensor(float(batch.completion_mask.sum()))).item()
    # overlap_push: the share of samples a push went through (versions read before and after them differ)
    spanning = sum(c.first_weight_version != c.weight_version for c in sampled.completions)
    across_push = dist.all_sum(torch.tensor(float(spanning))).item() / (len(sampled.completions) * dist.world())
    gen_seconds = s.ahead.generation_seconds if s.ahead is not None else t["rollout"]  # its own time, not waited
    return {
        **batch_metrics(out, rewards_all, G),
        **reward_metrics,
        **adv_metrics,
        **learner_metrics,
        "sampling_rounds": float(sampled.rounds),
        "staleness": float(sampled.staleness),
        "across_push": across_push,
        **clock.metrics(),
        "time/step": t["rollout"] + t["reward"] + t["learner"],
        "time/generate": gen_seconds,
        "tokens_per_s": gen_tokens / max(gen_seconds, 1e-9),
        **(s.backend.rotation_metrics() if hasattr(s.backend, "rotation_metrics") else {}),  # server backend
    }


def guard_step(s: Session, step: int, metrics: dict[str, float], logger) -> int:
    """Step 5, after step ``step - 1``: a run of non-finite updates stops; a collapse warns, halts or rolls
    back. Returns the step to continue from."""
    g, run = s.cfg.guard, s.state
    run["nonfinite_streak"] = run["nonfinite_streak"] + 1 if metrics["skipped_updates"] > 0 else 0
    if metrics["skipped_updates"] > 0 and dist.is_main():
        write_event(s.run_dir, {"step": step - 1, "event": "skipped_update", "loss": metrics.get("loss")})
    if run["nonfinite_streak"] >= g.max_nonfinite_streak:
        raise TrainingHalted(
            f"{run['nonfinite_streak']} steps in a row had a non-finite loss or gradient (last: step "
            f"{step - 1}); lower optim.lr, check the data, or use fp32. The weights are from before them."
        )
    triggers = s.guard.observe(metrics) if g.collapse_action != "off" else None
    if triggers:
        step = on_collapse(s.cfg, s.run_dir, step, triggers, run=run, restore=s.restore, logger=logger)
    return step


def _show_eval(after_steps: int, metrics: dict[str, float], logger) -> dict[str, float]:
    if dist.is_main():
        logger.bar.write(
            f"eval after {after_steps} steps | acc={metrics['eval/accuracy']:.3f} tokens={metrics['eval/tokens']:.1f}"
        )
    return metrics
