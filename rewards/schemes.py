"""Reward schemes: small picklable objects that turn the step's grades and lengths into rewards.

A scheme sees the *whole* batch of the step (all ranks, groups of G contiguous rows), so batch-level
schemes rank groups globally and stateful ones (ACOER) keep identical state on every rank. ``L_i`` is the
completion's token count (sampled tokens up to and including EOS); ``c_i`` is 1 for a correct answer.
Every scheme returns ``(rewards [N], metrics)``; stateful ones also ``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch


@dataclass
class RewardBatch:
    correct: torch.Tensor  # [N] 1.0 if the extracted answer matches the reference
    has_answer: torch.Tensor  # [N] 1.0 if a final answer could be extracted
    lengths: torch.Tensor  # [N] completion tokens (EOS included)
    truncated: torch.Tensor  # [N] 1.0 if the completion hit max_new_tokens
    group_size: int
    max_new_tokens: int


class Stateless:
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def task(self, b: RewardBatch) -> torch.Tensor:
        """The task reward without any length term (what ``Composite.penalty_scale`` leaves unscaled). [N]"""
        return b.correct.double()


class Binary(Stateless):
    """r_i = c_i: the rule-based accuracy reward of DeepSeek-R1 (arXiv 2501.12948, §2.2.2). ``incorrect`` is
    the reward of a wrong answer: 0 here; DAPO (arXiv 2503.14476, Eq. 10) uses +1 / -1, so that its overlong
    penalty (in [-1, 0]) is half the correct/incorrect gap rather than all of it."""

    def __init__(self, incorrect: float = 0.0):
        self.incorrect = incorrect

    def task(self, b: RewardBatch) -> torch.Tensor:
        c = b.correct.double()
        return c + (1.0 - c) * self.incorrect

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.task(b), {}


def kimi_lambda(lengths: torch.Tensor, group_size: int) -> torch.Tensor:
    """Kimi k1.5's per-group length score lam_i = 0.5 - (L_i - L_min) / (L_max - L_min); 0 if all equal. [N]"""
    L = lengths.double().view(-1, group_size)  # [B, G]
    lo, hi = L.min(dim=1, keepdim=True).values, L.max(dim=1, keepdim=True).values
    span = hi - lo
    lam = 0.5 - (L - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, lam, torch.zeros_like(lam)).view(-1)


class KimiLengthPenalty(Stateless):
    """Kimi k1.5 length penalty (arXiv 2501.12599, §2.3.3), on *all* answers:

    len_reward_i = lam_i if correct, min(0, lam_i) if incorrect;  r_i = c_i + w * len_reward_i.

    The paper does not give w (default 1.0). Penalizing incorrect answers for length is the configuration
    the ACOER paper shows to collapse under group normalization. The paper trains first without the
    penalty ("followed by a constant length penalty"), a phase of unstated length: ``warmup`` steps with
    ``len_reward = 0`` (default 0, the penalty from the first step, since the length is not published).
    """

    def __init__(self, weight: float = 1.0, warmup: int = 0):
        self.weight, self.warmup, self.steps = weight, warmup, 0

    def length_term(self, b: RewardBatch) -> torch.Tensor:
        c = b.correct.double()
        lam = kimi_lambda(b.lengths, b.group_size)  # [N]
        return torch.where(c > 0, lam, lam.clamp(max=0.0))

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        c = b.correct.double()
        active = self.steps >= self.warmup
        self.steps += 1
        len_reward = self.length_term(b) if active else torch.zeros_like(c)
        return c + self.weight * len_reward, {"reward/length_term": len_reward.mean().item()}

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state.get("steps", 0)


class CorrectLengthPenalty(KimiLengthPenalty):
    """Kimi's lam_i applied to correct answers only (arXiv 2501.12599 §2.3.3, restricted as in the ACOER
    ablation): r_i = c_i * (1 + w * lam_i); incorrect answers get exactly 0. Same ``warmup`` as Kimi's."""

    def length_term(self, b: RewardBatch) -> torch.Tensor:
        return b.correct.double() * kimi_lambda(b.lengths, b.group_size)


