"""Bounded asynchrony (``rollout.max_staleness = k``): steps s+1 .. s+k are generated while step s trains.

    step s:  take batch s (submitted earlier) -> submit batch s+k on the servers' current weights, those after
             step s-1 -> learner update on batch s -> push the weights after step s

Up to k+1 batches are in flight at once, each in its own thread, so the servers refill the slots that batch s's
short completions free with the next batches' prompts instead of waiting for its longest one.

* ``overlap`` (``rollout.server.overlap_push``, the default): the push does not wait for generation. It freezes
  the requests in flight (``/pause?mode=keep``), loads the new weights, and they go on with them. A sample may
  then come from two or more weight versions: each carries the versions read before and after its request
  (``Completion.first_weight_version``, ``weight_version``), and its staleness is the learner step minus the
  step of its OLDEST weights: those the batch was submitted on, or an older version read back. Batch s+k is
  submitted when the servers hold the weights after step s, so it is k steps old. Which weights sampled which
  token depends on timing; the staleness does not.
* without it: the loop settles every batch in flight before the push (``/pause?mode=wait`` only covers anyone
  else's requests), so batch j is always sampled by the weights after step j-k (the first k batches of a run,
  or of a resume, by the weights it starts from), and a run is a pure function of its config.

Either way the versions are read back, not assumed: each is mapped to the learner step that pushed it, and a
batch with a sample from unknown weights or older than ``k`` steps is regenerated on the current weights, never
trained on. Grading, rewards and every collective stay on the main thread; the generation threads only talk
HTTP to the servers.

Resume: a checkpoint is written after a push, once the batches generated ahead are done (``settle``), and each
rank saves its share of them (``saved``: token ids, log-probs, finish reasons, versions resolved to the oldest
weight step that sampled them; ``trainer/checkpoint.py``). ``restore`` hands them back, so a resumed run trains
on the very samples the interrupted run would have, at the same staleness, instead of regenerating them on the
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
    """Generation up to ``k`` steps ahead of the learner, up to k+1 batches at once, in background threads."""

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
        overlap: bool = False,
    ):
        self.generate, self.k, self.group_size = generate, k, group_size
        self.request, self.last_step = request, last_step  # request(step) -> (this rank's prompts, seed)
        self.weights_step = weights_step  # the trainer step whose weights the servers hold
        self.overlap = overlap  # the push overlaps generation (no settle before it); see the module docstring
        # k+1 workers: batch s's tail and batches s+1 .. s+k share the servers (continuous batching across batches)
        self.pool = ThreadPoolExecutor(max_workers=k + 1, thread_name_prefix="rollout-ahead")
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
        oldest = self.oldest_step(completions, sampled_at)
        if oldest is None or step - oldest > self.k:  # other weights, or past the bound: never trained on
            self.regenerated += 1
            prompts, seed = self.request(step)
            completions, self.generation_seconds = self._timed(prompts, seed)
            oldest = self.oldest_step(completions, self.weights_step)
            if oldest is None or step - oldest > self.k:
                raise RolloutUnavailable(  # every rank stops together (sample_step agrees on it)
                    f"rollout servers answered step {step} from weights this run did not push; restart them and "
                    "resume the run from its last checkpoint with --resume"
                )
        return completions, step - oldest

    def oldest_step(self, completions: list[Completion], sampled_at: int) -> int | None:
        """The learner step of the oldest weights behind ``completions``: ``sampled_at``, the weights the batch
        was submitted on, or an older version read back before or after a request (a server that lagged);
        None when one is not a version this run pushed. A request that started after a later push reads a
        newer version: the batch still counts from ``sampled_at``, so its staleness does not depend on when
        its thread ran."""
        read = {v for c in completions for v in (c.first_weight_version, c.weight_version) if v is not None}
        steps = [self.step_of_version.get(v) for v in read]
        return None if None in steps else min([sampled_at, *steps])

    def settle(self, *, raise_errors: bool = True) -> None:
        """Wait for the generations in flight (before a push without ``overlap``, and before a checkpoint, which
        leaves their errors to ``take``, where the ranks agree on them)."""
        for future, _ in self.pending.values():
            if raise_errors:
                future.result()
            else:
                future.exception()

    def pushed(self, step: int) -> None:
        """The servers now hold the weights after ``step`` learner steps (a push, a resume or a rollback)."""
        self.weights_step = step
        if self.version is not None:
            self.step_of_version[self.version()] = step

    def saved(self) -> list[dict]:
        """This rank's finished batches not yet trained on, for the checkpoint: each with the weight step that
        sampled it (the oldest, read back per sample where the backend reports versions). Called after ``settle``."""
        out = []
        for step, (future, sampled_at) in sorted(self.pending.items()):
            if not future.done() or future.exception() is not None:
                continue  # not a finished batch: the resumed run generates it again
            completions, seconds = future.result()
            oldest = self.oldest_step(completions, sampled_at)
            if oldest is None:
                continue  # from weights this run did not push: take() would regenerate it too
            records = [
                {**dataclasses.asdict(c), "weight_version": None, "first_weight_version": None} for c in completions
            ]
            out.append({"step": step, "weights_at": oldest, "seconds": seconds, "completions": records})
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
