"""Per-step metrics: JSONL file (always), console line and progress bar on rank 0."""

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
    def __init__(self, run_dir: Path, total_steps: int, start_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True, disable=not enabled)
        self.file = self.path.open("a") if enabled else None
        self.t0 = time.time()

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


def _clean(v: float) -> float | None:
    """JSON has no NaN/inf: write them as null so every reader can parse the file."""
    v = float(v)
    return v if math.isfinite(v) else None


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