def efficiency_reward(
    correct: torch.Tensor, lengths: torch.Tensor, alpha: float, truncated: torch.Tensor | None = None
) -> torch.Tensor:
    """c_i (1 - alpha * sigmoid((L_i - mean_c L) / std_c L)) within one group; mean/std over its correct
    answers (population std, numpy's default as in the authors' code). A std of 0 (one correct answer, or
    equal lengths) is treated as 1 (the authors add 1e-7; z is 0 there either way). With ``truncated`` given
    (the authors' ``check_eos``), a response that never stopped counts as incorrect: reward 0 and no part in
    the mean and std. [G]"""
    c = correct.double()
    if truncated is not None:
        c = c * (1.0 - truncated.double())
    n = c.sum()
    if n == 0:
        return torch.zeros_like(c)
    L = lengths.double()
    mean = (L * c).sum() / n
    std = torch.sqrt(((L - mean) ** 2 * c).sum() / n)
    std = std if std > 0 else torch.ones_like(std)
    return c * (1.0 - alpha * torch.sigmoid((L - mean) / std))


class GRPOLambda(Stateless):
    """GRPO-λ (Dai, Liu, Si, arXiv 2505.18086): rank the batch's groups by accuracy (ties: lower group index
    first); the top ceil(lambda * n_groups) get the efficiency reward

        r_i = c_i (1 - alpha * sigmoid((L_i - mean_correct(L)) / std_correct(L)))

    (the Arora & Zanette form, arXiv 2502.04463, over the group's correct answers, with their ``check_eos``
    when ``eos_required``: a truncated response gets 0 and leaves the statistic) and the rest plain 0/1.
    lambda = 0.2 as in the paper; the paper's alpha is not public (default 0.2; a reimplementation uses 0.6).
    The ranking is over the whole batch, all ranks, because the scheme is called on the gathered batch.
    """

    def __init__(self, top_fraction: float = 0.2, alpha: float = 0.2, eos_required: bool = True):
        self.top_fraction, self.alpha, self.eos_required = top_fraction, alpha, eos_required

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        G = b.group_size
        c = b.correct.double().view(-1, G)  # [B, G]
        L, T = b.lengths.view(-1, G), b.truncated.view(-1, G)  # [B, G]
        n_groups = c.shape[0]
        k = math.ceil(self.top_fraction * n_groups)
        order = sorted(range(n_groups), key=lambda g: (-float(c[g].mean()), g))
        r = c.clone()
        for g in order[:k]:
            r[g] = efficiency_reward(c[g], L[g], self.alpha, T[g] if self.eos_required else None)
        return r.view(-1), {"reward/penalized_groups": float(k)}


class AroraZanette(Stateless):
    """Efficient reasoning (Arora & Zanette, arXiv 2502.04463, Eq. 4), checked against the authors'
    ``Zanette-Labs/efficient-reasoning`` ``reward_server/math_server.py`` (``reward_type=sigmoid``): every
    group gets r_i = c_i (1 - alpha * sigmoid(z-scored length among the group's correct answers)); alpha
    default 0.2. ``eos_required`` (default, their ``check_eos``): a response without EOS (truncated) gets
    reward 0 and is left out of the group's mean and std; False rewards truncated correct answers too.
    The reward of a truncated answer is then 0, not 1 (``task``), and ``penalty_scale`` keeps it 0."""

    def __init__(self, alpha: float = 0.2, eos_required: bool = True):
        self.alpha, self.eos_required = alpha, eos_required

    def task(self, b: RewardBatch) -> torch.Tensor:
        c = b.correct.double()
        return c * (1.0 - b.truncated.double()) if self.eos_required else c

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        G = b.group_size
        c, L, T = b.correct.view(-1, G), b.lengths.view(-1, G), b.truncated.view(-1, G)
        rows = [efficiency_reward(c[g], L[g], self.alpha, T[g] if self.eos_required else None) for g in range(len(c))]
        return torch.cat(rows), {}


