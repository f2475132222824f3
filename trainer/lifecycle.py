"""Run-directory bookkeeping around the loop: preemption signals, the metrics history on resume and
rollback, and the events file.

``metrics.jsonl`` always holds one linear history: rows of steps that a resume or a rollback replays are
moved to ``metrics.discarded.jsonl`` (nothing is lost), so a resumed run's file equals an uninterrupted one's.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import torch

from trainer import dist


class Preempted(RuntimeError):
    """SIGTERM / SIGINT arrived; a checkpoint was written. ``exit_code`` is 128 + the signal number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class TrainingHalted(RuntimeError):
    """A guard stopped the run (too many non-finite steps, or a collapse with action halt)."""


class Preemption:
    """Records SIGTERM / SIGINT instead of dying mid-step; the loop checks ``requested()`` after each step.
    A second SIGINT restores the default behaviour, so an impatient Ctrl-C still stops at once."""

    def __init__(self):
        self.signum = 0
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a test runner thread)
                pass

    def _handle(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.signum = signum

    def requested(self) -> int:
        """The signal number if any rank received one (all ranks agree), else 0. Collective."""
        return int(dist.all_reduce(torch.tensor(self.signum), "max").item())

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def truncate_history(run_dir: Path, start_step: int) -> int:
    """Resume/rollback to ``start_step``: metrics rows of steps >= it and evaluation rows after it move aside."""
    return (
        truncate_metrics(run_dir, start_step)
        + truncate_metrics(run_dir, start_step + 1, "eval.jsonl", "after_steps")
        + truncate_metrics(run_dir, start_step, "groups.jsonl")
    )


def truncate_metrics(run_dir: Path, start_step: int, name: str = "metrics.jsonl", key: str = "step") -> int:
    """Keep rows whose ``key`` < ``start_step`` in ``name``; move the rest to ``<stem>.discarded.jsonl``."""
    path = Path(run_dir) / name
    if not path.exists():
        return 0
    keep, drop = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill mid-write
            drop.append(line)
            continue
        (keep if row.get(key, 0) < start_step else drop).append(line)
    if drop:
        with (path.parent / f"{path.stem}.discarded.jsonl").open("a") as f:
            f.write("\n".join(drop) + "\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    tmp.replace(path)
    return len(drop)


def write_event(run_dir: Path, event: dict) -> None:
    """Append one event (collapse, rollback, halt, skipped update, preemption) with its evidence."""
    with (Path(run_dir) / "events.jsonl").open("a") as f:
        f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **event}) + "\n")


def write_groups(run_dir: Path, step: int, out, group_size: int) -> None:
    """Append the step's per-prompt outcomes to ``groups.jsonl``: correct answers and mean tokens of each group
    (``out``: the step's gathered ``Outcomes``). Noise-aware guards and the lab's statistics are computed from
    these; the step's mean accuracy alone hides how many prompts it rests on."""
    correct = out.correct.view(-1, group_size).sum(1)  # [B]
    tokens = out.lengths.view(-1, group_size).mean(1)  # [B]
    row = {
        "step": step,
        "G": group_size,
        "correct": [int(c) for c in correct],
        "tokens": [round(float(t), 2) for t in tokens],
    }
    with (Path(run_dir) / "groups.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
