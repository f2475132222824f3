"""The training run's inputs, resolved at the entry point: the rows to train on, the evaluation rows, the
model directory and its context size. The toy lab is resolved here (``builtin:*`` models, the toy task), so the
trainer never imports it; every file is read and checked before any model is built."""

from __future__ import annotations

from rollout.data import load_source
from toylab import reasoner
from trainer.config import Config
from trainer.loop import RunInputs

TINY_RANDOM_POSITIONS = 1024  # builtin:tiny-random: toylab.models.build_model's default


def run_inputs(cfg: Config) -> RunInputs:
    from app.benchmarks import data_path, periodic_eval_rows

    d, skipped = cfg.data, []
    if d.source == "toy":  # a builtin toy reasoner trains on its own task
        rows = reasoner.task_rows(cfg.model.path, d.arith_size, cfg.seed, d.arith_operands, d.arith_max_value)
    else:
        source = d.source if d.source == "arith" or d.source.startswith("hub:") else data_path(d.source, d.dir or None)
        rows = load_source(
            source, cfg.seed, d.arith_operands, d.arith_max_value, d.arith_size, d.skip_bad_rows, skipped
        )
    eval_rows = periodic_eval_rows(cfg) if cfg.eval.every else []
    path = cfg.model.path
    positions = None
    if path.startswith("builtin:"):
        positions = reasoner.POSITIONS if path in reasoner.BUILTINS else TINY_RANDOM_POSITIONS
    return RunInputs(rows, eval_rows, lambda: reasoner.resolve_model_path(path), positions, skipped)
