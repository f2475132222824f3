"""The toy lab's experiments: which configs, starting model, baseline and methods each one runs, and the
criteria its report applies. A new method of an experiment is a name in its ``methods`` (or ``controls``) tuple
here plus its ``configs/lab/<method>.yaml``; a new experiment is one entry of ``EXPERIMENTS``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Experiment:
    """One experiment: ``groupwise train -c base.yaml -c <configs...> -c <method>.yaml`` per method and seed."""

    configs: tuple[str, ...]  # configs/lab/ files after base.yaml (the method's file comes last)
    baseline: str  # every other method is reported as a paired difference from this one
    methods: tuple[str, ...]  # headline methods: every seed (table rows in this order)
    controls: tuple[str, ...] = ()  # controls: the first CONTROL_SEEDS seeds only
    model: str = "builtin:toy-shortcut5"  # the starting model


# fourth round (issue 36; predictions committed before its runs): the newer methods in `length` and `reasoner`
NEW_METHODS = ("l1_exact", "l1_max", "shorterbetter", "thinkprune", "gfpo", "dler")
EXPERIMENTS = {
    "offpolicy": Experiment(
        configs=("offpolicy.yaml",),
        baseline="gspo",
        methods=("gspo", "luspo"),
        controls=("grpo", "dr_grpo", "dapo"),
        model="builtin:toy-lengthpays",
    ),
    "length": Experiment(
        configs=(),
        baseline="grpo",
        methods=("grpo", "correct_lp", "grpo_lambda", "acoer", "kimi_lp", *NEW_METHODS),
    ),
    # added before its first run, once the shipped toy-shortcut5 measured 81.8% (worked answers 96-100% right):
    # Kimi's penalty needs groups of mostly wrong worked answers to start its loop; toy-lengthpays has them
    # kimi_lp_x2 added after the second edition (its predictions committed before its runs): Kimi's penalty at
    # twice the weight, a collapse deliberate enough to cross the onset line, so the guard's detection has cases
    "collapse": Experiment(
        configs=("collapse.yaml",),
        baseline="grpo",
        methods=("grpo", "kimi_lp", "kimi_lp_x2"),
        model="builtin:toy-lengthpays",
    ),
    # added in the third round (predictions committed before its runs): the length schemes from a second model
    "reasoner": Experiment(
        configs=("reasoner.yaml",),
        baseline="grpo",
        methods=("grpo", "correct_lp", "grpo_lambda", "acoer", "kimi_lp_x2", *NEW_METHODS),
        model="builtin:toy-reasoner",
    ),
}
CONTROL_SEEDS = 3
COLORS = {"kimi_lp": "C3", "kimi_lp_x2": "C5", "correct_lp": "C1", "grpo_lambda": "C2", "acoer": "C0"}
COLORS.update({"l1_exact": "C8", "l1_max": "C9", "shorterbetter": "C6", "thinkprune": "tab:olive"})
COLORS.update({"gfpo": "tab:brown", "dler": "tab:pink"})
COLORS.update({"gspo": "C3", "luspo": "C0", "grpo": "C7", "dr_grpo": "C2", "dapo": "C4"})
# Decided before the second edition's first run (docs/toy-lab.md): a run has collapsed when its final held-out
# accuracy is below COLLAPSE_RATIO x its start; its length has collapsed when its final mean tokens are below
# LENGTH_FLOOR x the start.
COLLAPSE_RATIO = 0.5
LENGTH_FLOOR = 0.5


def methods_of(exp: Experiment, seed: int) -> tuple[str, ...]:
    """The methods an experiment runs at ``seed``: its headline methods, and its controls on the first seeds."""
    return exp.methods + (exp.controls if seed < CONTROL_SEEDS else ())
