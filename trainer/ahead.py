"""Bounded asynchrony (``rollout.max_staleness = k``): step s+k is generated while step s trains.

A fixed lag, so a run stays a pure function of its config:

    step s:  take batch s (generated earlier) -> submit batch s+k on the servers' current weights, those after
             step s-1 -> learner update on batch s (overlaps that generation) -> settle (batch s+k done)
             -> push the weights after step s

Batch j is therefore always sampled by the weights after step j-k (the first k batches of a run, or of a
resume, by the weights it starts from), and each batch carries that weight step, so ``staleness = s - j + k``.
With the server backend that is checked, not assumed: every completion carries the weight version the server
reported producing it (``Completion.weight_version``), mapped back to the learner step that pushed it; a batch
with a sample from unknown weights or older than ``k`` steps is regenerated on the current weights, never
trained on. A push never overlaps a generation of ours: the loop settles the batch in flight first, and the
servers' ``/pause?mode=wait`` covers anyone else's requests. One generation runs at a time, in one background
thread; grading, rewards and every collective stay on the main thread.

Resume is exact: a checkpoint is written after a push, when the batches generated ahead are done, and each rank
saves its share of them (``saved``: token ids, log-probs, finish reasons, versions resolved to the weight step
that sampled them; ``trainer/checkpoint.py``). ``restore`` hands them back, so a resumed run trains on the very
samples the uninterrupted run would have, at the same staleness, instead of regenerating them on the
checkpoint's weights.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from rollout.base import Completion
from rollout.server_push import RolloutUnavailable


class Ahead:
    """Generation up to ``k`` steps ahead of the learner, one batch at a time, in a background thread."""

    def __init__(
        self,
        generate: Callable[[list[list[int]], int, int], list[Completion]],
        k: int,
        group_size: int,
        request: Callable[[int], tuple[list[list[int]], int]],
        last_step: int,
        weights_step: int,
        *,
        version: Callable[[], int] | None = None,
    ):
        self.generate, self.k, self.group_size = generate, k, group_size
        self.request, self.last_step = request, last_step  # request(step) -> (this rank's prompts, seed)
        self.weights_step = weights_step  # the trainer step whose weights the servers hold
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout-ahead")
        self.pending: dict[int, tuple[Future, int]] = {}  # step -> (its completions, the weight step sampling it)
        self.generation_seconds = 0.0  # how long the last taken batch took to generate (its own time, not waited)
        self.version = version  # the servers' weight version now (server backend: read back per sample)
        self.step_of_version: dict[int, int] = {}  # weight version -> the learner step whose weights it holds
        self.regenerated = 0  # batches regenerated because a sample was too old or of unknown weights
        self.restored: dict[int, tuple[list[Completion], int, float]] = {}  # step -> (batch, its weight step, s)
        self.pushed(weights_step)

    def _submit(self, step: int) -> None:
        if step in self.pending or step in self.restored or step >= self.last_step:
            return
        prompts, seed = self.request(step)
        self.pending[step] = (self.pool.submit(self._timed, prompts, seed), self.weights_step)

    def _timed(self, prompts: list[list[int]], seed: int) -> tuple[list[Completion], float]:
        t0 = time.perf_counter()
        out = self.generate(prompts, self.group_size, seed)
        return out, time.perf_counter() - t0

    def take(self, step: int) -> tuple[list[Completion], int]:
        """Batch ``step`` and the staleness of its samples (learner steps between their weights and now);
        first submits every batch up to ``step + k`` that is not yet on its way."""
        for s in range(step, step + self.k + 1):
            self._submit(s)
        if step in self.restored:  # generated before a resume, by the weights after step `weights_at`
            completions, weights_at, self.generation_seconds = self.restored.pop(step)
            return completions, step - weights_at
        future, sampled_at = self.pending.pop(step)
        completions, self.generation_seconds = future.result()
        read = {c.weight_version for c in completions if c.weight_version is not None}
        if not read:  # a backend that does not read versions back: the weight step it was submitted on
            return completions, step - sampled_at
        steps = [self.step_of_version.get(v) for v in read]
        if None in steps or step - min(steps) > self.k:  # other weights, or past the bound: never trained on
            self.regenerated += 1
            prompts, seed = self.request(step)
            completions, self.generation_seconds = self._timed(prompts, seed)
            steps = [self.step_of_version.get(c.weight_version) for c in completions]
            if None in steps or step - min(steps) > self.k:
                raise RolloutUnavailable(  # every rank stops together (sample_step agrees on it)
                    f"rollout servers answered step {step} from weights this run did not push; restart them and "
                    "resume the run from its last checkpoint with --resume"
                )
        return completions, step - min(steps)

    def settle(self) -> None:
        """Wait for the generations in flight (before a push), raising their errors."""
        for future, _ in self.pending.values():
            future.result()

    def pushed(self, step: int) -> None:
        """The servers now hold the weights after ``step`` learner steps (a push, a resume or a rollback)."""
        self.weights_step = step
        if self.version is not None:
            self.step_of_version[self.version()] = step

    def saved(self) -> list[dict]:
        """This rank's finished batches not yet trained on, for the checkpoint: each with the weight step that
        sampled it (read back per sample where the backend reports versions). Called after ``settle``."""
        out = []
        for step, (future, sampled_at) in sorted(self.pending.items()):
            if not future.done() or future.exception() is not None:
                continue  # not a finished batch: the resumed run generates it again
            completions, seconds = future.result()
            read = {c.weight_version for c in completions if c.weight_version is not None}
            steps = [self.step_of_version.get(v) for v in read] or [sampled_at]
            if None in steps:
                continue  # from weights this run did not push: take() would regenerate it too
            records = [{**dataclasses.asdict(c), "weight_version": None} for c in completions]
            out.append({"step": step, "weights_at": min(steps), "seconds": seconds, "completions": records})
        return out

    def restore(self, saved: list[dict]) -> None:
        """Take back the batches ``saved`` wrote (after a resume or a rollback to that checkpoint); one that
        this run will not reach, or that is older than the bound ``k`` allows, is generated again."""
        for b in saved:
            step, weights_at = b["step"], b["weights_at"]
            if step >= self.weights_step and step < self.last_step and 0 <= step - weights_at <= self.k:
                batch = [Completion(**c) for c in b["completions"]]
                self.restored[step] = (batch, weights_at, b["seconds"])

    def discard(self) -> None:
        """Drop every batch in flight (a rollback replays those steps on other weights)."""
        for future, _ in self.pending.values():
            try:
                future.result()
            except Exception:
                pass
        self.pending.clear()
        self.restored.clear()

    def close(self) -> None:
        self.discard()
        self.pool.shutdown(wait=True)
