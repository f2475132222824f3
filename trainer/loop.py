"""The training loop, one step top to bottom:

    prompts -> rollout (G completions each) -> grade -> reward scheme (whole batch, all ranks)
    -> group advantages -> learner update (DeepSpeed backward/step) -> weight sync -> metrics

Each rank takes a contiguous share of the step's prompts; groups never straddle ranks. Reward schemes see
the whole batch (gathered), so batch-level statistics are global and every rank computes the same rewards.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from rewards.pool import GraderPool
from rewards.schemes import RewardBatch, build_scheme
from rollout.base import collate
from rollout.data import Example, PromptSampler, load_source
from rollout.hf import HFBackend
from trainer import dist
from trainer.advantages import group_advantages, zero_variance_share
from trainer.config import Config, resolve, save_config, validate
from trainer.learner import Learner
from trainer.metrics import MetricsLogger
from trainer.tiny import resolve_model_path


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda but CUDA is not available; use device=cpu or device=auto")
        return torch.device("cuda", dist.local_rank())
    return torch.device("cpu")


def encode_prompt(tok, ex: Example, instruction: str, max_tokens: int) -> list[int]:
    """The user message (problem + instruction) through the model's chat template, as token ids."""
    content = f"{ex.problem}\n{instruction}" if instruction else ex.problem
    if tok.chat_template:
        text = tok.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = content
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) > max_tokens:
        raise ValueError(
            f"prompt of row {ex.id!r} has {len(ids)} tokens > data.max_prompt_tokens={max_tokens}; "
            "raise data.max_prompt_tokens or filter the data"
        )
    return ids


def rollout_seed(seed: int, step: int, rank: int) -> int:
    """Sampling seed of one rank at one step: a pure function, so a resumed run samples the same tokens."""
    return (seed * 1_000_003 + step * 7_919 + rank) % (2**63)


