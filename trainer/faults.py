"""Fault injection for the failure tests: ``GROUPWISE_FAULT="name@step[:rank],..."``.

The failure paths (kill during a checkpoint write, a NaN loss on one rank, a collapse) must be tested on the
real code, at a known point. Production code reaches this module through one hook, ``inject(point, step,
value, **context)``, called at three marked places (``# fault hook``): it returns ``value`` unchanged unless a
fault is planted for that point, step and rank, which in normal runs (unset) is one dictionary lookup. What
each fault does is written here, not at the call sites. ``@S`` is one step, ``@S+`` that step and every
later one; ``:R`` limits the fault to rank R.

    checkpoint-mid-save@S   SIGKILL this process while writing the checkpoint of step S (trainer/checkpoint.py)
    nan-loss@S[:R]          make the loss of step S non-finite (trainer/learner.py)
    collapse@S+             replace every completion with an empty one, until the first rollback (trainer/loop.py)
"""

from __future__ import annotations

import os
import signal
from typing import Any

from rollout.base import Completion
from trainer import dist


def _parse(spec: str) -> dict[str, tuple[int, bool, int | None]]:
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, where = item.partition("@")
        step, _, rank = where.partition(":")
        out[name] = (int(step.rstrip("+")), step.endswith("+"), int(rank) if rank else None)
    return out


_FAULTS = _parse(os.environ.get("GROUPWISE_FAULT", ""))


def active(name: str, step: int) -> bool:
    """True when fault ``name`` is planted for this step and rank."""
    if name not in _FAULTS:
        return False
    s, onward, r = _FAULTS[name]
    return (step >= s if onward else step == s) and (r is None or r == dist.rank())


def inject(point: str, step: int, value: Any = None, **context: Any) -> Any:
    """The hook: ``value`` as the fault planted at ``point`` for this step and rank changes it (or never
    returns), else ``value`` itself."""
    if not active(point, step):
        return value
    return _EFFECTS[point](value, **context)


def _kill(value: Any) -> Any:
    """SIGKILL now, as a power cut or the OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)
    return value


def _nan_loss(loss: Any) -> Any:
    return loss * float("nan")


def _collapse(sampled: tuple[list, list], tok: Any, grader: Any, examples: list, group_size: int, state: dict):
    """Every completion replaced by a bare EOS and graded again, until the run has rolled back once."""
    if state["rollbacks"]:
        return sampled
    completions = [Completion(c.prompt_ids, [tok.eos_token_id], [0.0], "stop", "") for c in sampled[0]]
    answers = [ex.answer for ex in examples for _ in range(group_size)]
    return completions, grader.grade([""] * len(completions), answers)


_EFFECTS = {"checkpoint-mid-save": _kill, "nan-loss": _nan_loss, "collapse": _collapse}
