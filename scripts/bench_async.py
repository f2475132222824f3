"""Bounded asynchrony on a workload like real RL: ``rollout.max_staleness`` 0, 1 and 2 on the same work.

One ``vllm serve`` pinned to some cores, the trainer to the others (default: core 0 and core 1 of a 2-core
machine), both started by ``groupwise launch --servers 1`` from one config, so the only difference between the
runs is k. Completion lengths spread tenfold inside a batch, as ``bench_vs_trl.py --varlen`` draws them (a
seeded log-normal, median a fifth of max new tokens, sigma 1, clamped to [4, max]): the server forces them with
a bench-only vLLM logits processor (``scripts/bench_lengths.py``, loaded as a plugin from a directory only this
bench puts on the server's path), each row's length drawn from the row's own seed, so every run generates the
same lengths. The learner does its full forward, backward, optimizer step and weight push every step on those
tokens; the 0/1 reward of a random model is 0, so its weights stay where they are and every run does the same
work. Step times are means over the steps after the first ``--warmup`` (engine and allocator warm-up).

Before the runs, a calibration server (the same command and cores, started the same way) measures the server's
tokens per second with a full batch (``--prompts`` requests of ``--group`` samples, exactly ``--new`` tokens
each, EOS ignored) and checks that the processor gives a seeded request its drawn lengths. The last three lines:

    server occupancy: NN% (k=2)          tokens generated per second of the run / the full-batch rate
    overlap: N.NNx of the slower side (k=2)   step time / max(full-batch generation time of one batch at its
                                              real token count, update + push)
    ratio async/sync: 0.NNx step time    the better of k=1 and k=2 against k=0

Targets (issue 32): occupancy >= 85%, overlap <= 1.10x, ratio <= 0.60x. A k the trainer refuses (today's
trainer refuses k=2 while its push waits for every batch in flight) is shown as refused, and the occupancy and overlap
lines then name the largest k that ran. The table's ``gap`` (``logprob_gap``) is not the fp32 floor here: the
server's log-prob of a forced EOS is 0, not the model's (``scripts/bench_lengths.py``).

    python scripts/bench_async.py                        # tiny random Qwen2 (hidden 256, 4 layers), 8 steps each
    python scripts/bench_async.py --steps 12 --new 256   # longer completions: generation dominates more
    python scripts/bench_async.py --ks 0 1 2 3            # k = 3 as well (the lines then name k=3)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("time/generate", "time/rollout", "time/update", "time/settle", "time/push", "time/reward", "time/step")
KS = (0, 1, 2)
CHECK_SEED = 12345  # the seed of the calibration's forced-length check request


def occupancy(tokens_per_step: float, step_s: float, full_tokens_per_s: float) -> float:
    """Share of the server's full-batch throughput the run used: (tokens / step time) / full-batch rate."""
    return tokens_per_step / step_s / full_tokens_per_s


def overlap(step_s: float, tokens_per_step: float, full_tokens_per_s: float, update_push_s: float) -> float:
    """Step time over the slower side: generating one batch's tokens at the full-batch rate, or update + push."""
    return step_s / max(tokens_per_step / full_tokens_per_s, update_push_s)


def async_ratio(step_s: dict[int, float]) -> float:
    """The better asynchronous step time (k >= 1) over the synchronous one (k = 0)."""
    return min(v for k, v in step_s.items() if k > 0) / step_s[0]


def overrides(model: Path, run_dir: Path, args, k: int) -> list[str]:
    """The trainer's config for one run; the calibration server is started from the same."""
    return [
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
        "reward.name=binary",  # 0 on a random model: the weights, and so the samples, stay put in every run
        "guard.collapse_action=off",
        "eval.every=0",
        "log.tensorboard=false",
        "checkpoint.every=0",
        f"steps={args.steps}",
        f"rollout.max_staleness={k}",
    ]


