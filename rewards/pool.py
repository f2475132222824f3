"""Grading with a hard time limit that measures the check, not the machine.

* Workers are spawned processes, killed and replaced when a check runs away. A worker is *ready* only
  after its imports and a warm-up check: start-up (spawn, sympy, Math-Verify) never counts against a check,
  and a replacement is started the moment one is killed, so a spare is warm by the next check.
* The limit is the worker's **CPU time** (read from /proc on Linux), not wall time: on a busy node
  (tokenization, vLLM, DeepSpeed) a correct answer that waits for a core is not marked wrong. Each check
  first bounds itself (``rewards.math.check``: SIGPROF after ``timeout`` CPU seconds, returns False cleanly);
  the parent kills a worker past ``timeout`` + 0.5 s of CPU (a hang in C code), or past ``wall_factor``
  times the limit in wall time (a stuck worker).
* Cheap cases are decided in the parent: identical strings after normalization and plain numbers.

A hostile sample costs one reward (incorrect, counted as a timeout), never the run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import wait

from rewards.limits import MAX_ANSWER
from rewards.math import check, extract_answer, normalize
from rewards.units import units_differ
from rewards.verify import GradingTimeout, cpu_deadline

_PLAIN_NUMBER = re.compile(r"-?\d{1,30}(\.\d{1,30})?")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
GRACE = 0.5  # CPU seconds past the limit before the parent kills (the worker's own deadline fires first)
MAX_FAILED_STARTS = 5  # workers in a row that die (or hang) before they are ready: then grading stops, clearly
START_TIMEOUT = 600.0  # wall seconds a starting worker may take to import and warm up


@dataclass
class Grade:
    correct: bool
    extracted: str | None
    timed_out: bool = False
    error: bool = False


def _fast_path(pred: str, gold: str) -> bool | None:
    """Decide without symbolic work when both sides are plain numbers or identical; None: undecided."""
    if not pred.strip() or not gold.strip() or len(pred) > MAX_ANSWER or len(gold) > MAX_ANSWER:
        return None  # empty or oversized: the full check decides (False)
    if units_differ(pred, gold):
        return False  # 2 m against 2 cm: equal once normalization drops the units, and wrong
    p, g = normalize(pred), normalize(gold)
    if p == g:
        return True
    if _PLAIN_NUMBER.fullmatch(p) and _PLAIN_NUMBER.fullmatch(g):
        if Fraction(p) == Fraction(g):
            return True
        return False if "." not in p + g else None  # decimals may equal by rounding (rewards.numbers.numbers_equal)
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux /proc); None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


def _worker(conn, timeout: float, check_fn=check) -> None:  # pragma: no cover - runs in a child process
    check_fn("x^2 + 2x + 1", "(x+1)^2", None)  # warm-up: imports, Math-Verify's grammar, sympy caches
    conn.send(("ready", False, False))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        pred, gold = task
        try:
            ok, timed_out = check_fn(pred, gold, timeout)
            conn.send(("ok", ok, timed_out))
        except Exception:  # a grading bug costs this sample, never the worker
            conn.send(("error", False, False))


class GraderWorkersFailed(RuntimeError):
    """Grading workers keep dying before they are ready (a broken install, no memory): no grade is possible."""


class GraderPool:
    """``grade(texts, golds)`` with at most ``timeout`` CPU seconds per equivalence check.

    A worker that dies, idle or busy, is replaced (its check, if any, costs that sample). Workers that die
    before they are ready ``MAX_FAILED_STARTS`` times in a row raise ``GraderWorkersFailed`` instead of
    being replaced forever.

    ``check_fn`` is the workers' equivalence check (a picklable module-level function with
    ``rewards.math.check``'s signature); tests pass one that hangs where no signal reaches it."""

    def __init__(self, workers: int | None = None, timeout: float = 2.0, wall_factor: float = 20.0, check_fn=check):
        self.check_fn = check_fn
        self.n = workers or max(1, min(4, os.cpu_count() or 1))
        self.timeout, self.wall_limit = timeout, max(30.0, wall_factor * timeout)
        self.ctx = mp.get_context("spawn")  # no inherited threads or locks from torch / DeepSpeed
        self.procs: list = [None] * self.n
        self.conns: list = [None] * self.n
        self.ready = [False] * self.n
        self.started = [0.0] * self.n
        self.timeouts = 0
        self.failed_starts = 0  # in a row, pool-wide; reset when a worker becomes ready

    def _start(self, i: int) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child, self.timeout, self.check_fn), daemon=True)
        proc.start()
        child.close()
        self.procs[i], self.conns[i], self.ready[i], self.started[i] = proc, parent, False, time.monotonic()

    def _kill(self, i: int) -> None:
        if self.procs[i] is not None:
            self.procs[i].kill()
            self.procs[i].join(timeout=5)
            self.conns[i].close()
        self.procs[i] = self.conns[i] = None
        self.ready[i] = False

    def _replace(self, i: int) -> None:
        if not self.ready[i]:  # it died (or hung) before it was ready
            self.failed_starts += 1
            if self.failed_starts >= MAX_FAILED_STARTS:
                code = self.procs[i].exitcode if self.procs[i] is not None else None
                self._kill(i)
                raise GraderWorkersFailed(
                    f"{self.failed_starts} grading workers in a row died before they were ready "
                    f"(last exit code {code}); "
                    "check that `python -c 'import rewards.math'` works in this environment"
                )
        self._kill(i)
        self._start(i)  # warms up while the other workers go on

    def grade(self, texts: list[str], golds: list[str]) -> list[Grade]:
        """Grades of each response against its reference answer, in order."""
        out: list[Grade] = []
        pending: list[tuple[int, str, str]] = []
        for i, (text, gold) in enumerate(zip(texts, golds, strict=True)):
            try:
                with cpu_deadline(self.timeout):  # extraction is linear, and bounded like a check all the same
                    pred = extract_answer(text)
                fast = _fast_path(pred, gold) if pred is not None else False
            except GradingTimeout:
                out.append(Grade(False, None, timed_out=True))
                self.timeouts += 1
                continue
            except Exception:  # a grading bug costs this sample (reward 0, counted), never the run
                out.append(Grade(False, None, error=True))
                continue
            out.append(Grade(False, pred))
            if pred is None:
                continue
            if fast is None:
                pending.append((i, pred, gold))
            else:
                out[i].correct = fast
        if pending:
            self._run(pending, out)
        return out

    def _run(self, tasks: list[tuple[int, str, str]], out: list[Grade]) -> None:
        for w in range(self.n):
            if self.procs[w] is None:
                self._start(w)
            elif not self.procs[w].is_alive():  # died since the last call
                self._replace(w)
        queue = list(reversed(tasks))
        busy: dict[int, tuple[int, float | None, float]] = {}  # worker -> (row, CPU at dispatch, wall at dispatch)
        while queue or busy:
            for w in range(self.n):
                if w not in busy and queue and self.ready[w]:
                    row, pred, gold = queue[-1]
                    try:
                        self.conns[w].send((pred, gold))
                    except (BrokenPipeError, ConnectionResetError, OSError):  # it died while idle: the task waits
                        self._replace(w)
                        continue
                    queue.pop()
                    busy[w] = (row, cpu_seconds(self.procs[w].pid), time.monotonic())
            live = [self.conns[w] for w in range(self.n) if self.conns[w] is not None]
            ready = wait(live, timeout=0.05)
            for w in range(self.n):
                if self.conns[w] is None or self.conns[w] not in ready:
                    continue
                try:
                    status, ok, timed_out = self.conns[w].recv()
                except (EOFError, OSError):  # the worker died (memory, segfault)
                    status, ok, timed_out = "error", False, False
                    self._replace(w)
                if status == "ready":
                    self.ready[w], self.failed_starts = True, 0
                    continue
                if w in busy:
                    row = busy.pop(w)[0]
                    out[row].correct, out[row].error, out[row].timed_out = ok, status == "error", timed_out
                    self.timeouts += timed_out
            for w in range(self.n):  # a worker that never gets ready (hung at import) is a failed start
                if (
                    self.procs[w] is not None
                    and not self.ready[w]
                    and time.monotonic() - self.started[w] > START_TIMEOUT
                ):
                    self._replace(w)
            for w in list(busy):
                row, cpu0, wall0 = busy[w]
                cpu = cpu_seconds(self.procs[w].pid)
                used = cpu - cpu0 if cpu is not None and cpu0 is not None else time.monotonic() - wall0
                if used > self.timeout + GRACE or time.monotonic() - wall0 > self.wall_limit:
                    self._replace(w)  # hard limit: the check is abandoned, a fresh worker warms up
                    out[row].timed_out = True
                    self.timeouts += 1
                    del busy[w]

    def close(self) -> None:
        for i in range(self.n):
            if self.conns[i] is not None:
                try:
                    self.conns[i].send(None)
                except (BrokenPipeError, OSError):
                    pass
            self._kill(i)

    def __del__(self):  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass
