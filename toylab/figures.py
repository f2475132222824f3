"""The toy lab's figure per experiment: training and held-out curves, one line per seed, one colour per method."""

from __future__ import annotations

from pathlib import Path

from toylab.experiments import COLORS, EXPERIMENTS
from toylab.results import read_jsonl


def smooth(xs: list[float], k: int = 9) -> list[float]:
    out = []
    for i in range(len(xs)):
        w = xs[max(0, i - k + 1) : i + 1]
        out.append(sum(w) / len(w))
    return out


def figure(experiment: str, runs: Path, seeds: list[int], out: Path) -> Path:
    """Four panels: training accuracy and length (moving mean of 9 steps), held-out accuracy and tokens;
    one line per seed, one colour per method; steps undone by a rollback dotted, guard events marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    panels = [("accuracy", "training accuracy"), ("length/mean", "training length (tokens)")]
    exp = EXPERIMENTS[experiment]
    for name in exp.methods + exp.controls:
        color = COLORS.get(name, None)
        for i, seed in enumerate(seeds):
            run = runs / experiment / f"{name}-s{seed}"
            label = name if i == 0 else None
            for (key, _), ax in zip(panels, axes[0]):
                for path, style in (("metrics.discarded.jsonl", ":"), ("metrics.jsonl", "-")):
                    rows = [r for r in read_jsonl(run / path) if r.get(key) is not None]
                    if rows:
                        xs = [r["step"] for r in rows]
                        ax.plot(xs, smooth([r[key] for r in rows]), style, color=color, lw=1.2, alpha=0.8,
                                label=label if style == "-" else None)  # fmt: skip
            evals = read_jsonl(run / "eval.jsonl")
            for key, ax in (("accuracy", axes[1][0]), ("tokens", axes[1][1])):
                if evals:
                    ax.plot([e["after_steps"] for e in evals], [e[key] for e in evals], "o-", color=color, ms=3,
                            lw=1.2, alpha=0.8, label=label)  # fmt: skip
            for e in read_jsonl(run / "events.jsonl"):
                if e["event"] in ("collapse", "rollback"):
                    for ax in axes.flat:
                        ax.axvline(e["step"], color=color, lw=0.8, ls="--" if e["event"] == "collapse" else "-.")
    titles = ["training accuracy", "training length (tokens)", "held-out accuracy", "held-out tokens"]
    for ax, title in zip(axes.flat, titles):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"toy lab: {experiment} (seeds {', '.join(map(str, seeds))}; one line per seed)")
    fig.tight_layout()
    path = out / f"lab-{experiment}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
