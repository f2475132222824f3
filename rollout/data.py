"""Prompt datasets behind one interface: a list of ``Example`` rows, sampled per step without replacement.

Sources: ``arith`` (built-in synthetic sums, seeded), a JSONL file of ``{problem, answer}`` rows (the schema
of the benchmark files), or ``hub:NAME`` through ``datasets`` for users with internet.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch


class DataError(ValueError):
    """A bad data file or row; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    id: str
    problem: str
    answer: str
    budget: int | None = None  # L1: the token budget stated in ``problem`` (None: no budget)


def sum_operands(
    rng: random.Random, operands: int, max_value: int, low: int = 0, min_operands: int | None = None
) -> Iterator[list[int]]:
    """The one generator of sum problems (the ``arith`` task here, the toy lab's task in ``toylab.task``):
    endless lists of ``operands`` numbers in [low, max_value], or of ``min_operands`` to ``operands`` numbers
    (uniformly) when ``min_operands`` is given. A fixed count draws nothing extra from ``rng``."""
    while True:
        count = operands if min_operands in (None, operands) else rng.randint(min_operands, operands)
        yield [rng.randint(low, max_value) for _ in range(count)]


def arithmetic_task(n: int, operands: int = 2, max_value: int = 20, seed: int = 0) -> list[Example]:
    """``n`` distinct-ish sums 'a + b (+ c ...)' with their results, reproducible from ``seed``."""
    draws = sum_operands(random.Random(seed), operands, max_value)
    return [
        Example(f"arith/{seed}/{i}", " + ".join(map(str, nums)) + " = ?", str(sum(nums)))
        for i, nums in zip(range(n), draws)
    ]


def with_budgets(rows: list[Example], phrase: str, low: int, high: int, seed: int) -> list[Example]:
    """L1's prompts (arXiv 2503.04697 §3; ``cmu-l3/l1`` ``scripts/data/deepscaler_dataset.py``): each row gets
    a budget n drawn once, uniformly from the integers [low, high] (fixed for the whole run, as the authors
    draw it when they build the data set), and ``phrase`` with n ("Think for {n} tokens.") appended to its
    problem after a space. ``low == high`` gives every row the same budget (evaluation at a fixed budget).
    Seeded, so every rank and a resumed run see the same budgets."""
    rng = random.Random(seed * 1_000_003 + 36)
    out = []
    for r in rows:
        n = rng.randint(low, high)
        out.append(Example(r.id, f"{r.problem} {phrase.format(n=n)}", r.answer, n))
    return out


def _row(line: str, where: str, default_id: str) -> Example:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg}); each line must be one JSON object") from e
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object with 'problem' and 'answer'")
    for key in ("problem", "answer"):
        if key not in row:
            raise DataError(f"{where}: missing field {key!r}; rows need 'problem' and 'answer'")
        if not isinstance(row[key], (str, int, float)) or isinstance(row[key], bool) or not str(row[key]).strip():
            raise DataError(f"{where}: field {key!r} is empty or not a string")
    return Example(str(row.get("id", default_id)), str(row["problem"]), str(row["answer"]))


def load_jsonl(path: str | Path, skip_bad: bool = False, skipped: list[str] | None = None) -> list[Example]:
    """Rows ``{"problem": str, "answer": str, "id"?: str}``. A bad row raises naming file and line, or with
    ``skip_bad`` is skipped and its message appended to ``skipped``. No rows at all is always an error."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {str(p)!r} does not exist")
    rows = []
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(_row(line, f"{p}:{lineno}", f"{p.stem}/{lineno}"))
            except DataError as e:
                if not skip_bad:
                    raise DataError(f"{e} (or set data.skip_bad_rows=true to skip and count bad rows)") from None
                if skipped is not None:
                    skipped.append(str(e))
    if not rows:
        raise DataError(f"data file {str(p)!r} holds no usable rows")
    return rows


def load_hub(name: str, split: str = "train") -> list[Example]:  # pragma: no cover - needs internet
    """GSM8K / MATH-style hub datasets through ``datasets`` (for users with internet)."""
    import datasets

    known = {"gsm8k": ("openai/gsm8k", "main"), "math500": ("HuggingFaceH4/MATH-500", None)}
    repo, subset = known.get(name, (name, None))
    ds = datasets.load_dataset(repo, subset, split=split)
    rows = []
    for i, r in enumerate(ds):
        answer = r.get("answer", "")
        if "####" in answer:  # GSM8K keeps the final answer after ####
            answer = answer.split("####")[-1].strip().replace(",", "")
        rows.append(Example(f"{name}/{split}/{i}", r.get("problem") or r["question"], answer))
    return rows


def load_source(
    source: str,
    *,
    seed: int = 0,
    operands: int = 2,
    max_value: int = 20,
    size: int = 2000,
    skip_bad: bool = False,
    skipped: list[str] | None = None,
) -> list[Example]:
    """Resolve a ``data.source`` string to its rows: arith, hub:NAME, or a path (``toy`` is the toy lab's,
    resolved by the trainer through ``toylab.reasoner.task_rows``)."""
    if source == "arith":
        return arithmetic_task(size, operands, max_value, seed)
    if source.startswith("hub:"):
        return load_hub(source[4:])
    return load_jsonl(source, skip_bad, skipped)


class PromptSampler:
    """Global batches of prompts: epoch-wise permutations seeded by (seed, epoch), so the batch of any
    step is a pure function of the step number (resuming needs no loader state) and every rank agrees."""

    def __init__(self, rows: list[Example], batch_size: int, seed: int):
        if not rows:
            raise DataError("the prompt dataset is empty")
        self.rows, self.batch_size, self.seed = rows, batch_size, seed

    def batch(self, step: int, stream: int = 0) -> list[Example]:
        """The prompts of ``step``; ``stream`` > 0 gives independent extra batches (dynamic sampling)."""
        out = []
        for pos in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, idx = divmod(pos, len(self.rows))
            out.append(self.rows[int(self._perm(epoch, stream)[idx])])
        return out

    @functools.lru_cache(maxsize=8)  # noqa: B019 - a few (epoch, stream) pairs are live; the sampler lives all run
    def _perm(self, epoch: int, stream: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + stream * 7_777_777)
        return torch.randperm(len(self.rows), generator=g)
