"""The step's prompts and completions: which rows each rank takes at a step, the sampling seed, and the
rollout itself with its grades (dynamic sampling included)."""

from __future__ import annotations

import torch

from rollout.base import encode_prompt
from rollout.server import RolloutUnavailable
from trainer import dist
from trainer.config import Config


def rollout_seed(seed: int, step: int, rank: int, stream: int = 0) -> int:
    """Sampling seed of one rank at one step: a pure function, so a resumed run samples the same tokens."""
    return (seed * 1_000_003 + step * 7_919 + rank + stream * 104_729) % (2**63)


def step_prompts(cfg: Config, step: int, sampler, tok, per_rank: int, rounds: int = 0):
    """This rank's examples of ``step`` (sampling round ``rounds``) and their prompts as token ids."""
    rank = dist.rank()
    examples = sampler.batch(step, stream=rounds)[rank * per_rank : (rank + 1) * per_rank]
    d = cfg.data
    prompts = [encode_prompt(tok, ex.problem, d.instruction, d.max_prompt_tokens, ex.id) for ex in examples]
    return examples, prompts


def sample_step(cfg: Config, step: int, sampler, backend, grader, tok, per_rank: int, ahead=None):
    """Completions, grades, examples, sampling rounds and staleness for this rank's ``per_rank`` prompts.

    With ``ahead`` (``rollout.max_staleness`` >= 1, ``trainer.ahead``) the batch was generated steps earlier.
    With ``rollout.dynamic_sampling`` (DAPO, arXiv 2503.14476 Eq. 11), groups whose correctness ties (all or
    none right: zero advantage under binary rewards) are dropped and extra prompt batches are drawn, up to
    ``rollout.max_sampling_rounds`` rounds; if the cap is hit the batch is topped up with dropped groups so
    every rank keeps its fixed size. Ranks decide together, so rounds stay in lockstep."""
    G, rank = cfg.rollout.group_size, dist.rank()
    kept, spare, rounds, staleness = [], [], 0, 0
    while True:
        examples, prompts = step_prompts(cfg, step, sampler, tok, per_rank, rounds)
        try:
            if ahead is not None:  # one round: dynamic sampling is refused with asynchrony
                comps, staleness = ahead.take(step)
            else:
                comps = backend.generate(prompts, G, seed=rollout_seed(cfg.seed, step, rank, rounds))
            lost = None
        except RolloutUnavailable as e:  # every rank stops with the error, none waits for the others forever
            lost = e
        if dist.all_reduce(torch.tensor(int(lost is not None)), "max").item():
            raise lost or RolloutUnavailable("another rank lost its rollout servers; restart them and --resume")
        grades = grader.grade([c.text for c in comps], [ex.answer for ex in examples for _ in range(G)])
        rounds += 1
        for j, ex in enumerate(examples):
            group = (ex, comps[j * G : (j + 1) * G], grades[j * G : (j + 1) * G])
            tied = len({gr.correct for gr in group[2]}) == 1
            (spare if cfg.rollout.dynamic_sampling and tied else kept).append(group)
        short = max(0, per_rank - len(kept))
        if dist.all_reduce(torch.tensor(short), "max").item() == 0 or rounds >= cfg.rollout.max_sampling_rounds:
            break
    groups = (kept + spare)[:per_rank]
    completions = [c for _, cs, _ in groups for c in cs]
    grades = [gr for _, _, grs in groups for gr in grs]
    return completions, grades, [ex for ex, _, _ in groups], rounds, staleness
