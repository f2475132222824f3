"""Shared builders for component and multi-process tests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch
from transformers import AutoTokenizer

from rollout.base import Completion, RolloutBatch, collate
from trainer.config import Config, resolve, validate


def make_config(model_dir, **over) -> Config:
    cfg = Config()
    cfg.model.path = str(model_dir)
    cfg.device = "cpu"
    cfg.data.prompts_per_step = over.pop("prompts", 2)
    cfg.rollout.group_size = over.pop("group_size", 8)
    cfg.rollout.max_new_tokens = over.pop("max_new_tokens", 12)
    cfg.optim.micro_batch_size = over.pop("mbs", 16)
    cfg.optim.lr = over.pop("lr", 1e-3)
    cfg.loss.name = over.pop("loss", "grpo")
    cfg.deepspeed.zero_stage = over.pop("zero", 0)
    for k, v in over.items():
        section, key = k.split("__")
        setattr(getattr(cfg, section), key, v)
    validate(cfg)
    return resolve(cfg)


def fixed_batch(model_dir, n_prompts: int, group_size: int, seed: int = 0) -> tuple[RolloutBatch, torch.Tensor]:
    """A deterministic batch of random completions of varied lengths (some hit EOS) and planted advantages."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    g = torch.Generator().manual_seed(seed)
    comps = []
    for _ in range(n_prompts):
        prompt = torch.randint(3, 200, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
        for _ in range(group_size):
            length = int(torch.randint(1, 11, (1,), generator=g))
            toks = torch.randint(3, 200, (length,), generator=g).tolist()
            if length % 3 == 0:
                toks[-1] = tok.eos_token_id
            comps.append(Completion(prompt, toks, [-1.0] * length, "stop", ""))
    adv = torch.randn(n_prompts * group_size, generator=g)
    return collate(comps, tok.pad_token_id), adv


def step_gradients(learner) -> dict[str, torch.Tensor]:
    """The gradient of the first optimizer step, read back from AdamW's first moment m = (1 - beta1) g.

    Comparing parameters after one Adam step is ill-conditioned (the step is ~ lr * sign(g)); the moment
    is linear in the gradient.
    """
    opt = learner.optimizer
    beta1 = opt.param_groups[0]["betas"][0]
    return {n: opt.state[p]["exp_avg"] / (1 - beta1) for n, p in learner.module.named_parameters()}


def rows(run: Path) -> list[dict]:
    """The metrics rows of a run directory."""
    return [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def run_cli(cmd: list[str], env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command from the repository root; it must succeed (its output's end is the failure message).
    The timeout is a hang guard, not a speed check."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    return proc
