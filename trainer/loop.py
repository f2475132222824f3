"""The training loop, one step top to bottom:

    prompts -> rollout (G completions each) -> grade -> reward scheme (whole batch, all ranks)
    -> group advantages -> learner update (DeepSpeed backward/step) -> weight sync -> metrics
    -> guards (non-finite streak, collapse) -> checkpoint

Each rank takes a contiguous share of the step's prompts; groups never straddle ranks. Reward schemes see
the whole batch (gathered), so batch-level statistics are global and every rank computes the same rewards.
A step is a pure function of (config, step, state after the previous step), which is what makes resume exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer

from rewards.pool import GraderPool
from rewards.schemes import RewardBatch
from rollout.base import FINISH_REASONS, Completion, collate
from rollout.data import Example, PromptSampler
from rollout.server import RolloutUnavailable
from trainer import checkpoint, dist, faults
from trainer.advantages import group_advantages
from trainer.ahead import Ahead
from trainer.components import (
    batch_metrics,
    build_backend,
    build_reward,
    check_context,
    model_positions,
    on_collapse,
    rollout_seed,
    sample_step,
    step_prompts,
)
from trainer.config import Config, ConfigError, resolve, save_config, to_dict, validate
from trainer.evaluate import PeriodicEval
from trainer.guards import CollapseGuard, is_degenerate
from trainer.learner import Learner
from trainer.lifecycle import Preempted, Preemption, TrainingHalted, truncate_history, write_event
from trainer.metrics import MetricsLogger


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
    device = dist.pick_device(cfg.device)
    dist.init(device.type)
    validate(cfg, dist.world())
    resolve(cfg)
    rank, world = dist.rank(), dist.world()
    run_dir = Path(cfg.run_dir)
    d, skipped_rows = cfg.data, inputs.skipped_rows
    sampler = PromptSampler(inputs.rows, d.prompts_per_step, cfg.seed)  # an empty dataset fails here
    check_context(cfg, inputs.positions)  # a builtin model: before it is built (the toy reasoner takes minutes)
    ckpt = checkpoint.latest(run_dir) if cfg.resume == "auto" else None
    if dist.is_main():
        _check_run_dir(cfg, run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        checkpoint.discard_incomplete(run_dir)
        inputs.model_path()  # builds a builtin model once, on rank 0
    dist.barrier()
    model_path = inputs.model_path()
    check_context(cfg, model_positions(model_path))
    torch.manual_seed(cfg.seed)

    tok = AutoTokenizer.from_pretrained(model_path)
    learner = Learner(cfg, model_path, device)
    # ZeRO-3 forwards are collective: every rank keeps stepping until all are done
    lockstep = _all_ranks_done if cfg.deepspeed.zero_stage == 3 and world > 1 else None
    backend = build_backend(cfg, learner, model_path, tok, device, lockstep)
    e = cfg.eval
    eval_backend = backend.with_sampling(e.max_new_tokens or cfg.rollout.max_new_tokens, e.temperature, e.top_p)
    scheme = build_reward(cfg)
    grader = GraderPool(cfg.reward.grade_workers or None, cfg.reward.grade_timeout)
    g = cfg.guard
    guard = CollapseGuard(
        g.window,
        g.min_history,
        g.patience,
        g.accuracy_drop,
        g.length_ratio,
        g.entropy_ratio,
        g.degenerate_rise,
        g.accuracy_ratio,
    )
    evaluator = PeriodicEval(cfg, eval_backend, tok, grader, run_dir, inputs.eval_rows) if e.every else None
    G, per_rank = cfg.rollout.group_size, d.prompts_per_step // world
    run = {"rollbacks": 0, "nonfinite_streak": 0}  # loop state saved with every checkpoint
    ahead: Ahead | None = None  # rollout.max_staleness >= 1: batches generated while the learner trains

    def restore(path: Path) -> int:
        state = checkpoint.load(path, learner)
        scheme.load_state_dict(state["scheme"])
        guard.load_state_dict(state["guard"])
        replays = run["rollbacks"] - state["run"]["rollbacks"]  # rollbacks since this checkpoint was saved
        run.update(state["run"], rollbacks=run["rollbacks"])
        if replays:  # each rollback since then lowers the LR and the length penalty once more
            learner.scale_lr(g.rollback_lr_factor**replays)
            scheme.penalty_scale *= g.rollback_penalty_factor**replays
        if dist.is_main():
            truncate_history(run_dir, state["step"])
        if ahead is not None:
            ahead.discard()  # those batches were sampled for a history that is being replayed
        backend.sync_weights()  # a separate engine (vllm) still holds the weights it was built or last synced with
        if ahead is not None:
            ahead.pushed(state["step"])
        return state["step"]

    def save(step: int) -> None:
        state = {"scheme": scheme.state_dict(), "guard": guard.state_dict(), "run": dict(run)}
        checkpoint.save(run_dir, step, learner, state, cfg.checkpoint.keep, tok)

    start = restore(ckpt) if ckpt is not None else 0
    if ckpt is None:
        backend.sync_weights()  # a server or engine may hold another run's weights: start from the learner's
    if cfg.rollout.max_staleness > 0:
        ahead = Ahead(
            backend.generate,
            cfg.rollout.max_staleness,
            G,
            lambda s: (step_prompts(cfg, s, sampler, tok, per_rank)[1], rollout_seed(cfg.seed, s, rank)),
            cfg.steps,
            start,
        )
    if dist.is_main():
        if ckpt is None:
            truncate_history(run_dir, 0)  # a run that died before its first checkpoint starts over
        print(f"resuming from {ckpt} at step {start}" if ckpt else f"starting {run_dir} from step 0", flush=True)
        if skipped_rows:
            print(f"skipped {len(skipped_rows)} bad data rows; first: {skipped_rows[0]}", flush=True)
    wandb = {"project": cfg.log.wandb_project, "mode": cfg.log.wandb_mode, "config": to_dict(cfg)}
    logger = MetricsLogger(
        run_dir, cfg.steps, start, dist.is_main(), cfg.log.tensorboard, wandb if cfg.log.wandb else None
    )
    preemption = Preemption()
    step = start
    try:
        if evaluator is not None and start == 0:
            _show_eval(0, evaluator(0), logger)
        while step < cfg.steps:
            t0 = time.perf_counter()
            # 1. this rank's prompts -> G completions each (more rounds with dynamic sampling) -> grades
            completions, grades, examples, rounds, staleness = sample_step(
                cfg, step, sampler, backend, grader, tok, per_rank, ahead
            )
            if faults.active("collapse", step) and run["rollbacks"] == 0:
                completions = [Completion(c.prompt_ids, [tok.eos_token_id], [0.0], "stop", "") for c in completions]
                grades = grader.grade([""] * len(completions), [ex.answer for ex in examples for _ in range(G)])
            t1 = time.perf_counter()

            # 2. score the whole batch (all ranks) with the reward scheme; group advantages on this rank's rows
            local = {
                "correct": [float(gr.correct) for gr in grades],
                "has_answer": [float(gr.extracted is not None) for gr in grades],
                "grade_timeouts": [float(gr.timed_out) for gr in grades],
                "grade_errors": [float(gr.error) for gr in grades],
                "degenerate": [float(is_degenerate(c.text)) for c in completions],
                "lengths": [float(len(c.token_ids)) for c in completions],
                "truncated": [float(c.finish_reason == "length") for c in completions],
                "abnormal": [float(c.finish_reason not in FINISH_REASONS) for c in completions],
            }
            gathered = dist.gather_objects(local)
            full = {k: torch.tensor([v for part in gathered for v in part[k]]) for k in local}  # [N_global] each
            extra = {k: full.pop(k) for k in ("grade_timeouts", "grade_errors", "degenerate", "abnormal")}
            rewards_all, reward_metrics = scheme(
                RewardBatch(**full, group_size=G, max_new_tokens=cfg.rollout.max_new_tokens)
            )
            n_local = len(completions)
            rewards = rewards_all[rank * n_local : (rank + 1) * n_local]  # [N]
            adv = group_advantages(rewards, G, cfg.loss.scale_std, cfg.loss.adv_eps)  # [N]
            t2 = time.perf_counter()

            # 3. learner update, then make the sampler use the new weights
            batch = collate(completions, tok.pad_token_id)
            # an aborted or failed sample (vllm) is not a sample of the policy; with DAPO overlong filtering
            # a truncated one leaves the loss too
            leave = ("length",) if cfg.reward.overlong_filter else ()
            keep = torch.tensor(
                [c.finish_reason in FINISH_REASONS and c.finish_reason not in leave for c in completions]
            )
            batch.completion_mask *= keep[:, None].float()
            learner_metrics = learner.update(batch, adv, step)
            t_update = time.perf_counter()
            if ahead is not None:
                ahead.settle()  # the batch generated during the update is done: the push overlaps nothing
            t_settle = time.perf_counter()
            backend.sync_weights()
            if ahead is not None:
                ahead.pushed(step + 1)
            t3 = time.perf_counter()

            # 4. metrics (global: the reward inputs were gathered; learner metrics are reduced over ranks)
            gen_tokens = dist.all_sum(torch.tensor(float(batch.completion_mask.sum()))).item()
            gen_seconds = ahead.generation_seconds if ahead is not None else t1 - t0  # its own time, not waited
            metrics = batch_metrics(full, rewards_all, G)
            metrics.update(reward_metrics)
            metrics.update(learner_metrics)
            metrics.update(
                {
                    "reward/grade_timeouts": extra["grade_timeouts"].sum().item(),
                    "reward/grade_errors": extra["grade_errors"].sum().item(),
                    "degenerate_share": extra["degenerate"].mean().item(),
                    "abnormal_finishes": extra["abnormal"].sum().item(),
                    "sampling_rounds": float(rounds),
                    "staleness": float(staleness),
                    "time/rollout": t1 - t0,
                    "time/reward": t2 - t1,
                    "time/learner": t3 - t2,
                    "time/update": t_update - t2,
                    "time/settle": t_settle - t_update,
                    "time/push": t3 - t_settle,
                    "time/step": t3 - t0,
                    "time/generate": gen_seconds,
                    "tokens_per_s": gen_tokens / max(gen_seconds, 1e-9),
                }
            )
            if evaluator is not None and ((step + 1) % e.every == 0 or step + 1 == cfg.steps):
                metrics.update(_show_eval(step + 1, evaluator(step + 1), logger))
            logger.log(step, metrics)
            step += 1

            # 5. guards: a run of non-finite updates stops; a collapse warns, halts or rolls back
            run["nonfinite_streak"] = run["nonfinite_streak"] + 1 if metrics["skipped_updates"] > 0 else 0
            if metrics["skipped_updates"] > 0 and dist.is_main():
                write_event(run_dir, {"step": step - 1, "event": "skipped_update", "loss": metrics.get("loss")})
            if run["nonfinite_streak"] >= g.max_nonfinite_streak:
                raise TrainingHalted(
                    f"{run['nonfinite_streak']} steps in a row had a non-finite loss or gradient (last: step "
                    f"{step - 1}); lower optim.lr, check the data, or use fp32. The weights are from before them."
                )
            triggers = guard.observe(metrics) if g.collapse_action != "off" else None
            if triggers:
                step = on_collapse(cfg, run_dir, step, triggers, run, restore, logger)

            # 6. checkpoint (never in the middle of a suspected collapse), and preemption
            signum = preemption.requested()
            due = cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and guard.streak == 0
            if signum or due or step == cfg.steps:
                save(step)
            if signum:
                raise Preempted(
                    f"stopped by signal {signum} after step {step - 1}; checkpoint {run_dir}/checkpoints/"
                    f"step-{step:06d}. Resume with the same command plus --resume (or resume=auto).",
                    128 + signum,
                )
    except RolloutUnavailable as e:
        last = checkpoint.latest(run_dir)
        raise TrainingHalted(
            f"{e}. The last complete checkpoint is {last or 'none (the run restarts from step 0)'}."
        ) from e
    finally:
        if ahead is not None:
            ahead.close()
        preemption.restore()
        logger.close()
        grader.close()
    dist.barrier()
    return run_dir


def _show_eval(after_steps: int, metrics: dict[str, float], logger) -> dict[str, float]:
    if dist.is_main():
        logger.bar.write(
            f"eval after {after_steps} steps | acc={metrics['eval/accuracy']:.3f} tokens={metrics['eval/tokens']:.1f}"
        )
    return metrics


def _all_ranks_done(done: bool) -> bool:
    return dist.all_reduce(torch.tensor(int(not done)), "max").item() == 0


def _check_run_dir(cfg: Config, run_dir: Path) -> None:
    """Refuse to silently append to, or overwrite, another run's history."""
    metrics = run_dir / "metrics.jsonl"
    if cfg.resume == "never" and metrics.exists() and metrics.stat().st_size > 0:
        raise ConfigError(
            f"run_dir {str(run_dir)!r} already holds a run; continue it with --resume (resume=auto), "
            "or choose another run_dir (or delete this one)"
        )
