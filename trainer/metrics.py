"""Per-step metrics: what the step's batch did (the gathered ``Outcomes`` and ``batch_metrics``), and where the
rows go: JSONL file (always), console line and progress bar on rank 0; TensorBoard and Weights & Biases as
optional sinks of the same rows."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from rewards.schemes import RewardBatch
from rollout.base import FINISH_REASONS, Completion
from trainer import dist
from trainer.advantages import zero_variance_share
from trainer.collapse import is_degenerate

SHOWN = [
    ("accuracy", "acc", ".3f"),
    ("reward/mean", "rew", ".3f"),
    ("length/mean", "len", ".1f"),
    ("loss", "loss", ".4f"),
    ("grad_norm", "gn", ".3f"),
    ("time/step", "s", ".1f"),
]


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


class Stopwatch:
    """Wall-clock seconds per named phase, summed over every time the phase runs: ``with clock("push"): ...``."""

    def __init__(self, *names: str):
        self.seconds = dict.fromkeys(names, 0.0)

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def metrics(self) -> dict[str, float]:
        """``{"time/<phase>": seconds}``."""
        return {f"time/{k}": v for k, v in self.seconds.items()}


class MetricsLogger:
    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        start_step: int = 0,
        enabled: bool = True,
        tensorboard: bool = False,
        wandb: dict | None = None,
    ):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True, disable=not enabled)
        self.file = self.path.open("a") if enabled else None
        self.t0 = time.time()
        self.tb = self.wandb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"))
        if enabled and wandb is not None:
            try:
                import wandb as wb
            except ImportError as e:
                raise ImportError("log.wandb=true needs the wandb package: pip install wandb") from e
            self.wandb = wb.init(
                project=wandb["project"],
                mode=wandb["mode"],
                dir=str(run_dir),
                config=wandb["config"],
                name=run_dir.name,
                resume="allow",
            )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {
            "step": step,
            "time": round(time.time() - self.t0, 3),
            **{k: _clean(v) for k, v in metrics.items()},
        }
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and v is not None:
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if v is not None}, step=step)
        line = " ".join(f"{short}={metrics[k]:{fmt}}" for k, short, fmt in SHOWN if k in metrics)
        self.bar.write(f"step {step:>4} | {line}")
        self.bar.set_postfix_str(line, refresh=False)
        self.bar.update(1)

    def reopen(self, step: int) -> None:
        """After a rollback rewrote metrics.jsonl: append to the new file; the bar shows ``step``."""
        if self.enabled:
            self.file.close()
            self.file = self.path.open("a")
            self.bar.n = step
            self.bar.refresh()

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.file.close()
            if self.tb is not None:
                self.tb.close()
            if self.wandb is not None:
                self.wandb.finish()


def _clean(v: float) -> float | None:
    """JSON has no NaN/inf: write them as null so every reader can parse the file."""
    v = float(v)
    return v if math.isfinite(v) else None


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
