"""A run's parts, built once at start-up, and the state it carries from step to step.

``open_session`` checks everything it can before any model is built (the rows, the context budget, the run
directory), then builds the learner, the rollout backend, the reward scheme, the grader, the collapse guard
and the periodic evaluation. ``Session.restore`` / ``Session.save`` move the whole run state (weights,
optimizer, RNG, reward-scheme and guard state, the loop's counters) in and out of checkpoints.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from rewards.pool import GraderPool
from rewards.schemes import RewardBatch, scheme_from_config
from rollout.base import RolloutBackend
from rollout.data import PromptSampler
from trainer import checkpoint, dist
from trainer.ahead import Ahead
from trainer.backends import build_backend, check_backend, check_context, model_positions
from trainer.collapse import CollapseGuard
from trainer.config import Config, ConfigError, resolve, save_config, validate
from trainer.evaluate import PeriodicEval
from trainer.learner import Learner
from trainer.lifecycle import truncate_history
from trainer.sampling import Grader, rollout_seed, step_prompts


class RewardScheme(Protocol):
    """A ``rewards.schemes`` scheme: rewards of the whole batch, its metrics, and state saved in checkpoints."""

    penalty_scale: float  # lowered by each collapse rollback

    def __call__(self, batch: RewardBatch) -> tuple[torch.Tensor, dict[str, float]]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class Session:
    """Everything a run holds between steps (``trainer.sampling.Sampling`` reads its rollout parts)."""

    cfg: Config
    run_dir: Path
    sampler: PromptSampler
    tok: PreTrainedTokenizerBase
    learner: Learner
    backend: RolloutBackend
    scheme: RewardScheme
    grader: Grader  # a rewards.pool.GraderPool in a run
    guard: CollapseGuard
    evaluator: PeriodicEval | None
    per_rank: int  # prompts of this rank per step
    state: dict = field(default_factory=lambda: {"rollbacks": 0, "nonfinite_streak": 0})  # saved in checkpoints
    ahead: Ahead | None = None  # rollout.max_staleness >= 1: batches generated while the learner trains
    resumed_ahead: list = field(default_factory=list)  # the checkpoint's batches generated ahead (Ahead.saved)

    def restore(self, path: Path) -> int:
        """Load checkpoint ``path`` (weights, optimizer, RNG, scheme, guard, loop state); returns its step."""
        g, run = self.cfg.guard, self.state
        saved = checkpoint.load(path, self.learner)
        self.scheme.load_state_dict(saved["scheme"])
        self.guard.load_state_dict(saved["guard"])
        replays = run["rollbacks"] - saved["run"]["rollbacks"]  # rollbacks since this checkpoint was saved
        run.update(saved["run"], rollbacks=run["rollbacks"])
        if replays:  # each rollback since then lowers the LR and the length penalty once more
            self.learner.scale_lr(g.rollback_lr_factor**replays)
            self.scheme.penalty_scale *= g.rollback_penalty_factor**replays
        if dist.is_main():
            truncate_history(self.run_dir, saved["step"])
        self.resumed_ahead = checkpoint.load_ahead(path)
        self.push_weights(saved["step"])
        if self.ahead is not None:  # a rollback: the batches generated ahead of that checkpoint are taken back
            self.ahead.restore(self.resumed_ahead)
        return saved["step"]

    def push_weights(self, step: int) -> None:
        """Make the sampler hold the learner's weights after ``step`` steps (a separate engine or server keeps
        the weights it was built or last synced with); batches in flight were sampled for another history."""
        if self.ahead is not None:
            self.ahead.discard()
        self.backend.sync_weights()
        if self.ahead is not None:
            self.ahead.pushed(step)

    def save(self, step: int) -> None:
        extra = {"scheme": self.scheme.state_dict(), "guard": self.guard.state_dict(), "run": dict(self.state)}
        if self.ahead is not None:  # with overlap_push batches may still be in flight: the checkpoint keeps them
            self.ahead.settle(raise_errors=False)
        ahead = self.ahead.saved() if self.ahead is not None else None
        checkpoint.save(
            self.run_dir, step, self.learner, extra, self.cfg.checkpoint.keep, tokenizer=self.tok, ahead=ahead
        )

    def start_ahead(self, start: int) -> None:
        """With ``rollout.max_staleness`` k >= 1, generation runs k steps ahead from step ``start``."""
        cfg = self.cfg
        if cfg.rollout.max_staleness == 0:
            return
        rank = dist.rank()

        def request(s: int) -> tuple[list[list[int]], int]:
            return step_prompts(self, s)[1], rollout_seed(cfg.seed, s, rank)

        G = cfg.rollout.group_size
        read_back = (lambda: self.backend.version) if hasattr(self.backend, "version") else None  # server backend
        self.ahead = Ahead(
            self.backend.generate,
            cfg.rollout.max_staleness,
            G,
            request,
            cfg.steps,
            start,
            version=read_back,
            overlap=getattr(self.backend, "overlap_push", False),  # the push freezes requests instead of waiting
        )
        self.ahead.restore(self.resumed_ahead)  # after --resume: the checkpoint's batches, not regenerated

    def close(self) -> None:
        """Close the generation pool, the backend (a colocated engine is shut down) and the graders. Called in
        the loop's ``finally``: a part that fails to close is reported, never raised, so the error or the
        preemption that ended the run is the one that propagates."""
        parts = (("generation ahead", self.ahead), ("rollout backend", self.backend), ("grader", self.grader))
        for name, part in parts:
            if part is None or not hasattr(part, "close"):
                continue
            try:
                part.close()
            except Exception as e:
                print(f"closing the {name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)


def open_session(cfg: Config, inputs) -> tuple[Session, Path | None]:
    """Check, then build every part of a run (``inputs``: ``trainer.loop.RunInputs``); returns the session and
    the checkpoint to resume from (None: a fresh start)."""
    device = dist.pick_device(cfg.device)
    dist.init(device.type)
    validate(cfg, dist.world())
    resolve(cfg)
    run_dir = Path(cfg.run_dir)
    check_backend(cfg, device)  # vllm importable, servers given: before any model is built
    sampler = PromptSampler(inputs.rows, cfg.data.prompts_per_step, cfg.seed)  # an empty dataset fails here
    check_context(cfg, inputs.positions)  # a builtin model: before it is built (the toy reasoner takes minutes)
    ckpt = checkpoint.latest(run_dir) if cfg.resume == "auto" else None
    if dist.is_main():
        _check_run_dir(cfg, run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        checkpoint.discard_incomplete(run_dir)
        inputs.model_path()  # builds a builtin model once, on rank 0
    dist.barrier()
    model_path = inputs.model_path()
    check_context(cfg, model_positions(model_path))
    torch.manual_seed(cfg.seed)

    tok = AutoTokenizer.from_pretrained(model_path)
    learner = Learner(cfg, model_path, device)
    # ZeRO-3 forwards are collective: every rank keeps stepping until all are done
    lockstep = _all_ranks_done if cfg.deepspeed.zero_stage == 3 and dist.world() > 1 else None
    backend = build_backend(cfg, learner, model_path, tok, device, lockstep)
    e = cfg.eval
    grader = GraderPool(cfg.reward.grade_workers or None, cfg.reward.grade_timeout)
    evaluator = None
    if e.every:
        eval_backend = backend.with_sampling(e.max_new_tokens or cfg.rollout.max_new_tokens, e.temperature, e.top_p)
        evaluator = PeriodicEval(cfg, eval_backend, tok, grader, run_dir, inputs.eval_rows)
    session = Session(
        cfg=cfg,
        run_dir=run_dir,
        sampler=sampler,
        tok=tok,
        learner=learner,
        backend=backend,
        scheme=scheme_from_config(cfg.reward),
        grader=grader,
        guard=CollapseGuard.from_config(cfg.guard),
        evaluator=evaluator,
        per_rank=cfg.data.prompts_per_step // dist.world(),
    )
    return session, ckpt


def _all_ranks_done(done: bool) -> bool:
    return dist.all_reduce(torch.tensor(int(not done)), "max").item() == 0


def _check_run_dir(cfg: Config, run_dir: Path) -> None:
    """Refuse to silently append to, or overwrite, another run's history."""
    metrics = run_dir / "metrics.jsonl"
    if cfg.resume == "never" and metrics.exists() and metrics.stat().st_size > 0:
        raise ConfigError(
            f"run_dir {str(run_dir)!r} already holds a run; continue it with --resume (resume=auto), "
            "or choose another run_dir (or delete this one)"
        )
