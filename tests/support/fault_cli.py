"""The real CLI with faults planted at its boundaries, for tests/trainer/test_failures.py:
``python tests/support/fault_cli.py train ...`` (or under torchrun) with ``GROUPWISE_FAULT="name@step[:rank],..."``.

Production code has no fault hooks: this entry point wraps the parts a run is built from (the checkpoint
writer, the learner's objective, the rollout backend) before ``app.cli.main`` runs, so the failure paths are
exercised on the real loop, engine and checkpoint code at a known point. ``@S`` is one step, ``@S+`` that
step and every later one; ``:R`` limits the fault to rank R.

    checkpoint-mid-save@S   SIGKILL while the checkpoint of step S is written (after the weights, before COMPLETE)
    nan-loss@S[:R]          every row's loss of step S is non-finite (the objective returns NaN)
    collapse@S+             the sampler returns bare-EOS completions from step S until the first rollback
    hold@S+                 before step S (each held step) the loop waits until the file $GROUPWISE_HOLD_DIR/go-S
                            exists: a test releases the steps one by one and places its faults between them
                            (tests/rollout/test_server_faults.py); nothing is in flight there with the server
                            backend, as the batch generated ahead settled before the last push
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

from rollout.base import Completion
from trainer import checkpoint, dist, loop, session
from trainer.learner import Learner


def parse(spec: str) -> dict[str, tuple[int, bool, int | None]]:
    """``"nan-loss@2+,collapse@4:1"`` -> {name: (step, onward, rank or None)}."""
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, where = item.partition("@")
        step, _, rank = where.partition(":")
        out[name] = (int(step.rstrip("+")), step.endswith("+"), int(rank) if rank else None)
    return out


FAULTS = parse(os.environ.get("GROUPWISE_FAULT", ""))
now = {"step": -1, "rollbacks": 0}  # the step being run (or checkpointed), as the wrappers below see it


def active(name: str) -> bool:
    """Fault ``name`` is planted for the current step and this rank."""
    if name not in FAULTS:
        return False
    s, onward, r = FAULTS[name]
    return (now["step"] >= s if onward else now["step"] == s) and (r is None or r == dist.rank())


def plant_checkpoint_kill() -> None:
    """SIGKILL, as a power cut or the OOM killer would, once this rank wrote the weights of a planted step."""
    save, save_hf = checkpoint.save, Learner.save_hf

    def saving(run_dir, step, *args, **kwargs):
        now["step"] = step
        return save(run_dir, step, *args, **kwargs)

    def weights_written(self, *args, **kwargs):
        save_hf(self, *args, **kwargs)
        if active("checkpoint-mid-save"):
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.save, Learner.save_hf = saving, weights_written


def plant_nan_loss() -> None:
    """The learner's objective returns non-finite per-row losses at the planted step (on the planted rank)."""
    init, update = Learner.__init__, Learner.update

    def built(self, *args, **kwargs):
        init(self, *args, **kwargs)
        fn = self.objective.fn

        def objective(*a, **kw):
            terms = fn(*a, **kw)
            return dataclasses.replace(terms, per_row=terms.per_row * float("nan")) if active("nan-loss") else terms

        self.objective = dataclasses.replace(self.objective, fn=objective)

    def updating(self, batch, adv, step=0):
        now["step"] = step
        return update(self, batch, adv, step)

    Learner.__init__, Learner.update = built, updating


class CollapsingBackend:
    """The run's rollout backend, except that while ``collapse`` is active it returns one bare EOS per sample."""

    def __init__(self, backend, eos_id: int):
        self.backend, self.eos_id = backend, eos_id

    def generate(self, prompts: list[list[int]], group_size: int, seed: int) -> list[Completion]:
        if not active("collapse") or now["rollbacks"]:
            return self.backend.generate(prompts, group_size, seed)
        return [Completion(p, [self.eos_id], [0.0], "stop", "") for p in prompts for _ in range(group_size)]

    def __getattr__(self, name: str):
        return getattr(self.backend, name)


def plant_collapse() -> None:
    """Wrap the backend the session builds; the loop's step and rollback count tell the wrapper when."""
    build, run_step = session.build_backend, loop.run_step

    def building(cfg, learner, model_path, tok, *args, **kwargs):
        return CollapsingBackend(build(cfg, learner, model_path, tok, *args, **kwargs), tok.eos_token_id)

    def stepping(s, step):
        now["step"], now["rollbacks"] = step, s.state["rollbacks"]
        return run_step(s, step)

    session.build_backend, loop.run_step = building, stepping


def plant_hold() -> None:
    """The loop waits before each held step until the test creates ``$GROUPWISE_HOLD_DIR/go-S``."""
    run_step, gate = loop.run_step, Path(os.environ["GROUPWISE_HOLD_DIR"])

    def stepping(s, step):
        now["step"] = step
        while active("hold") and not (gate / f"go-{step}").exists():
            time.sleep(0.1)
        return run_step(s, step)

    loop.run_step = stepping


PLANTERS = {
    "checkpoint-mid-save": plant_checkpoint_kill,
    "nan-loss": plant_nan_loss,
    "collapse": plant_collapse,
    "hold": plant_hold,
}

if __name__ == "__main__":
    unknown = set(FAULTS) - set(PLANTERS)
    if unknown:
        sys.exit(f"GROUPWISE_FAULT: unknown fault(s) {sorted(unknown)}; choose from {sorted(PLANTERS)}")
    for name in FAULTS:
        PLANTERS[name]()
    from app.cli import main

    sys.exit(main())
