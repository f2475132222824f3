"""The whole config: the run's own keys, every section, and the checks that relate two sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trainer.config.base import Section
from trainer.config.reward import RewardConfig, budget_range
from trainer.config.sections import (
    CheckpointConfig,
    DataConfig,
    DeepSpeedConfig,
    EvalConfig,
    GuardConfig,
    LogConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RolloutConfig,
)


class Config(Section):
    run_dir: str = Field("runs/default", description="metrics.jsonl, config.yaml, checkpoints and plots go here")
    seed: int = Field(
        0, ge=0, description="seeds prompt order, sampling and initialization; a run is a function of its config"
    )
    steps: int = Field(
        100, ge=1, description="training steps; each is one rollout batch and loss.updates_per_batch optimizer steps"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available")
    resume: Literal["never", "auto"] = Field(
        "never", description="auto: continue from the run_dir's latest complete checkpoint"
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="the policy")
    data: DataConfig = Field(default_factory=DataConfig, description="training prompts")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="sampling the groups")
    reward: RewardConfig = Field(default_factory=RewardConfig, description="the reward scheme and its terms")
    loss: LossConfig = Field(default_factory=LossConfig, description="the objective")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="AdamW and micro-batching")
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig, description="the learner's engine")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="held-out evaluation")
    log: LogConfig = Field(default_factory=LogConfig, description="where metrics go besides metrics.jsonl")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="saving and keeping")
    guard: GuardConfig = Field(default_factory=GuardConfig, description="non-finite and collapse guards")

    @model_validator(mode="after")
    def _budgets_fit_the_completion_length(self) -> Config:
        max_new = self.rollout.max_new_tokens
        if self.loss.max_tokens is not None and self.loss.max_tokens < max_new:
            raise ValueError(
                f"loss.max_tokens={self.loss.max_tokens} is below rollout.max_new_tokens={max_new}: Dr. GRPO's "
                "constant must be at least the longest completion"
            )
        cache = self.reward.overlong_cache
        if cache is not None and cache > max_new:
            raise ValueError(f"reward.overlong_cache={cache} must be in (0, rollout.max_new_tokens={max_new}]")
        return self

    @model_validator(mode="after")
    def _length_methods_fit_the_rollout(self) -> Config:
        """L1's budgets, ThinkPrune's cap and GFPO's filter against the rollout they live in."""
        r, max_new, G = self.reward, self.rollout.max_new_tokens, self.rollout.group_size
        if r.name in ("l1_exact", "l1_max"):
            low, high = budget_range(r.l1.budget_min, r.l1.budget_max, max_new)
            if low > high:
                raise ValueError(f"reward.l1: budget_min={low} > budget_max={high}; the budgets' range is empty")
            if high > max_new:
                raise ValueError(
                    f"reward.l1.budget_max={high} > rollout.max_new_tokens={max_new}: a budget the rollout cannot "
                    "reach; lower reward.l1.budget_max or raise rollout.max_new_tokens"
                )
        cap = r.thinkprune.cap
        if r.name == "thinkprune" and cap is not None and cap > max_new:
            raise ValueError(
                f"reward.thinkprune.cap={cap} > rollout.max_new_tokens={max_new}; the first limit is at most what "
                "the rollout samples (leave it unset for rollout.max_new_tokens)"
            )
        keep = self.loss.gfpo_keep
        if keep and not 2 <= keep < G:
            raise ValueError(
                f"loss.gfpo_keep={keep} must be in [2, rollout.group_size={G}): GFPO samples more than it keeps, "
                "and a kept set of one has no advantage; raise rollout.group_size or lower loss.gfpo_keep"
            )
        if self.loss.gfpo_adaptive:
            for bucket in ("easy", "medium", "hard", "very_hard"):
                k = getattr(self.loss, f"gfpo_k_{bucket}")
                if k >= G:
                    raise ValueError(
                        f"loss.gfpo_k_{bucket}={k} must be < rollout.group_size={G}: adaptive GFPO samples more "
                        "than it keeps; raise rollout.group_size or lower it"
                    )
        return self
