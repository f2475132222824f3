"""Paired statistics of the toy lab: a method against its baseline at the same seeds, on the same held-out
problems, with bootstrap intervals over seeds and problems.

Runs with the same seed share their prompt order, their evaluation problems and the evaluation's sampling seed,
so the comparison is paired: the seed-to-seed spread of the starting point and of the problem draw cancels.
The bootstrap resamples seeds with replacement and, within each drawn seed, held-out problems with replacement
(the same problems for both arms): a two-stage (hierarchical) bootstrap, the variation a re-run with other seeds
and other problems would show (Davison & Hinkley 1997, section 3.8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Arm:
    """One method's final held-out evaluation at each seed: ``[S, P]`` per-problem accuracy (correct samples /
    samples) and mean tokens, seeds in the same order as the other arm's, problems in the same order."""

    accuracy: torch.Tensor  # [S, P]
    tokens: torch.Tensor  # [S, P]


@dataclass
class Paired:
    """Method minus baseline: accuracy in points, tokens as a relative change (%), each with a 95% interval."""

    seeds: int
    d_accuracy: float
    d_accuracy_ci: tuple[float, float]
    d_tokens_pct: float
    d_tokens_pct_ci: tuple[float, float]

    def cells(self) -> tuple[str, str]:
        lo, hi = self.d_accuracy_ci
        tlo, thi = self.d_tokens_pct_ci
        return (f"{self.d_accuracy:+.1f} [{lo:+.1f}, {hi:+.1f}]", f"{self.d_tokens_pct:+.1f}% [{tlo:+.1f}, {thi:+.1f}]")


def _stats(a: Arm, b: Arm) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy difference (points) and relative token change (%) of arms given as ``[..., S, P]``."""
    d_acc = 100 * (a.accuracy - b.accuracy).mean(dim=(-2, -1))
    d_tok = 100 * (a.tokens.sum(dim=(-2, -1)) / b.tokens.sum(dim=(-2, -1)) - 1)
    return d_acc, d_tok


def paired(a: Arm, b: Arm, n_boot: int = 10_000, seed: int = 0) -> Paired:
    """``a`` minus ``b`` with two-stage bootstrap percentile intervals (``n_boot`` resamples, seeded)."""
    if a.accuracy.shape != b.accuracy.shape or a.tokens.shape != a.accuracy.shape:
        raise ValueError(f"arms differ in shape: {tuple(a.accuracy.shape)} vs {tuple(b.accuracy.shape)}")
    S, P = a.accuracy.shape
    g = torch.Generator().manual_seed(seed)
    si = torch.randint(S, (n_boot, S, 1), generator=g)  # [n, S, 1] drawn seeds
    pi = torch.randint(P, (n_boot, S, P), generator=g)  # [n, S, P] drawn problems within each drawn seed

    def draw(x: torch.Tensor) -> torch.Tensor:  # [S, P] -> [n, S, P]
        return x[si, pi]

    boot = _stats(Arm(draw(a.accuracy), draw(a.tokens)), Arm(draw(b.accuracy), draw(b.tokens)))
    point = _stats(a, b)
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    acc_ci, tok_ci = (torch.quantile(x.double(), q).tolist() for x in boot)
    return Paired(S, point[0].item(), tuple(acc_ci), point[1].item(), tuple(tok_ci))


def mean_ci(x: torch.Tensor, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a ``[S, P]`` table with the same two-stage bootstrap's 95% interval (one arm alone)."""
    zeros = torch.zeros_like(x)
    p = paired(Arm(x, x.new_ones(x.shape)), Arm(zeros, x.new_ones(x.shape)), n_boot, seed)
    return p.d_accuracy / 100, p.d_accuracy_ci[0] / 100, p.d_accuracy_ci[1] / 100
