"""Benchmarks by name: JSONL files in the data directory the user names (``--data-dir`` or ``data.dir``, then
``$GROUPWISE_DATA``), else hub datasets by name for users with internet; any ``{problem, answer}`` JSONL path
(relative paths are also looked up in the data directory), or ``toy`` (the toy reasoner's held-out split).
Nothing outside the paths the user names is searched."""

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
DATA_ENV = "GROUPWISE_DATA"


def data_dir(explicit: str | None = None) -> Path | None:
    """The data directory the user named: ``explicit`` (``--data-dir``, ``data.dir``), else ``$GROUPWISE_DATA``;
    None when neither is set. A named directory that does not exist is an error naming where it came from."""
    named, origin = (explicit, "--data-dir / data.dir") if explicit else (os.environ.get(DATA_ENV), f"${DATA_ENV}")
    if not named:
        return None
    d = Path(named).expanduser()
    if not d.is_dir():
        raise DataError(f"data directory {named!r} (from {origin}) does not exist or is not a directory")
    return d


def data_path(name: str, directory: str | None = None) -> str:
    """A JSONL path as given when it exists; else, when relative, the file of that name in the data directory
    (so ``data.source: gsm8k_train.jsonl`` reads ``$GROUPWISE_DATA/gsm8k_train.jsonl``)."""
    d = data_dir(directory)  # a named directory that does not exist is an error even when unused here
    if Path(name).exists() or Path(name).is_absolute() or d is None or not (d / name).is_file():
        return name  # load_jsonl names a missing file
    return str(d / name)


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
            where = f"{LOCAL_FILES[name]} is not in {d}" if d else f"no data directory is named (${DATA_ENV})"
            try:
                rows = load_hub(name, split="test")
            except Exception as e:
                raise DataError(
                    f"benchmark {name!r}: {where} and loading it from the hub failed ({type(e).__name__}: {e}); "
                    f"put {LOCAL_FILES[name]} in a directory and pass --data-dir (eval), data.dir (train) or "
                    f"set {DATA_ENV}"
                ) from e
    elif Path(name).suffix == ".jsonl":
        rows = load_jsonl(data_path(name, directory))
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
    return load_benchmark(name, cfg.data.dir or None, limit=e.problems or None)
