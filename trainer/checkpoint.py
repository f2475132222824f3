"""Checkpoints that are either complete or invisible, and exact resume.

Layout of ``RUN/checkpoints/step-000040/`` (the state *after* 40 steps; training resumes at step 40):

    model/          HF ``save_pretrained`` layout (loadable by transformers and vLLM), written by rank 0
    engine/         DeepSpeed ``save_checkpoint``: fp32 weights, optimizer and LR-scheduler state, every rank
    rng/rank{r}.pt  torch / python / numpy / CUDA generator states of rank r
    ahead/rank{r}.json  rollout.max_staleness >= 1: rank r's batches generated ahead, not yet trained on
                    (``trainer/ahead.py``: token ids, log-probs, finish reasons, the weight step that sampled them)
    state.json      step, reward-scheme state (e.g. ACOER's controller), guard state, metrics row count
    COMPLETE        written last

Every rank writes into ``step-000040.tmp`` (the run directory is on a shared filesystem under multi-node
runs); after a barrier rank 0 writes ``COMPLETE`` and renames the directory. A crash at any point before the
rename leaves only a ``.tmp`` directory, which resume ignores and deletes; only complete checkpoints count.
The data loader needs no state: the prompts of step s are a pure function of (seed, s).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import dist

_NAME = re.compile(r"^step-(\d{6,})$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / "COMPLETE").is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(
    run_dir: Path, step: int, learner, state: dict[str, Any], keep: int, *, tokenizer=None, ahead: list | None = None
) -> Path:
    """Write the checkpoint of the state after ``step`` steps (collective: every rank calls it); ``ahead``: this
    rank's batches generated ahead (``Ahead.saved``)."""
    root = checkpoint_dir(run_dir)
    final = root / f"step-{step:06d}"
    tmp = root / f"step-{step:06d}.tmp"
    if dist.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    learner.save_hf(tmp / "model", tokenizer)  # collective under ZeRO-3 (parameters are gathered one at a time)
    learner.engine.save_checkpoint(str(tmp / "engine"), tag="state")
    (tmp / "rng").mkdir(exist_ok=True)
    torch.save(_rng_state(), tmp / "rng" / f"rank{dist.rank()}.pt")
    if ahead:
        (tmp / "ahead").mkdir(exist_ok=True)
        (tmp / "ahead" / f"rank{dist.rank()}.json").write_text(json.dumps(ahead))
    dist.barrier()
    if dist.is_main():
        (tmp / "state.json").write_text(json.dumps({"step": step, "world": dist.world(), **state}, indent=1))
        _fsync_dir(tmp)
        (tmp / "COMPLETE").write_text("ok\n")
        if final.exists():  # a rollback may re-save a step; the newer state wins
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in complete_checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load(path: Path, learner) -> dict[str, Any]:
    """Restore engine, optimizer, scheduler and this rank's RNG from ``path``; returns ``state.json``."""
    state = json.loads((path / "state.json").read_text())
    if state["world"] != dist.world():
        raise RuntimeError(
            f"checkpoint {path} was written by {state['world']} ranks but this run has {dist.world()}; "
            "resume with the same number of ranks (or load its model/ directory as a new run's model.path)"
        )
    learner.engine.load_checkpoint(str(path / "engine"), tag="state", load_optimizer_states=True)
    rng_file = path / "rng" / f"rank{dist.rank()}.pt"
    _set_rng_state(torch.load(rng_file, weights_only=False))
    return state


def load_ahead(path: Path) -> list[dict]:
    """This rank's batches generated ahead in checkpoint ``path`` (none: written at k=0, or by an older version)."""
    saved = path / "ahead" / f"rank{dist.rank()}.json"
    return json.loads(saved.read_text()) if saved.is_file() else []


def discard_incomplete(run_dir: Path) -> list[str]:
    """Delete ``.tmp`` leftovers of interrupted saves (rank 0 only); returns their names."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir() or not dist.is_main():
        return []
    gone = [p.name for p in root.iterdir() if p.name.endswith(".tmp") or not (p / "COMPLETE").exists()]
    for name in gone:
        shutil.rmtree(root / name, ignore_errors=True)
    return gone


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
