"""Before/after tables of runs from their ``eval.jsonl`` (held-out evaluation) and ``config.yaml``."""

from __future__ import annotations

from pathlib import Path

import yaml

from trainer.metrics import read_metrics


def run_summary(run_dir: Path | str) -> dict | None:
    """First and last held-out evaluation of a run, with its objective and reward; None without evals."""
    run_dir = Path(run_dir)
    path = run_dir / "eval.jsonl"
    if not path.exists():
        return None
    rows = read_metrics(path)
    if not rows:
        return None
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    first, last = rows[0], rows[-1]
    return {
        "run": run_dir.name,
        "objective": cfg.get("loss", {}).get("name", "?"),
        "reward": cfg.get("reward", {}).get("name", "?"),
        "steps": last["after_steps"],
        "acc_before": first["accuracy"],
        "acc_after": last["accuracy"],
        "tokens_before": first["tokens"],
        "tokens_after": last["tokens"],
        "history": [(r["after_steps"], r["accuracy"], r["tokens"]) for r in rows],
    }


def before_after_table(run_dirs: list[Path | str]) -> str:
    """Markdown: accuracy and mean tokens on the held-out set before and after training, per run."""
    lines = [
        "| run | objective | reward | steps | accuracy before | accuracy after | Δ (pts) | tokens before "
        "| tokens after | Δ tokens |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d in run_dirs:
        s = run_summary(d)
        if s is None:
            lines.append(f"| {Path(d).name} | (no eval.jsonl: set eval.every) | | | | | | | | |")
            continue
        d_acc = 100 * (s["acc_after"] - s["acc_before"])
        d_tok = 100 * (s["tokens_after"] / s["tokens_before"] - 1) if s["tokens_before"] else float("nan")
        lines.append(
            f"| {s['run']} | {s['objective']} | {s['reward']} | {s['steps']} | {100 * s['acc_before']:.1f}% "
            f"| {100 * s['acc_after']:.1f}% | {d_acc:+.1f} | {s['tokens_before']:.1f} | {s['tokens_after']:.1f} "
            f"| {d_tok:+.1f}% |"
        )
    return "\n".join(lines)
