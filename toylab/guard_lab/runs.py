"""The lab's runs as the guard lab reads them: per-prompt outcomes of each step (``groups.jsonl``), each run
judged healthy or collapsing, and its guard inputs at the lab's batch and simulated at ``SIM_B`` prompts."""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toylab.guard_lab.rules import COLLAPSE_METHODS, ONSET_FRACTION, ROLLBACK_METHODS, SIM_B, SIM_W, onset


@dataclass
class Run:
    name: str
    method: str
    seed: int
    correct: list[list[int]]  # per step: right answers of each prompt
    G: list[int]  # per step: samples per prompt
    kind: str = ""  # healthy | collapse
    onset: int | None = None
    series: dict[str, list[list[dict]]] = field(default_factory=dict)  # batch label -> replicates -> step rows


def step_row(correct: np.ndarray, G: int) -> dict:
    p = correct / G
    return {
        "accuracy": float(p.mean()),
        "accuracy/prompt_sd": float(p.std(ddof=1)) if p.size > 1 else float("nan"),
        "prompts": float(p.size),
    }


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return rows


def load_runs(
    runs_dir: Path, seeds: set[int], partial: bool, prefix: str = "", fraction: float = ONSET_FRACTION
) -> tuple[list[Run], list[str]]:
    """The usable runs of ``seeds`` and a note for each run directory left out or cut short (and why).
    ``prefix`` goes before each run's name (several --runs directories can hold the same names); ``fraction``:
    the onset's fraction of the start."""
    runs, notes = [], []
    for d in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        m = re.fullmatch(r"(.+)-s(\d+)", d.name)
        name = prefix + d.name
        if not m or int(m.group(2)) not in seeds:
            continue
        method, seed = m.group(1), int(m.group(2))
        if not (d / "lab.json").exists() and not partial:
            notes.append(f"{name}: not finished (no lab.json), skipped")
            continue
        events = read_jsonl(d / "events.jsonl")
        if method in ROLLBACK_METHODS or any(e.get("event") == "rollback" for e in events):
            notes.append(f"{name}: its own guard rolled back (the logged steps are not one run's history), left out")
            continue
        groups = sorted(read_jsonl(d / "groups.jsonl"), key=lambda r: r["step"])
        if not groups:
            notes.append(f"{name}: no groups.jsonl (per-prompt outcomes; written since issue #26), left out")
            continue
        steps = [g["step"] for g in groups]
        if steps != list(range(len(steps))):
            notes.append(f"{name}: groups.jsonl steps are not 0..{len(steps) - 1} in order, left out")
            continue
        run = Run(name, method, seed, [g["correct"] for g in groups], [g["G"] for g in groups])
        acc = [sum(c) / (len(c) * g) for c, g in zip(run.correct, run.G)]
        if method in COLLAPSE_METHODS:
            run.kind, run.onset = "collapse", onset(acc, fraction)
            if run.onset is None:
                notes.append(f"{name}: a collapse method without an onset by the definition, left out")
                continue
        elif (at := onset(acc, fraction)) is not None:
            notes.append(f"{name}: collapsed by the onset definition (step {at}) though healthy by method, left out")
            continue
        else:
            run.kind = "healthy"
        if not (d / "lab.json").exists():
            notes.append(f"{name}: not finished, used with its {len(steps)} steps (--partial)")
        runs.append(run)
    return runs, notes


def build_series(run: Run, replicates: int) -> None:
    """The guard's input rows: as logged (B as run) and at SIM_B prompts, ``replicates`` seeded draws each."""
    run.series["lab"] = [[step_row(np.asarray(c, dtype=float), g) for c, g in zip(run.correct, run.G)]]
    n = len(run.correct)
    sims = []
    for r in range(replicates):
        rng = np.random.default_rng([zlib.crc32(run.name.encode()), r, SIM_B, SIM_W])
        rows = []
        for t in range(n):
            lo, hi = max(0, t - SIM_W), min(n, t + SIM_W + 1)
            pool = np.asarray([k / run.G[s] for s in range(lo, hi) for k in run.correct[s]])
            p = pool[rng.integers(0, pool.size, SIM_B)]
            rows.append(step_row(p, 1))
        sims.append(rows)
    run.series[f"B={SIM_B}"] = sims
