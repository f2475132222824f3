"""Bounded asynchrony vs the on-policy loop: the same work with ``rollout.max_staleness`` 0 and 1.

The learner does its full forward, backward, optimizer step and weight push every step; the 0/1 reward of
a random model is 0, so its weights (and the completions' lengths) stay where they are and both runs do the
same work. One ``vllm serve`` pinned to some cores, the trainer to the others (default: core 0 and core 1 of a 2-core
machine), both started by ``groupwise launch`` from one config, so the only difference between the two runs is
k. Step times are the mean over the steps after the first ``--warmup`` (engine and allocator warm-up). The last
line is ``ratio async/sync: 0.NNx step time``.

    python scripts/bench_async.py                       # tiny random Qwen2 (hidden 256, 4 layers), 10 steps each
    python scripts/bench_async.py --steps 20 --new 96   # longer completions: generation dominates more
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("time/generate", "time/rollout", "time/update", "time/settle", "time/push", "time/reward", "time/step")


def run(k: int, model: Path, work: Path, args) -> dict[str, float]:
    run_dir = work / f"k{k}"
    cmd = [sys.executable, "-m", "app.cli", "launch", "--servers", "1", "--port", str(args.port)]
    cmd += ["--server-cpus", args.server_cpus, "--trainer-cpus", args.trainer_cpus]
    cmd += [
        f"model.path={model}",
        f"run_dir={run_dir}",
        "device=cpu",
        "data.source=arith",
        f"data.prompts_per_step={args.prompts}",
        "data.max_prompt_tokens=64",
        f"rollout.group_size={args.group}",
        f"rollout.max_new_tokens={args.new}",
        f"optim.micro_batch_size={args.group}",
        "optim.lr=1e-3",
        "reward.name=binary",  # 0 on a random model: the weights, and so the lengths, stay put in both runs
        "guard.collapse_action=off",
        "eval.every=0",
        "log.tensorboard=false",
        "checkpoint.every=0",
        f"steps={args.steps}",
        f"rollout.max_staleness={k}",
    ]
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", PYTHONPATH=str(ROOT))
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL if args.quiet else None)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()][args.warmup :]
    out = {p: mean(r[p] for r in rows) for p in PARTS}
    out["tokens"] = mean(r["length/mean"] for r in rows) * args.prompts * args.group
    out["staleness"] = mean(r["staleness"] for r in rows)
    out["logprob_gap"] = mean(r["logprob_gap"] for r in rows)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the means")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--new", type=int, default=64, help="max new tokens per completion")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--trainer-cpus", default="1")
    p.add_argument("--port", type=int, default=8190)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from toylab.models import save_tiny

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = save_tiny(work / "model", seed=0, hidden=args.hidden, layers=args.layers, heads=args.hidden // 64)
        results = {k: run(k, model, work, args) for k in (0, 1)}
    print(
        f"\n{args.prompts} prompts x {args.group} samples, <= {args.new} new tokens, hidden {args.hidden} x "
        f"{args.layers} layers; server on CPUs {args.server_cpus}, trainer on CPUs {args.trainer_cpus}; "
        f"means over steps {args.warmup}..{args.steps - 1}"
    )
    print("| k | step s | generation s | rollout wait s | update s | settle s | push s | reward s | staleness | gap |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k, r in results.items():
        print(
            f"| {k} | {r['time/step']:.2f} | {r['time/generate']:.2f} | {r['time/rollout']:.2f} | "
            f"{r['time/update']:.2f} | "
            f"{r['time/settle']:.2f} | {r['time/push']:.2f} | {r['time/reward']:.2f} | {r['staleness']:.1f} | "
            f"{r['logprob_gap']:.2g} |"
        )
    ratio = results[1]["time/step"] / results[0]["time/step"]
    print(f"ratio async/sync: {ratio:.2f}x step time")


if __name__ == "__main__":
    main()
