"""Adaptive Difficulty GFPO's choice of k (arXiv 2508.09726, §3.1, Algorithm 2 and footnote 2).

Per prompt q, in the paper's words:

    mu_R <- mean_i R(q, o_i)                       # difficulty: the group's mean reward (low = hard)
    T.UPDATE(mu_R)                                 # a streaming t-digest of all difficulties seen so far
    if T.READY():
        (q25, q50, q75) <- T.PERCENTILE([25, 50, 75])
        k <- k_very_hard if mu_R < q25 else k_hard if mu_R < q50 else k_medium if mu_R < q75 else k_easy
    else:
        k <- k_very_hard
    keep the k best of the group by the GFPO metric

with k = 4 / 6 / 8 / 8 (easy, medium, hard, very hard) of G = 16 in the paper's runs, and "for a few warmup
training steps we retain 8 responses for all questions" (footnote 2).

Details the paper leaves open, and what this module does (each also in ``docs/length-methods.md``):

- READY: *unconfirmed*. Here: ready once ``warmup_steps`` whole training steps have been added (the footnote's
  "a few warmup training steps", count not given); during warmup k = k_very_hard (= 8 in the paper, as the
  footnote says).
- Order within a step: *unconfirmed*. Algorithm 2 is written for one prompt; here the step's groups run through
  it one after another in the global batch order (update, then percentiles, then k), every rank on the same
  gathered rewards, so every rank assigns the same k.
- The t-digest: *unconfirmed* (no library, compression or interpolation named). Here: a merging t-digest
  (Dunning & Ertl 2019, scale function k1, ``compression`` delta = 100 by default) with centroids at their mid
  ranks and linear interpolation between them. Below ~60 difficulties every centroid is one point and the
  percentiles are exact (numpy's ``method="hazen"``); beyond, neighbouring difficulties share centroids and
  the percentiles are approximate, as any t-digest's (the paper's run saw 6,400 prompts).
- Ties: as written, a strict ``<``: a difficulty equal to a quartile goes to the easier bucket. With 0/1
  rewards difficulties are multiples of 1/G, so ties are common (e.g. when over a quarter of the prompts have
  no correct answer, q25 = 0 and an all-wrong group is "hard" or easier, not "very hard").

Imports torch and the standard library only.
"""

from __future__ import annotations

import math

import torch


