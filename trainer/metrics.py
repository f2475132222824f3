"""Per-step metrics: JSONL file (always), console line and progress bar on rank 0; TensorBoard and
Weights & Biases as optional sinks of the same rows."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from tqdm import tqdm

SHOWN = [
    ("accuracy", "acc", ".3f"),
    ("reward/mean", "rew", ".3f"),
    ("length/mean", "len", ".1f"),
    ("loss", "loss", ".4f"),
    ("grad_norm", "gn", ".3f"),
    ("time/step", "s", ".1f"),
]


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
