"""Benchmarks by name: local JSONL files found in one data directory (``--data-dir``, ``$GROUPWISE_DATA``, or
``../shared/data`` next to the repository or the working directory when present), hub datasets by name for
users with internet, any ``{problem, answer}`` JSONL path, or ``toy`` (the toy reasoner's held-out split)."""

from __future__ import annotations

import os
from pathlib import Path

from rollout.data import DataError, Example, load_hub, load_jsonl

LOCAL_FILES = {
    "gsm8k": "gsm8k_test.jsonl",
    "math500": "math500.jsonl",
    "aime24": "aime24.jsonl",
    "aime25": "aime25.jsonl",
    "amc23": "amc23.jsonl",
}
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def data_dir(explicit: str | None = None) -> Path | None:
    """The benchmark directory: explicit flag, then $GROUPWISE_DATA, then ../shared/data when it exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get("GROUPWISE_DATA"):
        return Path(os.environ["GROUPWISE_DATA"])
    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


def load_benchmark(name: str, directory: str | None = None, limit: int | None = None) -> list[Example]:
    """Rows of benchmark ``name`` (a known name, ``toy``, or a JSONL path), the first ``limit`` of them."""
    if name == "toy" or name.startswith("toy:"):
        from toylab.reasoner import BUILTINS, heldout

        spec = BUILTINS[name.partition(":")[2] or "builtin:toy-reasoner"]
        rows = heldout(spec, limit or 200)
    elif name in LOCAL_FILES:
        d = data_dir(directory)
        if d is not None and (d / LOCAL_FILES[name]).is_file():
            rows = load_jsonl(d / LOCAL_FILES[name])
        else:  # pragma: no cover - needs internet
            try:
                rows = load_hub(name, split="test")
            except Exception as e:
                raise DataError(
                    f"benchmark {name!r}: {LOCAL_FILES[name]} not found in data dir {d} and the hub is unreachable "
                    f"({type(e).__name__}); pass --data-dir or set GROUPWISE_DATA"
                ) from e
    elif Path(name).suffix == ".jsonl":
        rows = load_jsonl(name)
    else:
        raise DataError(f"unknown benchmark {name!r}; use one of {sorted(LOCAL_FILES)}, toy, or a .jsonl path")
    return rows[:limit] if limit else rows


def periodic_eval_rows(cfg) -> list[Example]:
    """The rows ``eval.benchmark`` names (read at start-up, before any model is built, so a missing or
    malformed file fails at once)."""
    from toylab.reasoner import BUILTINS

    e = cfg.eval
    name = e.benchmark
    if name == "toy" and cfg.model.path in BUILTINS:  # the held-out split of the model's own toy task
        name = f"toy:{cfg.model.path}"
    return load_benchmark(name, limit=e.problems or None)