def post(url: str, body: dict, timeout: float = 1800) -> dict:
    req = urllib.request.Request(
        f"{url}/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def calibrate(model: Path, work: Path, args) -> float:
    """The server's generated tokens per second with a full batch (best of two passes), after one seeded
    request that checks the drawn lengths (and warms the server up). Same command and cores as ``launch``."""
    from transformers import AutoTokenizer

    from app.launch import start_servers, stop_servers
    from scripts.bench_lengths import target_length
    from trainer.config import load_config

    cfg = load_config(None, [*overrides(model, work / "calibration", args, 0), "rollout.backend=server"])
    tok = AutoTokenizer.from_pretrained(model)
    prompts = [tok(f"{7 * i + 12}+{3 * i + 30}=", add_special_tokens=False)["input_ids"] for i in range(args.prompts)]
    common = {"model": str(model), "temperature": 1.0, "top_p": 1.0, "return_token_ids": True}
    full = {**common, "n": args.group, "max_tokens": args.new, "ignore_eos": True}
    servers = start_servers(cfg, str(model), 1, host="127.0.0.1", port=args.port, cpus=args.server_cpus)
    try:
        url = servers[0].url
        check = post(url, {**common, "prompt": prompts[0], "n": args.group, "max_tokens": args.new, "seed": CHECK_SEED})
        got = [len(c["token_ids"]) for c in sorted(check["choices"], key=lambda c: c["index"])]
        want = [target_length(CHECK_SEED + i, args.new) for i in range(args.group)]
        if got != want:
            raise SystemExit(f"the forced-length processor did not act: lengths {got}, drawn {want}")
        rates = []
        with ThreadPoolExecutor(args.prompts) as pool:
            for _ in range(2):
                t0 = time.perf_counter()
                outs = list(pool.map(lambda p: post(url, {**full, "prompt": p}), prompts))
                tokens = sum(len(c["token_ids"]) for o in outs for c in o["choices"])
                rates.append(tokens / (time.perf_counter() - t0))
    finally:
        stop_servers(servers)
    return max(rates)


def run(k: int, model: Path, work: Path, args) -> dict[str, float] | str:
    """Means of one run's step metrics, or why the trainer refused this k (its error line)."""
    run_dir = work / f"k{k}"
    cmd = [sys.executable, "-m", "app.cli", "launch", "--servers", "1", "--port", str(args.port)]
    cmd += ["--server-cpus", args.server_cpus, "--trainer-cpus", args.trainer_cpus]
    cmd += overrides(model, run_dir, args, k)
    log = work / f"k{k}.log"
    print(f"k={k}: running (log {log})", flush=True)
    with log.open("w") as f:
        code = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    text = log.read_text()
    if code == 2 and "groupwise: error:" in text:  # a config the trainer refuses, before any server starts
        return text[text.index("groupwise: error:") :].splitlines()[0]
    if code != 0:
        raise SystemExit(f"k={k}: launch exited with {code}; its output ends:\n{text[-3000:]}")
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()][args.warmup :]
    out = {p: mean(r[p] for r in rows) for p in PARTS}
    out["tokens"] = mean(r["length/mean"] for r in rows) * args.prompts * args.group
    out["staleness"] = mean(r["staleness"] for r in rows)
    out["logprob_gap"] = mean(r["logprob_gap"] for r in rows)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the means")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--new", type=int, default=128, help="max new tokens per completion (median length: a fifth)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--trainer-cpus", default="1")
    p.add_argument("--port", type=int, default=8190)
    p.add_argument("--ks", type=int, nargs="+", default=list(KS), help="the max_staleness values run (0 first)")
    args = p.parse_args()
    if 0 not in args.ks or not any(k > 0 for k in args.ks):
        p.error(f"--ks {' '.join(map(str, args.ks))}: give 0 and at least one k >= 1 to compare them")
    if args.new <= 16:
        p.error(f"--new {args.new}: give more than 16 (the start-up probe's request length must differ)")
    sys.path.insert(0, str(ROOT))
    from scripts.bench_lengths import LENGTHS_ENV, write_plugin
    from toylab.models import save_tiny

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = save_tiny(work / "model", seed=0, hidden=args.hidden, layers=args.layers, heads=args.hidden // 64)
        plugin = write_plugin(work / "plugin")  # on the servers' path only through this environment
        os.environ.update(
            VLLM_CPU_KVCACHE_SPACE="1",
            PYTHONPATH=os.pathsep.join([str(ROOT), str(plugin)]),
            **{LENGTHS_ENV: str(args.new)},
        )
        full_rate = calibrate(model, work, args)
        print(f"calibration: drawn lengths forced; full-batch server rate {full_rate:.0f} tokens/s", flush=True)
        results = {k: run(k, model, work, args) for k in args.ks}
    print(
        f"\n{args.prompts} prompts x {args.group} samples, lengths drawn in [4, {args.new}] (median {args.new / 5:g}),"
        f" hidden {args.hidden} x {args.layers} layers; server on CPUs {args.server_cpus}, trainer on CPUs "
        f"{args.trainer_cpus}; means over steps {args.warmup}..{args.steps - 1}; full-batch server rate "
        f"{full_rate:.0f} tokens/s"
    )
    print(
        "| k | step s | generation s | rollout wait s | update s | settle s | push s | tokens/step | "
        "occupancy | staleness | gap |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k, r in results.items():
        if isinstance(r, str):
            print(f"| {k} | refused: {r} |")
            continue
        occ = occupancy(r["tokens"], r["time/step"], full_rate)
        print(
            f"| {k} | {r['time/step']:.2f} | {r['time/generate']:.2f} | {r['time/rollout']:.2f} | "
            f"{r['time/update']:.2f} | {r['time/settle']:.2f} | {r['time/push']:.2f} | {r['tokens']:.0f} | "
            f"{occ:.0%} | {r['staleness']:.1f} | {r['logprob_gap']:.2g} |"
        )
    ran = {k: r for k, r in results.items() if not isinstance(r, str)}
    if 0 not in ran or len(ran) < 2:
        raise SystemExit("k=0 and at least one k >= 1 must run to compare them")
    sync = ran[0]
    if sync["time/generate"] <= sync["time/update"] + sync["time/push"]:
        print("note: generation was not longer than update + push at k=0; raise --new for a generation-bound run")
    top = max(ran)  # the largest k that ran (k=2 by default), named in the lines
    r = ran[top]
    print(f"server occupancy: {occupancy(r['tokens'], r['time/step'], full_rate):.0%} (k={top})")
    up = r["time/update"] + r["time/push"]
    print(f"overlap: {overlap(r['time/step'], r['tokens'], full_rate, up):.2f}x of the slower side (k={top})")
    print(f"ratio async/sync: {async_ratio({k: r['time/step'] for k, r in ran.items()}):.2f}x step time")


if __name__ == "__main__":
    main()
