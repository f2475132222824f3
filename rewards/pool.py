"""Grading with a hard time limit: worker processes that are killed and replaced when a check runs over.

A hostile sample can cost one reward (it counts as incorrect and as a timeout in the metrics), never the
run. Cheap cases are decided in the parent: exact string equality after normalization and plain numbers.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import wait

from rewards.math import extract_answer, is_equivalent, normalize

_PLAIN_NUMBER = re.compile(r"-?\d{1,30}(\.\d{1,30})?")


@dataclass
class Grade:
    correct: bool
    extracted: str | None
    timed_out: bool = False
    error: bool = False


def _fast_path(pred: str, gold: str) -> bool | None:
    """Decide without symbolic work when both sides are plain numbers or identical; None: undecided."""
    p, g = normalize(pred), normalize(gold)
    if p == g:
        return True
    if _PLAIN_NUMBER.fullmatch(p) and _PLAIN_NUMBER.fullmatch(g):
        return Fraction(p) == Fraction(g)
    return None


def _worker(conn) -> None:  # pragma: no cover - runs in a child process
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        pred, gold = task
        try:
            conn.send(("ok", bool(is_equivalent(pred, gold))))
        except Exception:  # a grading bug costs this sample, never the worker
            conn.send(("error", False))


class GraderPool:
    """``grade(texts, golds)`` with at most ``timeout`` seconds per equivalence check."""

    def __init__(self, workers: int | None = None, timeout: float = 2.0):
        self.n = workers or max(1, min(4, os.cpu_count() or 1))
        self.timeout = timeout
        self.ctx = mp.get_context("spawn")  # no inherited threads or locks from torch / DeepSpeed
        self.procs: list = [None] * self.n
        self.conns: list = [None] * self.n
        self.timeouts = 0

    def _start(self, i: int) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child,), daemon=True)
        proc.start()
        child.close()
        self.procs[i], self.conns[i] = proc, parent

    def _kill(self, i: int) -> None:
        if self.procs[i] is not None:
            self.procs[i].kill()
            self.procs[i].join(timeout=5)
            self.conns[i].close()
        self.procs[i] = self.conns[i] = None

    def grade(self, texts: list[str], golds: list[str]) -> list[Grade]:
        """Grades of each response against its reference answer, in order."""
        out: list[Grade] = []
        pending: list[tuple[int, str, str]] = []
        for i, (text, gold) in enumerate(zip(texts, golds, strict=True)):
            try:
                pred = extract_answer(text)
                fast = _fast_path(pred, gold) if pred is not None else False
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
        queue = list(reversed(tasks))
        busy: dict[int, tuple[int, float]] = {}  # worker -> (row, start time)
        while queue or busy:
            for w in range(self.n):
                if w not in busy and queue:
                    if self.procs[w] is None or not self.procs[w].is_alive():
                        self._start(w)
                    row, pred, gold = queue.pop()
                    self.conns[w].send((pred, gold))
                    busy[w] = (row, time.monotonic())
            ready = wait([self.conns[w] for w in busy], timeout=0.05)
            for w in list(busy):
                row, started = busy[w]
                if self.conns[w] in ready:
                    try:
                        status, ok = self.conns[w].recv()
                    except (EOFError, OSError):  # the worker died (memory, segfault): this sample is lost
                        status, ok = "error", False
                        self._kill(w)
                    out[row].correct, out[row].error = ok, status == "error"
                    del busy[w]
                elif time.monotonic() - started > self.timeout:
                    self._kill(w)  # hard limit: the check is abandoned, the worker replaced on next use
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
