"""``make check-gpu``: does groupwise's GPU stack work on this node, and how fast is it?

    python scripts/check_gpu.py                 # every step, one report (table + JSON), about 5-8 min on one H200
    python scripts/check_gpu.py --dry-run       # the numbered steps and their commands; runs nothing (any machine)
    python scripts/check_gpu.py --only torch nccl train --deadline 300

Steps, each in its own process (a hang or a CUDA crash in one is reported and the next one runs):

1. the stack: torch's CUDA build, devices, free memory and a bf16 matmul probe; vLLM; DeepSpeed; an NCCL
   all-reduce over every GPU of the node (one process per GPU);
2. the GPU-marked tests (``tests/test_gpu.py``): learner side (ZeRO-2 and ZeRO-3 steps in bf16, chunked
   log-probs in bf16 at the real vocabulary) and vLLM side (bf16 engine with sleep mode, weight-sync round
   trip, the server backend's NCCL push once it exists), as two pytest processes;
3. a short ``groupwise train`` of a Qwen2.5-0.5B-shaped random model at the real vocabulary (151,936) through
   the colocated vLLM engine, bf16, ZeRO-3, gradient checkpointing (``configs/base_gpu.yaml``'s setting);
4. one report: pass/fail per check with the reason, learner tokens/s and MFU, vLLM tokens/s, weight-sync
   seconds, peak GPU memory; printed, and written to ``--out`` (default ``runs/check-gpu/report.json``).

Simplifications, stated: MFU counts 6 x parameters x completion tokens per second of learner time (prompt
tokens, attention FLOPs and the recomputation of gradient checkpointing and of the chunked LM head are not
counted, so it is a lower bound) against a dense-bf16 peak looked up by device name (``PEAK_TFLOPS``; or
``--peak-tflops``; an unknown device falls back to the measured matmul probe, and the report says which).
Peak GPU memory is what ``nvidia-smi`` shows on the busiest GPU while a check runs (all processes on it).
Weight-sync seconds are derived from the run's timers: ``time/learner`` minus the learner's own
(``time/fwd_bwd`` + ``time/optimizer`` + ``time/old_ref_logprobs``), i.e. wake-up, reload, prefix-cache
reset and sleep.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
PINNED = {"torch": "2.13.0", "vllm": "0.32.0"}  # pyproject.toml's `vllm` extra
REAL_VOCAB = 151_936
# Qwen2.5-0.5B's shape (its config.json): 494M parameters with the tied 151,936 x 896 embedding
QWEN05B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    tie_word_embeddings=True,
)
# Dense bf16 tensor-core peak in TFLOP/s by device-name substring, first match wins (vendor data sheets).
PEAK_TFLOPS = [
    ("GB200", 2500.0),
    ("B200", 2250.0),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H800", 989.4),
    ("H20", 148.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
]
PROMPTS_PER_GPU, GROUP, NEW_TOKENS = 8, 8, 512  # the training run's work per GPU and step
TRAIN_LOGPROB_GAP = 0.1  # bf16 sampler vs learner, mean |delta log p| per token; a broken sync is far above


@dataclass
class Check:
    """One step of the report: a command run in its own process group, with a time limit."""

    name: str
    title: str
    argv: list[str]
    timeout: float  # seconds, capped by what is left of the global deadline
    reserve: float = 0.0  # seconds later checks keep for themselves out of the global deadline
    needs: tuple[str, ...] = ()  # checks that must have passed first
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""  # shown by --dry-run under the command
    clean: tuple[Path, ...] = ()  # outputs of an earlier report, removed before the check runs
    post: Callable[[dict, dict], dict] | None = None  # (this result, all results) -> result, in this process


# ----------------------------------------------------------------------------- the plan


def train_overrides(model: Path, run: Path, steps: int, gpus: int, zero: int) -> list[str]:
    """A short run in base_gpu.yaml's setting (bf16, ZeRO-3 + gradient checkpointing, colocated vLLM with
    sleep mode), sized to take minutes: 8 prompts x 8 samples x 512 new tokens (random weights: EOS is rare) per GPU."""
    return [
        f"model.path={model}",
        f"run_dir={run}",
        "device=cuda",
        f"steps={steps}",
        "seed=0",
        "model.dtype=bf16",
        "model.gradient_checkpointing=true",
        "data.source=arith",
        f"data.prompts_per_step={PROMPTS_PER_GPU * gpus}",
        "rollout.backend=vllm",
        f"rollout.group_size={GROUP}",
        f"rollout.max_new_tokens={NEW_TOKENS}",
        "rollout.vllm.gpu_memory_utilization=0.35",
        "rollout.vllm.sleep=true",
        "reward.name=binary",
        "optim.lr=1e-6",
        "optim.micro_batch_size=16",
        f"deepspeed.zero_stage={zero}",
        "eval.every=0",
        "log.tensorboard=false",
        "checkpoint.every=0",
        "checkpoint.keep=1",
        "guard.collapse_action=off",
    ]


def plan(args) -> list[Check]:
    work = Path(args.work)
    py = sys.executable

    def worker(name: str, *extra: str) -> list[str]:
        return [py, str(SCRIPT), "--worker", name, "--result", str(work / f"{name}.json"), *extra]

    def pytest(marker: str, name: str) -> list[str]:
        junit = work / f"{name}.xml"
        argv = [py, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-m", marker, "tests/test_gpu.py"]
        return [*argv, f"--junitxml={junit}"]

    model, run = work / "qwen2.5-0.5b-shaped", work / "train"
    if args.train_gpus > 1:
        launcher = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.train_gpus)]
        launcher += ["-m", "app.cli", "train"]
    else:
        launcher = [py, "-m", "app.cli", "train"]  # what the `groupwise train` console script runs
    train = launcher + train_overrides(model, run, args.train_steps, args.train_gpus, args.train_zero)
    learner_xml, vllm_xml = work / "tests-learner.xml", work / "tests-vllm.xml"
    return [
        Check("torch", "torch CUDA build, devices, free memory, bf16 matmul probe", worker("torch"), 90, 20),
        Check("vllm", "vLLM imports (CUDA build, pinned version)", worker("vllm"), 120, 20),
        Check("deepspeed", "DeepSpeed imports, CUDA accelerator, bf16", worker("deepspeed"), 90, 20),
        Check("nccl", "NCCL all-reduce over every GPU (one process each)", worker("nccl"), 120, 20),
        Check(
            "tests-learner",
            "GPU tests, learner: ZeRO-2 and ZeRO-3 steps, chunked log-probs (bf16)",
            pytest("gpu and not vllm", "tests-learner"),
            180,
            60,
            clean=(learner_xml,),
            post=lambda res, results: pytest_result(res, learner_xml),
        ),
        Check(
            "tests-vllm",
            "GPU tests, vLLM: bf16 engine + sleep mode, weight-sync round trip, server NCCL push",
            pytest("gpu and vllm", "tests-vllm"),
            240,
            60,
            clean=(vllm_xml,),
            post=lambda res, results: pytest_result(res, vllm_xml),
        ),
        Check(
            "build-model",
            f"build a Qwen2.5-0.5B-shaped random model at the real vocabulary ({REAL_VOCAB:,})",
            worker("build-model", "--model", str(model)),
            120,
            30,
        ),
        Check(
            "train",
            f"groupwise train, {args.train_steps} steps: colocated vLLM (sleep mode), bf16, ZeRO-{args.train_zero}",
            train,
            360,
            150,
            needs=("build-model",),
            note=f"(python -m app.cli is `groupwise`); figures from {run}/metrics.jsonl, first step = warm-up",
            clean=(run,),
            post=lambda res, results: train_result(res, results, args),
        ),
    ]


# ----------------------------------------------------------------------------- running one check


class MemorySampler:
    """Peak ``memory.used`` (MiB, the busiest GPU) from nvidia-smi, polled in a thread while a check runs."""

    def __init__(self, period: float = 0.5):
        self.period, self.peak, self.error = period, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> float | None:
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            self.error = f"nvidia-smi: {e}"
            return None
        values = [float(x) for x in out.stdout.split() if x.replace(".", "", 1).isdigit()]
        return max(values) if values else None

    def _run(self) -> None:
        while not self._stop.is_set():
            v = self.sample()
            if v is None and self.error:
                return
            if v is not None:
                self.peak = v if self.peak is None else max(self.peak, v)
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=15)

    @property
    def peak_gib(self) -> float | None:
        return None if self.peak is None else round(self.peak / 1024, 2)


def failure_reason(log: str, rc: int | None) -> str:
    """One line for a failed command: the last error-looking line of its output, or how it died."""
    if rc is not None and rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    lines = [x.strip() for x in log.splitlines() if x.strip()]
    for line in reversed(lines):
        if any(k in line for k in ("Error", "error:", "Exception", "FAILED", "refused", "No such")):
            return line[:300]
    return (lines[-1][:300] if lines else "no output") + f" (exit code {rc})"


def run_command(argv: list[str], timeout: float, log_path: Path, env: dict[str, str]) -> tuple[int | None, bool]:
    """Run ``argv`` in its own session (so a timeout kills its children too), output to ``log_path``.
    Returns (exit code or None, timed out)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            return None, True


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment, minus any torchrun rendezvous (each check is its own world), plus the repo on the path."""
    skip = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in skip}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def run_check(check: Check, budget: float, work: Path, results: dict[str, dict]) -> dict:
    """Run one check within ``budget`` seconds; never raises. The result has status pass / fail / skip."""
    res = {"name": check.name, "title": check.title, "status": "fail", "reason": "", "seconds": 0.0}
    res.update(figures={}, details={}, peak_gpu_mem_gib=None, log=str(work / "logs" / f"{check.name}.log"))
    missing = [n for n in check.needs if results.get(n, {}).get("status") != "pass"]
    if missing:
        return {**res, "status": "skip", "reason": f"needs {', '.join(missing)}, which did not pass"}
    if budget < 5:
        return {**res, "status": "skip", "reason": "not run: the global deadline (--deadline) was reached"}
    limit = min(check.timeout, budget)
    result_file = work / f"{check.name}.json"
    for stale in (result_file, *check.clean):  # nothing from an earlier report may pass for this one's
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with MemorySampler() as mem:
        rc, timed_out = run_command(check.argv, limit, Path(res["log"]), child_env(check.env))
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["peak_gpu_mem_gib"] = mem.peak_gib
    log = Path(res["log"]).read_text(errors="replace")
    verdict = None
    if result_file.exists():  # a worker's own verdict, with its figures
        try:
            verdict = json.loads(result_file.read_text())
        except json.JSONDecodeError as e:
            res["reason"] = f"unreadable result file {result_file}: {e}"
    if verdict:
        res.update(verdict)
    if timed_out:
        res.update(status="fail", reason=f"timed out after {limit:.0f} s (log: {res['log']})")
    elif rc != 0 and res["status"] != "fail":  # a crash after the verdict, or no verdict at all
        res.update(status="fail", reason=failure_reason(log, rc))
    elif rc != 0 and not res["reason"]:
        res["reason"] = failure_reason(log, rc)
    elif rc == 0 and verdict is None and not res["reason"]:
        res["status"] = "pass"
    if check.post is not None:
        try:
            res = check.post(res, results)
        except Exception as e:  # a report must come out whatever the parsing met
            res.update(status="fail", reason=f"{check.name}: could not read its output: {type(e).__name__}: {e}")
    return res


def budgets(checks: list[Check], deadline: float) -> Callable[[int, float], float]:
    """Seconds check ``i`` may use when ``elapsed`` seconds are gone: what is left minus what the later checks
    reserve, so a slow early check cannot starve the training run of its minimum."""

    def budget(i: int, elapsed: float) -> float:
        later = sum(c.reserve for c in checks[i + 1 :])
        return max(0.0, deadline - elapsed - later)

    return budget


# ----------------------------------------------------------------------------- reading outputs


def parse_junit(path: Path) -> list[dict]:
    """Per-test outcome and reason from pytest's JUnit XML."""
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "?")
        status, reason = "pass", ""
        for tag, st in (("failure", "fail"), ("error", "fail"), ("skipped", "skip")):
            el = case.find(tag)
            if el is not None:
                text_lines = (el.text or "").strip().splitlines()
                status, reason = st, el.get("message") or (text_lines[-1] if text_lines else "")
                break
        out.append({"test": name, "status": status, "reason": reason[:300], "seconds": float(case.get("time", 0))})
    return out


