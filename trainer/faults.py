"""Fault injection for the failure tests: ``GROUPWISE_FAULT="name@step[:rank],..."``.

The failure paths (kill during a checkpoint write, a NaN loss on one rank, a collapse) must be tested on the
real code, at a known point. Unset in normal runs, where ``active`` is one dictionary lookup. ``@S`` is one
step, ``@S+`` that step and every later one; ``:R`` limits the fault to rank R.

    checkpoint-mid-save@S   SIGKILL this process while writing the checkpoint of step S
    nan-loss@S[:R]          make the loss of step S non-finite
    collapse@S+             replace every completion with an empty one (until the first rollback)
"""

from __future__ import annotations

import os
import signal

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


def fault(name: str, step: int) -> None:
    """Kill-type faults: SIGKILL now, as a power cut or the OOM killer would."""
    if active(name, step):
        os.kill(os.getpid(), signal.SIGKILL)
