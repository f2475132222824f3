"""The ``reward`` section: the knobs every scheme shares, then one sub-section per scheme module
(``reward.<module>.*``, e.g. ``reward.acoer.alpha``), read by that scheme's ``from_config``.

The schemes themselves (``rewards/schemes/``) are math modules that import torch; their knobs are declared
here so that loading a config imports no torch. Adding a scheme ``foo`` (rewards/schemes/foo.py, registered
with ``@register("foo", section="foo")``) adds three things here:

    class FooParams(Section):
        strength: float = Field(0.5, gt=0, le=1, description="w of the foo term")

    foo: FooParams = Field(default_factory=FooParams, description="foo: ...")   # in RewardConfig
    # and "foo" in SchemeName; tests/rewards/test_schemes.py checks names, sections and defaults agree.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trainer.config.base import Section, why

# The registered schemes' names, sorted (``rewards.schemes.SCHEMES``; tests/rewards/test_schemes.py checks they agree).
SchemeName = Literal[
    "acoer",
    "arora_zanette",
    "binary",
    "correct_lp",
    "dler",
    "grpo_lambda",
    "kimi_lp",
    "l1_exact",
    "l1_max",
    "shorterbetter",
    "thinkprune",
]


class BinaryParams(Section):
    incorrect: float = Field(
        0.0,
        lt=1,
        description="reward of a wrong answer (DAPO's paper: -1, with +1 for a right one)",
        json_schema_extra=why("a wrong answer must earn less than a right one (1)"),
    )


class LengthPenaltyParams(Section):
    """kimi_lp and correct_lp (rewards/schemes/length_penalty.py)."""

    weight: float = Field(1.0, ge=0, description="weight w of the length term (Kimi gives none)")
    warmup: int = Field(0, ge=0, description="first steps without the length term (Kimi's phase)")


class EfficiencyParams(Section):
    """grpo_lambda and arora_zanette (rewards/schemes/efficiency.py)."""

    eos_required: bool = Field(True, description="truncated gets 0, left out of mean/std (authors)")
    lambda_top: float = Field(
        0.2, gt=0, le=1, description="grpo_lambda: share of groups, by accuracy, that get the length penalty"
    )
    alpha: float = Field(
        0.2,
        ge=0,
        le=1,
        description="alpha of 1 - alpha * sigmoid(z)",
        json_schema_extra=why("1 - alpha * sigmoid(z) must stay >= 0 for a correct answer"),
    )


class ACOERParams(Section):
    """acoer (rewards/schemes/acoer.py): the brevity bonus and its controller."""

    alpha: float = Field(0.02, gt=0, description="initial brevity-bonus strength alpha_0")
    k: float = Field(5.0, gt=0, description="curvature of g(x) = ln(1 + k(1 - x)) / ln(1 + k)")
    shape: Literal["log", "linear"] = Field("log", description="g: log (paper) or linear 1 - x")
    gamma: float = Field(
        0.85,
        gt=0,
        le=1,
        description="budget = max(min_budget, gamma * EMA(mean correct length))",
        json_schema_extra=why("the budget is gamma x the mean correct length, a share of it"),
    )
    min_budget: float = Field(512.0, gt=0, description="budget floor in tokens (lower it for toy-scale lengths)")
    span: int = Field(50, ge=1, description="EMA span (decay 2 / (span + 1))")
    warmup: int = Field(200, ge=0, description="steps before the controller may change alpha")
    window: int = Field(100, ge=1, description="compare the accuracy EMA with its value this many steps earlier")
    delta: float = Field(0.02, ge=0, le=1, description="accuracy-EMA drop that counts as a decline")
    down: float = Field(
        0.95,
        gt=0,
        le=1,
        description="alpha multiplier after a decline",
        json_schema_extra=why("the multiplier after an accuracy drop must not raise alpha"),
    )
    up: float = Field(
        1.02,
        ge=1,
        description="alpha multiplier otherwise",
        json_schema_extra=why("the multiplier after no drop must not lower alpha"),
    )
    alpha_min: float = Field(0.01, gt=0, description="alpha is clipped to [alpha_min, alpha_max]")
    alpha_max: float = Field(0.5, gt=0, description="upper clip of alpha")
    initial_budget: float | None = Field(
        None, gt=0, description="B until the first adaptation; None: max_new_tokens / 2 (authors)"
    )
    empty_step: Literal["zero", "skip"] = Field(
        "zero", description="no correct answer: feed length 0 to the EMA (authors) or skip"
    )

    @model_validator(mode="after")
    def _relations(self) -> ACOERParams:
        if not self.alpha_min <= self.alpha <= self.alpha_max:
            raise ValueError(
                f"reward.acoer: alpha_min <= alpha <= alpha_max must hold, got {self.alpha_min} <= {self.alpha} <= "
                f"{self.alpha_max}; raise alpha_max or lower alpha_min"
            )
        if self.initial_budget is not None and self.initial_budget < self.min_budget:
            raise ValueError(
                f"reward.acoer.initial_budget={self.initial_budget} is below reward.acoer.min_budget={self.min_budget}"
            )
        return self


class L1Params(Section):
    """l1_exact and l1_max (rewards/schemes/l1.py): the budget term and the budgets put in the prompts."""

    alpha: float = Field(0.0003, gt=0, description="alpha, reward per token of budget gap (paper and authors: 0.0003)")
    delta: float = Field(
        0.5, ge=0, le=1, description="l1_max: reward of a correct answer exactly at its budget (paper: 0.5)"
    )
    budget_min: int | None = Field(
        None,
        ge=1,
        description="budgets n are drawn uniformly from [budget_min, budget_max]; None: 100/4096 of "
        "rollout.max_new_tokens",
    )
    budget_max: int | None = Field(None, ge=1, description="top of the budgets; None: 4000/4096 of max_new_tokens")


def budget_range(budget_min: int | None, budget_max: int | None, max_new_tokens: int) -> tuple[int, int]:
    """The budgets' range: as given, or the authors' [100, 4000] of a 4096-token limit (``cmu-l3/l1``
    ``scripts/data/deepscaler_dataset.py``, ``run_l1_exact.sh``) scaled to ``max_new_tokens``. Here, torch-free,
    because the config checks it against ``rollout.max_new_tokens`` and the trainer draws the prompts' budgets
    from it."""
    lo = budget_min if budget_min is not None else max(1, round(max_new_tokens * 100 / 4096))
    hi = budget_max if budget_max is not None else max(lo, round(max_new_tokens * 4000 / 4096))
    return lo, hi


class ShorterBetterParams(Section):
    """shorterbetter (rewards/schemes/shorterbetter.py)."""

    alpha: float = Field(2.0, gt=0, description="reward of a correct answer (paper: 2.0)")
    beta: float = Field(0.001, ge=0, description="reward per token of distance from the SOL (paper: 0.001)")


class ThinkPruneParams(Section):
    """thinkprune (rewards/schemes/thinkprune.py): the first limit and its schedule."""

    cap: int | None = Field(None, ge=1, description="first round's token limit; None: rollout.max_new_tokens")
    shrink: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="each round lowers the limit by this share of the first (authors: 4k, 3k, 2k -> 0.25)",
        json_schema_extra=why("a share of the first limit; 1 would leave no tokens"),
    )
    rounds: int = Field(3, ge=1, description="rounds in the schedule (the last limit is kept after them)")
    round_steps: int = Field(0, ge=0, description="steps per round; 0: one round, the first limit throughout")


class RewardConfig(Section):
    name: SchemeName = Field("correct_lp", description="scheme (rewards/schemes/: one module per scheme family)")
    format_weight: float = Field(
        0.0, ge=0, description="added for any response with an extractable final answer (0 disables)"
    )
    overlong_weight: float = Field(
        0.0, ge=0, description="DAPO soft overlong punishment added with this weight (0 disables)"
    )
    overlong_cache: int | None = Field(
        None, ge=1, description="DAPO L_cache in tokens; None: a fifth of rollout.max_new_tokens"
    )
    overlong_filter: bool = Field(False, description="mask truncated completions out of the loss (DAPO)")
    grade_timeout: float = Field(
        2.0, gt=0, description="limit in CPU seconds per equivalence check (machine load does not count)"
    )
    grade_workers: int = Field(0, ge=0, description="grading worker processes per rank; 0: min(4, cores)")
    binary: BinaryParams = Field(default_factory=BinaryParams, description="binary: the 0/1 (or +-1) reward")
    length_penalty: LengthPenaltyParams = Field(
        default_factory=LengthPenaltyParams, description="kimi_lp, correct_lp: Kimi k1.5's length term"
    )
    efficiency: EfficiencyParams = Field(
        default_factory=EfficiencyParams, description="grpo_lambda, arora_zanette: z-scored length among correct"
    )
    acoer: ACOERParams = Field(default_factory=ACOERParams, description="acoer: adaptive brevity bonus")
    l1: L1Params = Field(default_factory=L1Params, description="l1_exact, l1_max: L1's token budget in the prompt")
    shorterbetter: ShorterBetterParams = Field(
        default_factory=ShorterBetterParams, description="shorterbetter: a pull towards the shortest correct length"
    )
    thinkprune: ThinkPruneParams = Field(
        default_factory=ThinkPruneParams, description="thinkprune: a token limit tightened over rounds"
    )