def parse_verbose(log: str) -> list[dict]:
    """Per-test outcome from ``pytest -v`` output, for a run killed before it wrote its XML: the test that was
    still running is the one named last without an outcome."""
    out, running = [], None
    for line in log.splitlines():
        if "tests/test_gpu.py::" not in line or line.startswith(("FAILED", "ERROR", "SKIPPED")):
            continue
        node = line.split()[0].split("::", 1)[1]
        for word, st in (("PASSED", "pass"), ("FAILED", "fail"), ("ERROR", "fail"), ("SKIPPED", "skip")):
            if f" {word}" in line:
                out.append({"test": node, "status": st, "reason": "", "seconds": 0.0})
                running = None
                break
        else:
            running = node
    if running is not None:
        out.append({"test": running, "status": "fail", "reason": "still running when the check timed out"})
    return out


def pytest_result(res: dict, xml: Path) -> dict:
    """A pytest group passes when at least one test ran and passed and none failed (all-skipped on a GPU node
    means something is missing: the skip reasons say what)."""
    log = Path(res["log"]).read_text(errors="replace") if Path(res["log"]).exists() else ""
    tests = parse_junit(xml) if xml.exists() and "timed out" not in res["reason"] else parse_verbose(log)
    res["tests"] = tests
    counts = {s: sum(t["status"] == s for t in tests) for s in ("pass", "fail", "skip")}
    res["details"] = counts
    if "timed out" in res["reason"]:
        return res
    if counts["fail"]:
        first = next(t for t in tests if t["status"] == "fail")
        res.update(status="fail", reason=f"{counts['fail']} failed; first: {first['test']}: {first['reason']}")
    elif counts["pass"] == 0:
        why = next((t["reason"] for t in tests if t["reason"]), res["reason"] or "no test ran")
        res.update(status="fail", reason=f"no test passed ({counts['skip']} skipped): {why}")
    elif res["status"] != "pass" and res["reason"]:
        pass  # pytest itself failed (collection error, crash): keep its reason
    else:
        res.update(status="pass", reason=f"{counts['pass']} passed, {counts['skip']} skipped")
    return res


