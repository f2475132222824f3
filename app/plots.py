"""Training curves: one PNG with a panel per quantity, several runs overlaid."""

from __future__ import annotations

from pathlib import Path

from trainer.metrics import read_metrics

PANELS = [
    ("reward", ["reward/mean"]),
    ("accuracy", ["accuracy"]),
    ("length (tokens)", ["length/mean", "length/correct", "length/incorrect"]),
    ("entropy", ["entropy"]),
    ("KL", ["approx_kl_old", "kl_ref"]),
    ("clip fraction", ["clip_frac_token", "clip_frac_seq"]),
    ("grad norm", ["grad_norm"]),
    ("degenerate share / truncation", ["degenerate_share", "truncation_rate"]),
]


def plot_runs(run_dirs: list[Path | str], out: Path | str, labels: list[str] | None = None) -> Path:
    """Write ``out`` (PNG) with the curves of every run in ``run_dirs``; missing metrics are skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [
        (labels[i] if labels else Path(d).name, read_metrics(Path(d) / "metrics.jsonl")) for i, d in enumerate(run_dirs)
    ]
    fig, axes = plt.subplots(3, 3, figsize=(16, 11))
    styles = {0: "-", 1: "--", 2: ":"}
    _eval_panel(axes.flat[-1], run_dirs, [label for label, _ in runs])
    for ax, (title, keys) in zip(axes.flat, PANELS):
        for ri, (label, rows) in enumerate(runs):
            for ki, key in enumerate(keys):
                pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
                if pts:
                    xs, ys = zip(*pts)
                    name = label if len(keys) == 1 else f"{label}: {key.split('/')[-1]}"
                    ax.plot(xs, ys, styles[ki % 3], color=f"C{ri}", label=name, linewidth=1.4)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _eval_panel(ax, run_dirs: list[Path | str], labels: list[str]) -> None:
    """Held-out accuracy (solid) and mean tokens (dashed, right axis) from each run's eval.jsonl."""
    twin = ax.twinx()
    for ri, (d, label) in enumerate(zip(run_dirs, labels)):
        path = Path(d) / "eval.jsonl"
        if not path.exists():
            continue
        rows = read_metrics(path)
        xs = [r["after_steps"] for r in rows]
        ax.plot(xs, [r["accuracy"] for r in rows], "-o", color=f"C{ri}", label=f"{label}: accuracy", markersize=3)
        twin.plot(xs, [r["tokens"] for r in rows], "--s", color=f"C{ri}", label=f"{label}: tokens", markersize=3)
    ax.set_title("held-out eval: accuracy (solid), tokens (dashed, right)")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
