"""ThinkPrune: a hard token limit (a response over it earns 0) tightened over rounds. Its knobs are
``reward.thinkprune.*`` (``trainer/config/reward.py``: ``ThinkPruneParams``)."""

from __future__ import annotations

import torch

from rewards.schemes.base import RewardBatch, register


def thinkprune_cap(first: int, shrink: float, rounds: int, round_steps: int, step: int) -> int:
    """The limit at ``step``: first * (1 - shrink * r), r = the round index, 0 .. rounds - 1."""
    r = 0 if round_steps == 0 else min(step // round_steps, rounds - 1)
    return max(1, round(first * (1.0 - shrink * r)))


@register("thinkprune", section="thinkprune")
class ThinkPrune:
    """ThinkPrune (Hou et al., arXiv 2504.01296, §3): r_i = c_i if L_i <= cap_t, else 0, with cap_t tightened
    over rounds (the authors' 4000 -> 3000 -> 2000 tokens, each round a run from the previous checkpoint:
    ``UCSB-NLP-Chang/ThinkPrune`` ``local_scripts/multi_node_run_3k_from4k.sh``). Their code sets the rollout's
    ``max_response_length`` to the cap and grades the cut text (``qwen_math.compute_score``: 1 correct, else
    0), so with ``cap`` = ``rollout.max_new_tokens`` the first round is theirs exactly (a truncated response
    whose cut text holds the right answer earns 1). In later rounds we sample to ``max_new_tokens`` and give 0
    to a response longer than the cap, where the authors stop at the cap and grade the cut text (which then
    rarely holds a final answer): the two differ only for a right answer written before the cap that keeps
    going past it, and the over-cap tokens here are trained on with reward 0. Rounds are ``round_steps``
    steps long, in one run (the step count is checkpointed); ``rounds=3, shrink=0.25`` is the authors'
    4k -> 3k -> 2k. ``penalty_scale`` s gives an over-cap correct answer 1 - s instead of 0.
    """

    def __init__(self, cap: int | None = None, shrink: float = 0.25, rounds: int = 3, round_steps: int = 0):
        self.cap, self.shrink, self.rounds, self.round_steps = cap, shrink, rounds, round_steps
        self.steps = 0

    def task(self, b: RewardBatch) -> torch.Tensor:
        return b.correct.double()

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        first = self.cap if self.cap is not None else b.max_new_tokens
        cap = thinkprune_cap(first, self.shrink, self.rounds, self.round_steps, self.steps)
        self.steps += 1
        within = (b.lengths.double() <= cap).double()  # [N]
        r = b.correct.double() * within
        return r, {"thinkprune/cap": float(cap), "thinkprune/over_cap": 1.0 - within.mean().item()}

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state.get("steps", 0)

    @classmethod
    def from_config(cls, reward) -> ThinkPrune:
        t = reward.thinkprune
        return cls(cap=t.cap, shrink=t.shrink, rounds=t.rounds, round_steps=t.round_steps)
