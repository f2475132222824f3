"""The report of `groupwise check-gpu`: its figures, the table, the dry run's listing, the refusal without CUDA."""

from __future__ import annotations

import os
import shlex

from app.check_gpu.plan import Check

FIGURES = [  # (key, label, check it comes from)
    ("learner_tokens_per_s", "learner tokens/s", "train"),
    ("mfu", "learner MFU", "train"),
    ("vllm_tokens_per_s", "vLLM generated tokens/s", "train"),
    ("weight_sync_s", "weight sync s (0.5B, ZeRO-3)", "train"),
    ("step_s", "step s", "train"),
    ("logprob_gap", "sampler/learner logprob_gap", "train"),
    ("nccl_busbw_gbps", "NCCL all-reduce bus GB/s", "nccl"),
    ("matmul_tflops", "bf16 matmul probe TFLOP/s", "torch"),
]


def summarize(results: list[dict], meta: dict) -> dict:
    figures = {}
    for key, _, name in FIGURES:
        figures[key] = next((r["figures"].get(key) for r in results if r["name"] == name), None)
    figures["mfu_peak"] = next((r["figures"].get("mfu_peak") for r in results if r["name"] == "train"), None)
    peaks = [r["peak_gpu_mem_gib"] for r in results if r.get("peak_gpu_mem_gib") is not None]
    figures["peak_gpu_mem_gib"] = max(peaks) if peaks else None
    ok = all(r["status"] == "pass" for r in results)
    return {**meta, "ok": ok, "figures": figures, "checks": results}


def render(report: dict) -> str:
    lines = ["", "| # | check | status | s | peak GPU GiB | reason |", "|---:|---|---|---:|---:|---|"]
    for i, r in enumerate(report["checks"], 1):
        mem = "" if r.get("peak_gpu_mem_gib") is None else f"{r['peak_gpu_mem_gib']:.1f}"
        lines.append(f"| {i} | {r['name']} | {r['status'].upper()} | {r['seconds']:.0f} | {mem} | {r['reason']} |")
        for t in r.get("tests", []):
            lines.append(f"|  | . {t['test']} | {t['status']} | {t.get('seconds', 0):.0f} |  | {t['reason']} |")
    f = report["figures"]
    lines += ["", "| figure | value |", "|---|---:|"]
    for key, label, _ in FIGURES:
        v = f.get(key)
        text = "n/a" if v is None else (f"{100 * v:.1f}%" if key == "mfu" else f"{v:,.6g}")
        lines.append(f"| {label} | {text} |")
    mem = "n/a" if f["peak_gpu_mem_gib"] is None else f"{f['peak_gpu_mem_gib']:.1f}"
    lines.append(f"| peak GPU memory GiB (busiest GPU, any check) | {mem} |")
    if f.get("mfu_peak"):
        lines.append(f"\nMFU peak: {f['mfu_peak']}")
    passed = sum(r["status"] == "pass" for r in report["checks"])
    lines.append(
        f"\ncheck-gpu: {'OK' if report['ok'] else 'FAILED'}: {passed}/{len(report['checks'])} checks passed in "
        f"{report['total_s']:.0f} s; report {report['out']}, logs {report['work']}/logs/"
    )
    return "\n".join(lines)


def dry_run(checks: list[Check], args) -> str:
    lines = [
        f"check-gpu --dry-run: {len(checks)} steps, each in its own process; global limit {args.deadline:.0f} s "
        f"(--deadline); report -> {args.out}; nothing is run.",
    ]
    for i, c in enumerate(checks, 1):
        extra = f", after {', '.join(c.needs)}" if c.needs else ""
        lines.append(f"{i:>2}. {c.name:<14} {c.title}  [limit {c.timeout:.0f} s{extra}]")
        lines.append(f"    $ {shlex.join(c.argv)}")
        if c.note:
            lines.append(f"    {c.note}")
    lines.append(
        f"{len(checks) + 1:>2}. report         the table below the run, and {args.out} (pass/fail + reason per check, "
        "learner tokens/s and MFU, vLLM tokens/s, weight-sync s, peak GPU memory)"
    )
    return "\n".join(lines)


def refusal() -> str | None:
    """Why this machine cannot run the checks, or None."""
    import torch

    if torch.cuda.is_available():
        return None
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hint = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    fix = (
        "check the driver with nvidia-smi"
        if torch.version.cuda
        else "run it on a GPU node after `make setup-gpu` (this venv has CPU torch)"
    )
    return (
        f"check-gpu: no CUDA device visible (torch {torch.__version__}, {build}{hint}); {fix}; "
        "`--dry-run` lists the steps"
    )


# ----------------------------------------------------------------------------- workers (run in the checks' processes)