class ACOER:
    """ACOER (Lee et al., arXiv 2606.22716), exact to the authors' ``js-lee-AI/ACOER`` ``acoer/reward.py``
    (class ``ACOERReward``) unless an option says otherwise:

        correct:   r = 1 + alpha_t * g(min(L / B_t, 1)),   g(x) = ln(1 + k (1 - x)) / ln(1 + k)   (k = 5)
        incorrect: r = 0      (no length term ever touches an incorrect answer)

    Controller, once per step from the whole batch, *after* that step's rewards (which use the state from
    before it): EMAs (span 50, decay 2/51) of batch accuracy and of the mean correct length; a step with no
    correct answer feeds a correct length of 0, as the authors do (``empty_step="zero"``; ``"skip"`` leaves
    the length EMA alone). The step-t accuracy EMA is appended to a history. From step index ``warmup``
    (200) on, once the history holds ``window`` (100) values, it is compared with ``history[-window]``, the
    value ``window - 1`` steps back: a drop *strictly* larger than delta = 0.02 multiplies alpha by 0.95,
    otherwise by 1.02, clipped to [0.01, 0.5]; alpha starts at 0.02. Only in that same adaptation step is
    the budget recomputed, ``B = max(B_min, gamma * EMA(correct length))`` when the EMA is positive (gamma =
    0.85, B_min = 512): B keeps its initial value through the warm-up and the first window. The initial
    budget is the authors' thinking budget, half their completion limit (4096 of 8192): ``initial_budget``,
    default half of ``rollout.max_new_tokens``. Lengths are completion tokens (the authors count characters
    of the thinking block and multiply token settings by 4).
    """

    def __init__(
        self,
        alpha: float = 0.02,
        k: float = 5.0,
        shape: str = "log",
        gamma: float = 0.85,
        min_budget: float = 512,
        span: int = 50,
        warmup: int = 200,
        window: int = 100,
        delta: float = 0.02,
        down: float = 0.95,
        up: float = 1.02,
        alpha_min: float = 0.01,
        alpha_max: float = 0.5,
        initial_budget: float | None = None,
        empty_step: str = "zero",
    ):
        if shape not in ("log", "linear"):
            raise ValueError(f"reward.acoer.shape {shape!r}: choose from ['log', 'linear']")
        if empty_step not in ("zero", "skip"):
            raise ValueError(f"reward.acoer.empty_step {empty_step!r}: choose from ['zero', 'skip']")
        self.k, self.shape, self.gamma, self.min_budget = k, shape, gamma, min_budget
        self.decay = 2.0 / (span + 1)
        self.warmup, self.window, self.delta = warmup, window, delta
        self.down, self.up, self.alpha_min, self.alpha_max = down, up, alpha_min, alpha_max
        self.empty_step = empty_step
        self.alpha = alpha
        self.budget = initial_budget  # None: half of max_new_tokens at the first call (the authors' rule)
        self.steps = 0
        self.ema_acc: float | None = None
        self.ema_len: float | None = None
        self.acc_history: deque[float] = deque(maxlen=window)

    def task(self, b: RewardBatch) -> torch.Tensor:
        return b.correct.double()

    def bonus_shape(self, x: torch.Tensor) -> torch.Tensor:
        """g(x) for x = L / B in [0, 1]: 1 at x = 0, 0 at x = 1."""
        if self.shape == "linear":
            return 1.0 - x
        return torch.log1p(self.k * (1.0 - x)) / math.log1p(self.k)

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        if self.budget is None:
            self.budget = b.max_new_tokens / 2
        c = b.correct.double()
        x = (b.lengths.double() / self.budget).clamp(max=1.0)
        r = c * (1.0 + self.alpha * self.bonus_shape(x))  # [N]
        metrics = {"acoer/alpha": self.alpha, "acoer/budget": self.budget}
        self.update(c.mean().item(), b.lengths.double()[c > 0].mean().item() if c.any() else None)
        return r, metrics

    def update(self, accuracy: float, mean_correct_length: float | None) -> None:
        """One controller step from a batch's accuracy and mean correct length (None: no correct answer)."""
        step, d = self.steps, self.decay  # step: 0-based index of the step just scored (the authors' global_step)
        self.steps += 1
        if mean_correct_length is None and self.empty_step == "zero":
            mean_correct_length = 0.0
        self.ema_acc = accuracy if self.ema_acc is None else (1 - d) * self.ema_acc + d * accuracy
        if mean_correct_length is not None:
            self.ema_len = (
                mean_correct_length if self.ema_len is None else (1 - d) * self.ema_len + d * mean_correct_length
            )
        self.acc_history.append(self.ema_acc)
        if step < self.warmup or len(self.acc_history) < self.window:
            return
        dropped = self.acc_history[0] - self.ema_acc > self.delta  # history[-window]: window - 1 steps back
        self.alpha = min(self.alpha_max, max(self.alpha_min, self.alpha * (self.down if dropped else self.up)))
        if self.ema_len is not None and self.ema_len > 0:
            self.budget = max(self.min_budget, self.gamma * self.ema_len)

    def state_dict(self) -> dict:
        return {
            "alpha": self.alpha,
            "budget": self.budget,
            "steps": self.steps,
            "ema_acc": self.ema_acc,
            "ema_len": self.ema_len,
            "acc_history": list(self.acc_history),
        }

    def load_state_dict(self, state: dict) -> None:
        self.alpha, self.budget, self.steps = state["alpha"], state["budget"], state["steps"]
        self.ema_acc, self.ema_len = state["ema_acc"], state["ema_len"]
        self.acc_history = deque(state["acc_history"], maxlen=self.window)


