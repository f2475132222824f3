"""The training run's inputs, resolved at the entry point: the rows to train on, the evaluation rows, the
model directory and its context size. The toy lab is resolved here (``builtin:*`` models, the toy task), so the
trainer never imports it; every file is read and checked before any model is built."""

from __future__ import annotations

from rewards.schemes import SCHEMES
from rollout.data import Example, load_source, with_budgets
from toylab import reasoner
from trainer.config import Config
from trainer.config.reward import budget_range
from trainer.loop import RunInputs

TINY_RANDOM_POSITIONS = 1024  # builtin:tiny-random: toylab.models.build_model's default


def budgeted(cfg: Config, rows: list[Example], eval_rows: list[Example]) -> tuple[list, list]:
    """L1's budgets in the prompts: every training row under ``reward.name`` l1_exact / l1_max (its own
    phrase), and every eval row at the fixed ``eval.budget`` when set (L1's evaluation at fixed budgets)."""
    phrase = getattr(SCHEMES[cfg.reward.name], "phrase", SCHEMES["l1_exact"].phrase)
    if cfg.reward.name in ("l1_exact", "l1_max"):
        low, high = budget_range(cfg.reward.l1.budget_min, cfg.reward.l1.budget_max, cfg.rollout.max_new_tokens)
        rows = with_budgets(rows, phrase, low, high, cfg.seed)
    if cfg.eval.budget:
        eval_rows = with_budgets(eval_rows, phrase, cfg.eval.budget, cfg.eval.budget, cfg.seed)
    return rows, eval_rows


def run_inputs(cfg: Config) -> RunInputs:
    from app.benchmarks import data_path, periodic_eval_rows

    d, skipped = cfg.data, []
    if d.source == "toy":  # a builtin toy reasoner trains on its own task
        rows = reasoner.task_rows(cfg.model.path, d.arith_size, cfg.seed, d.arith_operands, d.arith_max_value)
    else:
        source = d.source if d.source == "arith" or d.source.startswith("hub:") else data_path(d.source, d.dir or None)
        rows = load_source(
            source,
            seed=cfg.seed,
            operands=d.arith_operands,
            max_value=d.arith_max_value,
            size=d.arith_size,
            skip_bad=d.skip_bad_rows,
            skipped=skipped,
        )
    eval_rows = periodic_eval_rows(cfg) if cfg.eval.every else []
    rows, eval_rows = budgeted(cfg, rows, eval_rows)
    path = cfg.model.path
    positions = None
    if path.startswith("builtin:"):
        positions = reasoner.POSITIONS if path in reasoner.BUILTINS else TINY_RANDOM_POSITIONS
    return RunInputs(rows, eval_rows, lambda: reasoner.resolve_model_path(path), positions, skipped)
