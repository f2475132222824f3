"""L1 / LCPO: a token budget n in the prompt, and a reward for meeting it (``l1_exact``) or staying under it
(``l1_max``). The knobs are ``reward.l1.*`` (``trainer/config/reward.py``: ``L1Params``, and ``budget_range``,
the budgets' default range, which the trainer uses to put the budgets in the prompts)."""

from __future__ import annotations

import torch

from rewards.schemes.base import RewardBatch, Stateless, register


def require_budgets(b: RewardBatch, name: str) -> torch.Tensor:
    """The batch's budgets [N], or an error that says where they come from."""
    if b.budgets is None or not bool((b.budgets > 0).all()):
        raise ValueError(
            f"reward.name={name} needs a token budget in every prompt; the trainer adds them when reward.name is "
            "l1_exact or l1_max (rollout/data.py with_budgets): rows built elsewhere must carry Example.budget"
        )
    return b.budgets.double()


@register("l1_exact", section="l1")
class L1Exact(Stateless):
    """LCPO-Exact (Aggarwal & Welleck, "L1", arXiv 2503.04697, Eq. 1), exact to the authors' ``cmu-l3/l1``
    ``math_reward.py`` (``math_reward_fn`` with ``linear_reward=True, multiplier_reward=False`` and
    ``get_delta_score_linear``, as ``scripts/train/run_l1_exact.sh`` sets them):

        r_i = c_i - alpha * |n_i - L_i|,   alpha = 0.0003,

    n_i the budget in the prompt ("Think for n tokens.", drawn once per problem uniformly from the integers
    [100, 4000] with a 4096-token limit, ``scripts/data/deepscaler_dataset.py``; here that range scaled to
    ``rollout.max_new_tokens`` unless ``reward.l1.budget_min/max`` are set), L_i the response's tokens
    (verl's valid response length, EOS included). The length term touches wrong answers too.
    ``penalty_scale`` scales alpha.
    """

    phrase = "Think for {n} tokens."

    def __init__(self, alpha: float = 0.0003):
        self.alpha = alpha

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        n = require_budgets(b, self.scheme_name)  # [N]
        gap = (n - b.lengths.double()).abs()  # [N]
        r = b.correct.double() - self.alpha * gap
        return r, {"l1/budget": n.mean().item(), "l1/budget_gap": gap.mean().item()}

    @classmethod
    def from_config(cls, reward) -> L1Exact:
        return cls(alpha=reward.l1.alpha)


@register("l1_max", section="l1")
class L1Max(L1Exact):
    """LCPO-Max (arXiv 2503.04697, Eq. 2), as the paper writes it:

        r_i = c_i * clip(alpha * (n_i - L_i) + delta, 0, 1),   alpha = 0.0003, delta = 0.5,

    with a "Think for maximum n tokens." prompt. A wrong answer earns 0 whatever its length; a correct one
    earns delta at the budget, 1 at n - L >= (1 - delta)/alpha under it, and 0 at L - n >= delta/alpha over
    it. The authors' code (``cmu-l3/l1`` ``math_reward.py``: ``math_reward_fn`` with ``multiplier_reward=True``
    and ``get_delta_score_linear_both`` for a negative ``num_tokens``) computes c * (clip(a (n - L), -1, 1) +
    1)/2, which is this formula with alpha = a/2 and delta = 1/2; its L1-Max script
    (``scripts/train/run_l1_max.sh``) sets no ``a``, so the paper's alpha and delta are the defaults.
    """

    phrase = "Think for maximum {n} tokens."

    def __init__(self, alpha: float = 0.0003, delta: float = 0.5):
        super().__init__(alpha)
        self.delta = delta

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        n = require_budgets(b, self.scheme_name)  # [N]
        slack = n - b.lengths.double()  # [N] tokens left under the budget (negative: over it)
        r = b.correct.double() * (self.alpha * slack + self.delta).clamp(0.0, 1.0)
        metrics = {"l1/budget": n.mean().item(), "l1/over_budget": (slack < 0).double().mean().item()}
        return r, metrics

    @classmethod
    def from_config(cls, reward) -> L1Max:
        return cls(alpha=reward.l1.alpha, delta=reward.l1.delta)
