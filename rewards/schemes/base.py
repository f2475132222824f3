"""What every reward scheme shares: the batch it scores, the registry, and the additive terms.

A scheme sees the *whole* batch of the step (all ranks, groups of G contiguous rows), so batch-level
schemes rank groups globally and stateful ones (ACOER) keep identical state on every rank. ``L_i`` is the
completion's token count (sampled tokens up to and including EOS); ``c_i`` is 1 for a correct answer.
Every scheme returns ``(rewards [N], metrics)``; stateful ones also ``state_dict``/``load_state_dict``.

A scheme is one module of this package: its class, registered with ``@register(name, section=module)``, and
a ``from_config(reward)`` classmethod that builds it from its knobs, ``reward.<section>.*``. The knobs are
declared with the config, torch-free, as one pydantic section per module (``trainer/config/reward.py``, where
its docstring shows the five lines a new scheme adds); schemes of one module share it (``reward.length_penalty``
serves kimi_lp and correct_lp). tests/rewards/test_schemes.py checks that names, sections and defaults agree.
"""

from __future__ import annotations

from collections.abc import Callable
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
    budgets: torch.Tensor | None = None  # [N] the token budget n in each prompt (L1); None without budgets


class Stateless:
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def task(self, b: RewardBatch) -> torch.Tensor:
        """The task reward without any length term (what ``Composite.penalty_scale`` leaves unscaled). [N]"""
        return b.correct.double()


SCHEMES: dict[str, type] = {}  # name -> scheme class (with .section and .from_config)


def register(name: str, section: str | None = None) -> Callable[[type], type]:
    """Class decorator: the scheme called ``name`` (``reward.name``), its knobs in ``reward.<section>`` (None:
    it has none)."""

    def add(cls: type) -> type:
        if name in SCHEMES:
            raise ValueError(f"reward scheme {name!r} is registered twice ({SCHEMES[name]} and {cls})")
        cls.scheme_name, cls.section = name, section
        SCHEMES[name] = cls
        return cls

    return add


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


def build_scheme(
    name: str, format_weight: float = 0.0, overlong_weight: float = 0.0, overlong_cache: int = 0, **params
) -> Composite:
    """The scheme called ``name`` with its ``params``, wrapped with the additive format/overlong terms."""
    if name not in SCHEMES:
        raise KeyError(f"unknown reward.name {name!r}; choose from {sorted(SCHEMES)}")
    return Composite(SCHEMES[name](**params), format_weight, overlong_weight, overlong_cache)


def scheme_from_config(reward) -> Composite:
    """The scheme ``reward.name`` built from the ``reward`` config section (its own knobs, read by the scheme's
    ``from_config``), wrapped with the additive format/overlong terms."""
    if reward.name not in SCHEMES:
        raise KeyError(f"unknown reward.name {reward.name!r}; choose from {sorted(SCHEMES)}")
    scheme = SCHEMES[reward.name].from_config(reward)
    return Composite(scheme, reward.format_weight, reward.overlong_weight, reward.overlong_cache)