def peak_tflops(device_name: str, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, f"--peak-tflops {override:g}"
    for key, value in PEAK_TFLOPS:
        if key in device_name:
            return value, f"data-sheet dense bf16 peak of {key}: {value:g} TFLOP/s"
    return None, f"no peak known for {device_name!r} (pass --peak-tflops)"


def train_result(res: dict, results: dict, args) -> dict:
    """Figures of the training run from its metrics.jsonl; the first step (warm-up) is left out of medians."""
    metrics = Path(args.work) / "train" / "metrics.jsonl"
    if not metrics.exists():
        res["reason"] = res["reason"] or "no metrics.jsonl was written"
        res["status"] = "fail"
        return res
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    res["details"] = {"steps_logged": len(rows), "metrics": str(metrics)}
    if not rows:
        res.update(status="fail", reason=res["reason"] or "metrics.jsonl is empty")
        return res
    timed = rows[1:] or rows

    def med(key: str) -> float:
        return statistics.median(float(r.get(key) or 0.0) for r in timed)

    completions = PROMPTS_PER_GPU * args.train_gpus * GROUP  # prompts_per_step x group_size
    learner_s = med("time/fwd_bwd") + med("time/optimizer") + med("time/old_ref_logprobs")
    tokens = med("length/mean") * completions
    model = results.get("build-model", {}).get("details", {})
    params, device = model.get("params"), model.get("device", "")
    peak, source = peak_tflops(device, args.peak_tflops)
    probe = results.get("torch", {}).get("figures", {}).get("matmul_tflops")
    if peak is None and probe:
        peak, source = probe, f"measured bf16 matmul probe: {probe:g} TFLOP/s (device not in the table)"
    tok_s = tokens / learner_s if learner_s > 0 else None
    mfu = 6 * params * tok_s / (peak * 1e12 * args.train_gpus) if params and tok_s and peak else None
    res["figures"].update(
        learner_tokens_per_s=round(tok_s, 1) if tok_s else None,
        mfu=round(mfu, 4) if mfu is not None else None,
        mfu_peak=source,
        vllm_tokens_per_s=round(med("tokens_per_s"), 1),
        weight_sync_s=round(med("time/learner") - learner_s, 3),
        step_s=round(med("time/step"), 2),
        rollout_s=round(med("time/rollout"), 2),
        learner_s=round(learner_s, 2),
        completion_tokens_per_step=round(tokens),
        logprob_gap=round(med("logprob_gap"), 5),
    )
    problems = []
    if len(rows) < args.train_steps:
        problems.append(f"{len(rows)} of {args.train_steps} steps logged")
    if any(not math.isfinite(float(r.get("loss", float("nan")))) for r in rows):
        problems.append("a non-finite loss")
    if any(r.get("skipped_updates", 0) for r in rows):
        problems.append("skipped (non-finite) updates")
    if any(r.get("abnormal_finishes", 0) for r in rows):
        problems.append("vLLM aborted samples (abnormal_finishes > 0)")
    worst = max(float(r.get("logprob_gap", 0.0)) for r in rows)
    if worst > TRAIN_LOGPROB_GAP:
        problems.append(f"logprob_gap {worst:.3g} > {TRAIN_LOGPROB_GAP}: the sampler and the learner disagree")
    if problems:
        res.update(status="fail", reason="; ".join(problems) + (f" ({res['reason']})" if res["reason"] else ""))
    elif res["status"] == "pass":
        res["reason"] = f"{len(rows)} steps, logprob_gap {res['figures']['logprob_gap']:.2g}"
    if not args.keep_work:  # the DeepSpeed checkpoint of a 0.5B model is ~6 GB of optimizer state
        shutil.rmtree(Path(args.work) / "train" / "checkpoints", ignore_errors=True)
    return res


# ----------------------------------------------------------------------------- the report


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


def write_result(path: str, status: str, reason: str = "", figures=None, details=None) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    data = {"status": status, "reason": reason, "figures": figures or {}, "details": details or {}}
    Path(path).write_text(json.dumps(data, indent=1))


def worker_torch(args) -> None:
    import torch

    d = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "python": platform.python_version()}
    problems = []
    if torch.version.cuda is None:
        return write_result(args.result, "fail", f"torch {torch.__version__} is a CPU build (make setup-gpu)", {}, d)
    nccl = torch.cuda.nccl.version() if torch.cuda.is_available() else None
    d["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl
    devices = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        devices.append(
            {
                "index": i,
                "name": p.name,
                "capability": f"{p.major}.{p.minor}",
                "total_gib": round(total / 2**30, 1),
                "free_gib": round(free / 2**30, 1),
            }
        )
        if free < 0.8 * total:
            problems.append(f"GPU {i} has {free / 2**30:.1f} of {total / 2**30:.1f} GiB free (other processes?)")
    d["devices"] = devices
    if not devices:
        return write_result(args.result, "fail", "torch sees no CUDA device", {}, d)
    if not torch.cuda.is_bf16_supported():
        problems.append(f"{devices[0]['name']} has no bf16 support")
    if torch.__version__.split("+")[0] != PINNED["torch"]:
        d["note"] = f"torch {torch.__version__}; groupwise pins {PINNED['torch']} (the vllm 0.32.0 build's)"
    n, iters = 8192, 20
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        a @ b
    end.record()
    torch.cuda.synchronize()
    tflops = 2 * n**3 * iters / (start.elapsed_time(end) / 1e3) / 1e12
    figures = {"matmul_tflops": round(tflops, 1)}
    names = ", ".join(f"{x['name']} ({x['free_gib']}/{x['total_gib']} GiB free)" for x in devices)
    reason = "; ".join(problems) or f"torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL {d['nccl']}; {names}"
    write_result(args.result, "fail" if problems else "pass", reason, figures, d)


def worker_vllm(args) -> None:
    t0 = time.perf_counter()
    try:
        import vllm
        from vllm.platforms import current_platform
    except Exception as e:
        return write_result(args.result, "fail", f"import vllm: {type(e).__name__}: {e} (make setup-gpu)")
    d = {"vllm": vllm.__version__, "platform": type(current_platform).__name__, "import_s": time.perf_counter() - t0}
    if not current_platform.is_cuda():
        return write_result(
            args.result, "fail", f"vllm {vllm.__version__} is not the CUDA build ({d['platform']})", {}, d
        )
    if vllm.__version__ != PINNED["vllm"]:
        why = f"vllm {vllm.__version__}; groupwise pins {PINNED['vllm']} (make setup-gpu)"
        return write_result(args.result, "fail", why, {}, d)
    write_result(args.result, "pass", f"vllm {vllm.__version__}, {d['platform']}", {}, d)


def worker_deepspeed(args) -> None:
    try:
        import deepspeed
        from deepspeed.accelerator import get_accelerator
    except Exception as e:
        return write_result(args.result, "fail", f"import deepspeed: {type(e).__name__}: {e}")
    acc = get_accelerator()
    d = {"deepspeed": deepspeed.__version__, "accelerator": acc.device_name(), "bf16": acc.is_bf16_supported()}
    if acc.device_name() != "cuda":
        why = f"DeepSpeed {deepspeed.__version__} picked the {acc.device_name()!r} accelerator, not cuda"
        return write_result(args.result, "fail", why, {}, d)
    if not acc.is_bf16_supported():
        return write_result(args.result, "fail", "DeepSpeed reports no bf16 on this accelerator", {}, d)
    write_result(args.result, "pass", f"deepspeed {deepspeed.__version__}, accelerator cuda, bf16", {}, d)


def _nccl_rank(rank: int, world: int, port: int, result: str) -> None:
    """One rank of the NCCL check: a correctness all-reduce, then 256 MiB all-reduces timed."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank)
    dist.init_process_group(
        "nccl",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
        device_id=dev,
    )
    x = torch.full((1024,), float(rank + 1), device=dev)
    dist.all_reduce(x)
    expect = world * (world + 1) / 2
    correct = bool(torch.all(x == expect).item())
    size = 256 << 20
    buf = torch.ones(size // 2, dtype=torch.bfloat16, device=dev)
    for _ in range(3):
        dist.all_reduce(buf)
    torch.cuda.synchronize()
    iters = 10
    t0 = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(buf)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / iters
    busbw = size * 2 * (world - 1) / world / seconds / 1e9 if world > 1 else None
    if rank == 0:
        figures = {"nccl_busbw_gbps": round(busbw, 1) if busbw else None}
        details = {"world": world, "allreduce_256mib_ms": round(seconds * 1e3, 3), "nccl": torch.cuda.nccl.version()}
        if not correct:
            write_result(result, "fail", f"all-reduce over {world} GPUs gave {x[0].item()}, expected {expect}")
        else:
            one = " (one GPU: no inter-GPU traffic)" if world == 1 else f", bus bandwidth {busbw:.0f} GB/s"
            write_result(result, "pass", f"all-reduce over {world} GPU(s) correct{one}", figures, details)
    dist.destroy_process_group()


def worker_nccl(args) -> None:
    import torch
    import torch.multiprocessing as mp

    world = torch.cuda.device_count()
    if world == 0:
        return write_result(args.result, "fail", "no CUDA device")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_nccl_rank, args=(world, port, args.result), nprocs=world, join=True)


def real_vocab_tokenizer(vocab: int = REAL_VOCAB):
    """The toy lab's byte-level tokenizer (256 bytes + ChatML specials) padded with filler tokens to ``vocab``
    entries, so every id a random model at that vocabulary can emit decodes (vLLM detokenizes each sampled id;
    an id past the tokenizer breaks it). Prompts stay byte-level."""
    from toylab.models import build_tokenizer

    return build_tokenizer(vocab)


def qwen05b_config(tok):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=REAL_VOCAB,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        **QWEN05B,
    )


def worker_build_model(args) -> None:
    """Random-init Qwen2.5-0.5B shape in bf16, initialized on the GPU (seconds, not a minute on the CPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    from toylab.models import publish

    t0 = time.perf_counter()
    tok = real_vocab_tokenizer()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(qwen05b_config(tok), dtype=torch.bfloat16)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    params = sum(p.numel() for p in model.parameters())
    out = Path(args.model)
    if out.exists():  # a model from an earlier check: rebuild, the shape may have changed
        shutil.rmtree(out)
    publish(out, tok, model.cpu())
    details = {"params": params, "path": str(out), "device": torch.cuda.get_device_name(0), "vocab": REAL_VOCAB}
    why = f"{params / 1e6:.0f}M parameters, vocabulary {len(tok):,}, in {time.perf_counter() - t0:.0f} s"
    write_result(args.result, "pass", why, {}, details)


WORKERS = {
    "torch": worker_torch,
    "vllm": worker_vllm,
    "deepspeed": worker_deepspeed,
    "nccl": worker_nccl,
    "build-model": worker_build_model,
}


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(prog="check_gpu.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="list the numbered steps and their commands; run nothing")
    p.add_argument("--out", default=str(ROOT / "runs" / "check-gpu" / "report.json"), help="the JSON report")
    p.add_argument("--work", default=None, help="logs, models, the run (default: beside --out, work/)")
    p.add_argument("--deadline", type=float, default=480.0, help="global time limit in seconds (default 8 min)")
    p.add_argument("--only", nargs="+", default=None, help="run only these checks (names from --dry-run)")
    p.add_argument("--skip", nargs="+", default=[], help="leave these checks out")
    p.add_argument("--train-steps", type=int, default=5, help="steps of the training run (the first is warm-up)")
    p.add_argument("--train-gpus", type=int, default=1, help="ranks of the training run (torchrun when > 1)")
    p.add_argument("--train-zero", type=int, default=3, choices=[2, 3], help="ZeRO stage of the training run")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak per GPU for the MFU")
    p.add_argument("--keep-work", action="store_true", help="keep the run's checkpoint (GBs) after the report")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.work = args.work or str(Path(args.out).resolve().parent / "work")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        WORKERS[args.worker](args)
        return 0
    checks = plan(args)
    names = [c.name for c in checks]
    unknown = [n for n in (args.only or []) + args.skip if n not in names]
    if unknown:
        print(f"check-gpu: unknown check(s) {unknown}; choose from {names}", file=sys.stderr)
        return 2
    wanted = set(names if args.only is None else args.only)
    wanted |= {n for c in checks if c.name in wanted for n in c.needs}  # --only train builds its model too
    checks = [c for c in checks if c.name in wanted and c.name not in args.skip]
    if args.dry_run:
        print(dry_run(checks, args))
        return 0
    why = refusal()
    if why:
        print(why, file=sys.stderr)
        return 2
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "host": socket.gethostname(), "deadline_s": args.deadline}
    meta.update(out=str(args.out), work=str(work), argv=sys.argv[1:])
    print(f"check-gpu: {len(checks)} checks, global limit {args.deadline:.0f} s; logs in {work}/logs/", flush=True)
    budget = budgets(checks, args.deadline)
    t0 = time.perf_counter()
    results: dict[str, dict] = {}
    for i, check in enumerate(checks):
        print(f"[{time.perf_counter() - t0:5.0f} s] {i + 1}/{len(checks)} {check.name}: {check.title}", flush=True)
        res = run_check(check, budget(i, time.perf_counter() - t0), work, results)
        results[check.name] = res
        print(f"         {res['status'].upper()} ({res['seconds']:.0f} s) {res['reason']}", flush=True)
    report = summarize(list(results.values()), {**meta, "total_s": round(time.perf_counter() - t0, 1)})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(render(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