def train(cfg: Config) -> Path:
    """Run ``cfg.steps`` training steps; returns the run directory."""
    device = pick_device(cfg.device)
    dist.init(device.type)
    validate(cfg, dist.world())
    resolve(cfg)
    rank, world = dist.rank(), dist.world()
    run_dir = Path(cfg.run_dir)
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        model_path = resolve_model_path(cfg.model.path)  # builds builtin models once, on rank 0
    dist.barrier()
    model_path = resolve_model_path(cfg.model.path)
    torch.manual_seed(cfg.seed)

    tok = AutoTokenizer.from_pretrained(model_path)
    rows = load_source(
        cfg.data.source, cfg.seed, cfg.data.arith_operands, cfg.data.arith_max_value, cfg.data.arith_size
    )
    sampler = PromptSampler(rows, cfg.data.prompts_per_step, cfg.seed)
    learner = Learner(cfg, model_path, device)
    lockstep = cfg.deepspeed.zero_stage == 3 and world > 1  # ZeRO-3 forwards are collective
    backend = HFBackend(
        lambda: learner.module,
        tok,
        cfg.rollout.max_new_tokens,
        cfg.rollout.temperature,
        cfg.rollout.top_p,
        device,
        all_ranks_done=(lambda done: dist.all_reduce(torch.tensor(int(not done)), "max").item() == 0)
        if lockstep
        else None,
    )
    scheme = build_reward(cfg)
    grader = GraderPool(cfg.reward.grade_workers or None, cfg.reward.grade_timeout)
    G, per_rank = cfg.rollout.group_size, cfg.data.prompts_per_step // world
    logger = MetricsLogger(run_dir, cfg.steps, enabled=dist.is_main())

    for step in range(cfg.steps):
        t0 = time.perf_counter()
        # 1. this rank's prompts -> G completions each
        examples = sampler.batch(step)[rank * per_rank : (rank + 1) * per_rank]
        prompts = [encode_prompt(tok, ex, cfg.data.instruction, cfg.data.max_prompt_tokens) for ex in examples]
        completions = backend.generate(prompts, G, seed=rollout_seed(cfg.seed, step, rank))
        t1 = time.perf_counter()

        # 2. grade locally, then score the whole batch (all ranks) with the reward scheme
        golds = [examples[i // G].answer for i in range(len(completions))]
        grades = grader.grade([c.text for c in completions], golds)
        local = {
            "correct": [float(g.correct) for g in grades],
            "has_answer": [float(g.extracted is not None) for g in grades],
            "grade_timeouts": [float(g.timed_out) for g in grades],
            "lengths": [float(len(c.token_ids)) for c in completions],
            "truncated": [float(c.finish_reason == "length") for c in completions],
        }
        gathered = dist.gather_objects(local)
        full = {k: torch.tensor([v for part in gathered for v in part[k]]) for k in local}  # [N_global] each
        timeouts = full.pop("grade_timeouts")
        rewards_all, reward_metrics = scheme(
            RewardBatch(**full, group_size=G, max_new_tokens=cfg.rollout.max_new_tokens)
        )
        reward_metrics["reward/grade_timeouts"] = timeouts.sum().item()
        n_local = len(completions)
        rewards = rewards_all[rank * n_local : (rank + 1) * n_local]  # [N]
        adv = group_advantages(rewards, G, cfg.loss.scale_std, cfg.loss.adv_eps)  # [N]
        t2 = time.perf_counter()

        # 3. learner update, then make the sampler use the new weights
        batch = collate(completions, tok.pad_token_id)
        if cfg.reward.overlong_filter:  # DAPO overlong filtering: truncated rows leave the loss
            keep = torch.tensor([c.finish_reason != "length" for c in completions], dtype=torch.float32)
            batch.completion_mask *= keep[:, None]
        learner_metrics = learner.update(batch, adv)
        backend.sync_weights()
        t3 = time.perf_counter()

        # 4. metrics (global: the reward inputs were gathered; learner metrics are reduced over ranks)
        gen_tokens = dist.all_sum(torch.tensor(float(batch.completion_mask.sum()))).item()
        metrics = batch_metrics(full, rewards_all, G)
        metrics.update(reward_metrics)
        metrics.update(learner_metrics)
        metrics.update(
            {
                "time/rollout": t1 - t0,
                "time/reward": t2 - t1,
                "time/learner": t3 - t2,
                "time/step": t3 - t0,
                "tokens_per_s": gen_tokens / max(t1 - t0, 1e-9),
            }
        )
        logger.log(step, metrics)

    logger.close()
    grader.close()
    if dist.is_main():
        from trainer.plots import plot_runs

        plot_runs([run_dir], run_dir / "curves.png")
    dist.barrier()
    return run_dir


def build_reward(cfg: Config):
    """The configured reward scheme with its paper parameters and the additive format/overlong terms."""
    r = cfg.reward
    params = {
        "kimi_lp": {"weight": r.length_weight},
        "correct_lp": {"weight": r.length_weight},
        "grpo_lambda": {"top_fraction": r.lambda_top, "alpha": r.efficiency_alpha},
        "arora_zanette": {"alpha": r.efficiency_alpha},
        "acoer": dict(vars(r.acoer), initial_budget=float(cfg.rollout.max_new_tokens)),
    }.get(r.name, {})
    return build_scheme(
        r.name,
        format_weight=r.format_weight,
        overlong_weight=r.overlong_weight,
        overlong_cache=r.overlong_cache,
        **params,
    )


def batch_metrics(full: dict[str, torch.Tensor], rewards: torch.Tensor, group_size: int) -> dict[str, float]:
    """Reward, accuracy and length statistics of the whole step's batch."""
    correct, lengths = full["correct"], full["lengths"]
    ok = correct > 0
    return {
        "reward/mean": rewards.mean().item(),
        "reward/std": rewards.std().item() if rewards.numel() > 1 else 0.0,
        "accuracy": correct.mean().item(),
        "answer_rate": full["has_answer"].mean().item(),
        "length/mean": lengths.mean().item(),
        "length/max": lengths.max().item(),
        "length/correct": lengths[ok].mean().item() if ok.any() else float("nan"),
        "length/incorrect": lengths[~ok].mean().item() if (~ok).any() else float("nan"),
        "truncation_rate": full["truncated"].mean().item(),
        "zero_var_groups": zero_variance_share(rewards, group_size),
    }