class TDigest:
    """A merging t-digest of a stream of floats: centroids (mean, weight) sorted by mean, bounded in number by
    ``compression`` (about delta/2 centroids at most), most precise at the tails. Deterministic: the same adds
    and reads give the same centroids, so a digest restored from ``state_dict`` continues exactly."""

    def __init__(self, compression: float = 100.0) -> None:
        if compression < 10:
            raise ValueError(f"t-digest compression {compression} must be >= 10 (100 is usual)")
        self.compression = float(compression)
        self.centroids: list[list[float]] = []  # [[mean, weight], ...] sorted by mean
        self.buffer: list[float] = []  # added, not merged yet
        self.count = 0.0
        self.min, self.max = math.inf, -math.inf

    def add(self, x: float) -> None:
        if not math.isfinite(x):
            raise ValueError(f"t-digest: a difficulty must be finite, got {x}")
        self.buffer.append(float(x))
        self.count += 1.0
        self.min, self.max = min(self.min, x), max(self.max, x)

    def _k(self, q: float) -> float:  # scale function k1: small centroids at the tails
        return self.compression / (2 * math.pi) * math.asin(2 * q - 1)

    def _q_limit(self, q0: float) -> float:  # the largest q a centroid starting at q0 may reach
        k = self._k(q0) + 1.0
        if k >= self.compression / 4:
            return 1.0
        return (math.sin(k * 2 * math.pi / self.compression) + 1) / 2

    def _merge(self) -> None:
        if not self.buffer:
            return
        points = sorted(self.centroids + [[x, 1.0] for x in self.buffer], key=lambda c: c[0])  # stable
        self.buffer = []
        merged, cur = [], list(points[0])
        before = 0.0  # weight left of ``cur``
        limit = self._q_limit(0.0)
        for mean, weight in points[1:]:
            if (before + cur[1] + weight) / self.count <= limit:
                cur[1] += weight
                cur[0] += (mean - cur[0]) * weight / cur[1]
            else:
                merged.append(cur)
                before += cur[1]
                limit = self._q_limit(before / self.count)
                cur = [mean, weight]
        merged.append(cur)
        self.centroids = merged

    def percentiles(self, ps: list[float]) -> list[float]:
        """The ``ps`` percentiles (0..100): centroid i sits at rank (weight before it) + w_i/2, the minimum at
        rank 0 and the maximum at rank n; linear between them."""
        if self.count == 0:
            raise ValueError("t-digest: no data yet")
        self._merge()
        ranks, means = [0.0], [self.min]
        seen = 0.0
        for mean, weight in self.centroids:
            ranks.append(seen + weight / 2)
            means.append(mean)
            seen += weight
        ranks.append(self.count)
        means.append(self.max)
        out = []
        for p in ps:
            t = min(max(p / 100.0, 0.0), 1.0) * self.count
            j = next(i for i in range(1, len(ranks)) if ranks[i] >= t)
            lo, hi = ranks[j - 1], ranks[j]
            w = 0.0 if hi == lo else (t - lo) / (hi - lo)
            out.append(means[j - 1] + w * (means[j] - means[j - 1]))
        return out

    def state_dict(self) -> dict:
        """JSON-able state (merges the buffer first; floats round-trip exactly through JSON)."""
        self._merge()
        return {
            "compression": self.compression,
            "centroids": [list(c) for c in self.centroids],
            "count": self.count,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
        }

    @classmethod
    def from_state(cls, state: dict) -> TDigest:
        d = cls(state["compression"])
        d.centroids = [list(c) for c in state["centroids"]]
        d.count = float(state["count"])
        if d.count:
            d.min, d.max = float(state["min"]), float(state["max"])
        return d


KEEP_ORDER = ("easy", "medium", "hard", "very_hard")


def difficulty_keep(
    rewards: torch.Tensor,
    group_size: int,
    keep: dict[str, int],
    state: dict | None,
    warmup_steps: int,
    compression: float = 100.0,
) -> tuple[torch.Tensor, dict, dict[str, float]]:
    """One step of Algorithm 2 over the whole batch. ``rewards`` [B*G] (the step's, all ranks, group-major);
    ``keep`` maps easy / medium / hard / very_hard to k; ``state`` is the previous step's (None: the first).
    Returns k per group [B] (long), the new state (JSON-able: ``{"steps", "digest"}``) and metrics."""
    if set(keep) != set(KEEP_ORDER):
        raise ValueError(f"adaptive GFPO: keep needs k for {list(KEEP_ORDER)}, got {sorted(keep)}")
    steps = 0 if state is None else int(state["steps"])
    digest = TDigest(compression) if state is None else TDigest.from_state(state["digest"])
    ready = steps >= warmup_steps  # footnote 2: k_very_hard for the first warmup steps
    mu = rewards.to(torch.float64).view(-1, group_size).mean(dim=1).tolist()  # [B] difficulty, low = hard
    ks, quartiles = [], None
    for m in mu:
        digest.add(m)
        if not ready:
            ks.append(keep["very_hard"])
            continue
        q25, q50, q75 = quartiles = digest.percentiles([25, 50, 75])
        bucket = "very_hard" if m < q25 else "hard" if m < q50 else "medium" if m < q75 else "easy"
        ks.append(keep[bucket])
    k = torch.tensor(ks, dtype=torch.long).clamp(max=group_size)  # [B] a k of G or more keeps the whole group
    metrics = {"gfpo/keep_mean": float(k.double().mean()), "gfpo/difficulty_mean": sum(mu) / len(mu)}
    if quartiles is not None:  # the last group's quartiles: the digest after the whole step
        metrics.update({"gfpo/difficulty_q25": quartiles[0], "gfpo/difficulty_q50": quartiles[1]})
        metrics["gfpo/difficulty_q75"] = quartiles[2]
    return k, {"steps": steps + 1, "digest": digest.state_dict()}, metrics
