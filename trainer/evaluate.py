"""Evaluation: k samples per problem through the rollout backend interface, graded by the same grader as
training, summarized the way the papers report it (accuracy and mean response tokens). Which benchmark rows
to use is the application's business (``app.benchmarks``); this module takes rows.
"""

from __future__ import annotations

import math
from pathlib import Path

from rollout.base import encode_prompt
from rollout.data import DataError, Example


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, arXiv 2107.03374, Eq. 1)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def evaluate(backend, tok, rows: list[Example], k: int, grader, instruction: str, *, seed: int = 0) -> dict:
    """Sample ``k`` completions per row, grade them; returns ``{"summary": ..., "problems": [...]}``."""
    prompts = [encode_prompt(tok, r.problem, instruction) for r in rows]
    completions = backend.generate(prompts, k, seed=seed) if rows else []
    grades = grader.grade([c.text for c in completions], [r.answer for r in rows for _ in range(k)])
    problems = []
    for j, r in enumerate(rows):
        cs, gs = completions[j * k : (j + 1) * k], grades[j * k : (j + 1) * k]
        problems.append(
            {
                "id": r.id,
                "answer": r.answer,
                "samples": [c.text for c in cs],
                "extracted": [g.extracted for g in gs],
                "correct": [bool(g.correct) for g in gs],
                "tokens": [len(c.token_ids) for c in cs],
                "truncated": [c.finish_reason == "length" for c in cs],
            }
        )
    return {"summary": summarize(problems, k), "problems": problems}


def summarize(problems: list[dict], k: int) -> dict[str, float]:
    """avg@k accuracy, pass@k, mean tokens over all / correct / incorrect responses, truncation rate."""
    flat = [(c, t, tr) for p in problems for c, t, tr in zip(p["correct"], p["tokens"], p["truncated"])]
    if not flat:
        raise DataError("evaluation got no samples: the benchmark is empty")

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    return {
        "problems": len(problems),
        "samples": k,
        "accuracy": mean([float(c) for c, _, _ in flat]),
        f"pass@{k}": mean([pass_at_k(len(p["correct"]), sum(p["correct"]), k) for p in problems]),
        "tokens": mean([t for _, t, _ in flat]),
        "tokens_correct": mean([t for c, t, _ in flat if c]),
        "tokens_incorrect": mean([t for c, t, _ in flat if not c]),
        "truncation": mean([float(tr) for _, _, tr in flat]),
    }


def _fmt(x: float, pct: bool = False) -> str:
    if x != x:
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.0f}"


def markdown_table(results: dict[str, dict]) -> str:
    """Rows: benchmarks + the average over them; columns: accuracy (%), pass@k (%), tokens, truncation."""
    k = next(iter(results.values()))["samples"] if results else 1
    lines = [
        f"| benchmark | problems | acc (avg@{k}) % | pass@{k} % | tokens | tokens (correct) | tokens (wrong) "
        "| truncated % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in results.items():
        lines.append(
            f"| {name} | {s['problems']} | {_fmt(s['accuracy'], True)} | {_fmt(s[f'pass@{k}'], True)} | "
            f"{_fmt(s['tokens'])} | {_fmt(s['tokens_correct'])} | {_fmt(s['tokens_incorrect'])} | "
            f"{_fmt(s['truncation'], True)} |"
        )
    if len(results) > 1:
        avg = {key: sum(s[key] for s in results.values()) / len(results) for key in ("accuracy", f"pass@{k}", "tokens")}
        lines.append(
            f"| **average** | | {_fmt(avg['accuracy'], True)} | {_fmt(avg[f'pass@{k}'], True)} "
            f"| {_fmt(avg['tokens'])} | | | |"
        )
    return "\n".join(lines)


def compare_table(runs: dict[str, dict[str, dict]]) -> str:
    """Several runs side by side per benchmark: accuracy, tokens, and against the first run the accuracy
    change (points) and the relative token reduction, as the length-reduction papers report them."""
    names = list(runs)
    base = runs[names[0]]
    benches = [b for b in base if all(b in r for r in runs.values())]
    lines = [
        "| run | "
        + " | ".join(f"{b} acc % | {b} tokens" for b in benches)
        + " | avg acc % | avg tokens | Δacc (pts) | tokens vs first |"
    ]
    lines.append("|---|" + "---:|---:|" * len(benches) + "---:|---:|---:|---:|")
    b_acc = sum(base[b]["accuracy"] for b in benches) / len(benches)
    b_tok = sum(base[b]["tokens"] for b in benches) / len(benches)
    for name in names:
        r = runs[name]
        acc = sum(r[b]["accuracy"] for b in benches) / len(benches)
        tok = sum(r[b]["tokens"] for b in benches) / len(benches)
        cells = " | ".join(f"{_fmt(r[b]['accuracy'], True)} | {_fmt(r[b]['tokens'])}" for b in benches)
        lines.append(
            f"| {name} | {cells} | {_fmt(acc, True)} | {_fmt(tok)} | {100 * (acc - b_acc):+.1f} "
            f"| {100 * (tok / b_tok - 1):+.1f}% |"
        )
    return "\n".join(lines)


def evaluate_sharded(backend, tok, rows: list[Example], k: int, grader, instruction: str, *, seed: int = 0) -> dict:
    """``evaluate`` with the rows split over the ranks (equal shares, padded, so lockstep generation under
    ZeRO-3 stays matched); every rank returns the same full result."""
    from trainer import dist

    world, rank = dist.world(), dist.rank()
    share = -(-len(rows) // world)
    mine = rows[rank * share : (rank + 1) * share]
    n_real = len(mine)
    mine = mine + rows[: share - n_real] if share > n_real else mine  # padding rows are dropped below
    out = evaluate(backend, tok, mine, k, grader, instruction, seed=seed + rank)
    problems = [p for part in dist.gather_objects(out["problems"][:n_real]) for p in part]
    return {"summary": summarize(problems, k), "problems": problems}


class PeriodicEval:
    """Evaluation during training (``eval.every``): before step 0, every N steps and at the end, on a fixed
    set of problems with fixed seeds so successive evaluations are paired. Rows go to ``eval.jsonl`` and the
    ``eval/*`` keys of the step's metrics row."""

    def __init__(self, cfg, backend, tok, grader, run_dir: Path, rows: list[Example]):
        self.name, self.rows = cfg.eval.benchmark, rows
        self.cfg, self.backend, self.tok, self.grader, self.run_dir = cfg, backend, tok, grader, run_dir

    def __call__(self, after_steps: int) -> dict[str, float]:
        import json

        from trainer import dist

        e = self.cfg.eval
        res = evaluate_sharded(
            self.backend,
            self.tok,
            self.rows,
            e.samples,
            self.grader,
            self.cfg.data.instruction,
            seed=self.cfg.seed + 99_991,
        )
        s = res["summary"]
        if dist.is_main():
            with (self.run_dir / "eval.jsonl").open("a") as f:
                # per problem: correct samples and mean tokens, in row order (paired statistics over problems)
                per = {
                    "problem_correct": [sum(p["correct"]) for p in res["problems"]],
                    "problem_tokens": [round(sum(p["tokens"]) / max(1, len(p["tokens"])), 2) for p in res["problems"]],
                }
                f.write(json.dumps({"after_steps": after_steps, "benchmark": self.name, **s, **per}) + "\n")
        keys = ("accuracy", f"pass@{e.samples}", "tokens", "tokens_correct", "tokens_incorrect", "truncation")
        return {f"eval/{k}": s[k] for k in keys}