def overlong_penalty(lengths: torch.Tensor, max_tokens: int, cache: int) -> torch.Tensor:
    """DAPO soft overlong punishment (arXiv 2503.14476, Eq. 13), [N]:
    0 if L <= L_max - L_cache; ((L_max - L_cache) - L) / L_cache up to L_max; -1 beyond."""
    L = lengths.double()
    start = max_tokens - cache
    ramp = (start - L) / cache
    return torch.where(L <= start, torch.zeros_like(L), torch.where(L <= max_tokens, ramp, -torch.ones_like(L)))


class Composite:
    """A scheme plus additive terms, each logged: r = scheme + w_format * has_answer + w_overlong * overlong.

    ``penalty_scale`` s scales every scheme's length term: r_scheme -> t + s * (r_scheme - t), t the scheme's
    task reward (``task``: c_i, or DAPO's +-1). Each scheme's
    length term is linear in its strength parameter (Kimi/correct-only w, GRPO-lambda and Arora-Zanette alpha,
    ACOER alpha), so s = 0.5 is the scheme with half the strength. The collapse guard lowers it on rollback.
    """

    def __init__(self, scheme, format_weight: float = 0.0, overlong_weight: float = 0.0, overlong_cache: int = 0):
        self.scheme, self.format_weight = scheme, format_weight
        self.overlong_weight, self.overlong_cache = overlong_weight, overlong_cache
        self.penalty_scale = 1.0

    def __call__(self, b: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]:
        r, metrics = self.scheme(b)
        if self.penalty_scale != 1.0:
            c = self.scheme.task(b)  # [N] the task reward; only the length term is scaled
            r = c + self.penalty_scale * (r - c)
            metrics["reward/penalty_scale"] = self.penalty_scale
        metrics = {"reward/scheme": r.mean().item(), **metrics}
        if self.format_weight:
            fmt = self.format_weight * b.has_answer.double()
            r, metrics["reward/format"] = r + fmt, fmt.mean().item()
        if self.overlong_weight:
            pen = self.overlong_weight * overlong_penalty(b.lengths, b.max_new_tokens, self.overlong_cache)
            r, metrics["reward/overlong"] = r + pen, pen.mean().item()
        return r, metrics

    def state_dict(self) -> dict:
        return {"scheme": self.scheme.state_dict(), "penalty_scale": self.penalty_scale}

    def load_state_dict(self, state: dict) -> None:
        self.scheme.load_state_dict(state["scheme"])
        self.penalty_scale = state["penalty_scale"]


SCHEMES = {
    "binary": Binary,
    "kimi_lp": KimiLengthPenalty,
    "correct_lp": CorrectLengthPenalty,
    "grpo_lambda": GRPOLambda,
    "arora_zanette": AroraZanette,
    "acoer": ACOER,
}


def build_scheme(
    name: str, format_weight: float = 0.0, overlong_weight: float = 0.0, overlong_cache: int = 0, **params
) -> Composite:
    """The scheme called ``name`` with its ``params``, wrapped with the additive format/overlong terms."""
    if name not in SCHEMES:
        raise KeyError(f"unknown reward.name {name!r}; choose from {sorted(SCHEMES)}")
    return Composite(SCHEMES[name](**params), format_weight, overlong_weight, overlong_cache)
