"""The step's prompts and completions: which rows each rank takes at a step, the sampling seed, and the
rollout itself with its grades (dynamic sampling included), returned as one ``SampledBatch``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import PreTrainedTokenizerBase

from rewards.pool import Grade
from rollout.base import Completion, RolloutBackend, encode_prompt
from rollout.data import Example, PromptSampler
from rollout.server import RolloutUnavailable
from trainer import dist
from trainer.ahead import Ahead
from trainer.config import Config


class Grader(Protocol):
    def grade(self, texts: list[str], golds: list[str]) -> list[Grade]:
        """One grade per completion text against its gold answer (``rewards.pool.GraderPool``)."""
        ...


class Sampling(Protocol):
    """What sampling reads from the run (``trainer.session.Session`` is one)."""

    cfg: Config
    sampler: PromptSampler  # the step's global batch of problems
    tok: PreTrainedTokenizerBase
    backend: RolloutBackend
    grader: Grader
    per_rank: int  # prompts of this rank per step
    ahead: Ahead | None  # rollout.max_staleness >= 1: batches generated while the learner trains


@dataclass
class Group:
    """One prompt's G samples and their grades."""

    example: Example
    completions: list[Completion]  # [G]
    grades: list[Grade]  # [G]


@dataclass
class SampledBatch:
    """This rank's share of a step's batch: ``per_rank`` groups, the G rows of group j at j*G .. j*G+G-1."""

    groups: list[Group]
    rounds: int  # sampling rounds drawn (more than 1 only with dynamic sampling)
    staleness: int  # steps the sampling weights lag the learner's (0 unless generated ahead)

    @property
    def completions(self) -> list[Completion]:  # [N]
        return [c for g in self.groups for c in g.completions]

    @property
    def grades(self) -> list[Grade]:  # [N]
        return [gr for g in self.groups for gr in g.grades]

    @property
    def budgets(self) -> list[float]:  # [N]
        """Each row's token budget stated in its prompt (L1, ``rollout.data.with_budgets``), 0.0 without one."""
        return [float(g.example.budget or 0) for g in self.groups for _ in g.completions]


def rollout_seed(seed: int, step: int, rank: int, stream: int = 0) -> int:
    """Sampling seed of one rank at one step: a pure function, so a resumed run samples the same tokens."""
    return (seed * 1_000_003 + step * 7_919 + rank + stream * 104_729) % (2**63)


def step_prompts(s: Sampling, step: int, rounds: int = 0) -> tuple[list[Example], list[list[int]]]:
    """This rank's examples of ``step`` (sampling round ``rounds``) and their prompts as token ids."""
    rank, d = dist.rank(), s.cfg.data
    examples = s.sampler.batch(step, stream=rounds)[rank * s.per_rank : (rank + 1) * s.per_rank]
    prompts = [encode_prompt(s.tok, ex.problem, d.instruction, d.max_prompt_tokens, ex.id) for ex in examples]
    return examples, prompts


def sample_batch(s: Sampling, step: int) -> SampledBatch:
    """This rank's ``per_rank`` prompts of ``step``, G completions each, graded.

    With ``s.ahead`` (``rollout.max_staleness`` >= 1, ``trainer.ahead``) the batch was generated steps earlier.
    With ``rollout.dynamic_sampling`` (DAPO, arXiv 2503.14476 Eq. 11), groups that tie (``tied``: zero
    advantage) are dropped and extra prompt batches are drawn, up to ``rollout.max_sampling_rounds`` rounds; if
    the cap is hit the batch is topped up with dropped groups so every rank keeps its fixed size. Ranks decide
    together, so rounds stay in lockstep."""
    r = s.cfg.rollout
    kept: list[Group] = []
    spare: list[Group] = []  # tied groups, dropped unless the round cap leaves the batch short
    rounds = staleness = 0
    while True:
        groups, staleness = _draw(s, step, rounds)
        rounds += 1
        for g in groups:
            (spare if r.dynamic_sampling and tied(g, s.cfg.reward.name) else kept).append(g)
        short = max(0, s.per_rank - len(kept))
        if dist.all_reduce(torch.tensor(short), "max").item() == 0 or rounds >= r.max_sampling_rounds:
            break
    return SampledBatch((kept + spare)[: s.per_rank], rounds, staleness)


def tied(g: Group, reward_name: str) -> bool:
    """Whether dynamic sampling drops the group: its correctness ties (DAPO Eq. 11: all or none right), or
    under ``reward.name=dler`` its reward c_i (1 - truncated_i) ties (DLER, arXiv 2510.15110 §3: groups whose
    rewards are all equal are filtered). The two differ exactly where DLER learns to shorten: a group of right
    answers of which some hit the limit varies in reward (kept) though not in correctness, and a right answer
    cut at the limit beside wrong ones ties at 0 (dropped) though correctness varies. The key is the paper's
    reward (``penalty_scale`` 1; a collapse rollback's lower scale is not seen here)."""
    if reward_name == "dler":
        keys = {gr.correct and c.finish_reason != "length" for gr, c in zip(g.grades, g.completions)}
    else:
        keys = {gr.correct for gr in g.grades}
    return len(keys) == 1


def _draw(s: Sampling, step: int, rounds: int) -> tuple[list[Group], int]:
    """One round: this rank's prompts generated (or taken from ``s.ahead``) and graded; and the staleness."""
    G, rank = s.cfg.rollout.group_size, dist.rank()
    examples, prompts = step_prompts(s, step, rounds)
    staleness, lost = 0, None
    try:
        if s.ahead is not None:  # one round: dynamic sampling is refused with asynchrony
            comps, staleness = s.ahead.take(step)
        else:
            comps = s.backend.generate(prompts, G, seed=rollout_seed(s.cfg.seed, step, rank, rounds))
    except RolloutUnavailable as e:  # every rank stops with the error, none waits for the others forever
        lost = e
    if dist.all_reduce(torch.tensor(int(lost is not None)), "max").item():
        raise lost or RolloutUnavailable("another rank lost its rollout servers; restart them and --resume")
    grades = s.grader.grade([c.text for c in comps], [ex.answer for ex in examples for _ in range(G)])
    groups = [Group(ex, comps[j * G : (j + 1) * G], grades[j * G : (j + 1) * G]) for j, ex in enumerate(examples)]
    return groups, staleness
