"""Reading the checks' outputs: pytest's JUnit XML or verbose log, the training run's metrics and its figures."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import xml.etree.ElementTree as ET
from pathlib import Path

from app.check_gpu import GROUP, PROMPTS_PER_GPU

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
TRAIN_LOGPROB_GAP = 0.1  # bf16 sampler vs learner, mean |delta log p| per token; a broken sync is far above


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
        if "tests/gpu/test_gpu.py::" not in line or line.startswith(("FAILED", "ERROR", "SKIPPED")):
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
    problems = train_problems(rows, args.train_steps)
    if problems:
        res.update(status="fail", reason="; ".join(problems) + (f" ({res['reason']})" if res["reason"] else ""))
    elif res["status"] == "pass":
        res["reason"] = f"{len(rows)} steps, logprob_gap {res['figures']['logprob_gap']:.2g}"
    if not args.keep_work:  # the DeepSpeed checkpoint of a 0.5B model is ~6 GB of optimizer state
        shutil.rmtree(Path(args.work) / "train" / "checkpoints", ignore_errors=True)
    return res


def train_problems(rows: list[dict], steps: int) -> list[str]:
    """What makes the training run fail although it exited cleanly: steps missing, non-finite values, aborted
    samples, a sampler that disagrees with the learner."""
    problems = []
    if len(rows) < steps:
        problems.append(f"{len(rows)} of {steps} steps logged")
    if any(not math.isfinite(float(r.get("loss", float("nan")))) for r in rows):
        problems.append("a non-finite loss")
    if any(r.get("skipped_updates", 0) for r in rows):
        problems.append("skipped (non-finite) updates")
    if any(r.get("abnormal_finishes", 0) for r in rows):
        problems.append("vLLM aborted samples (abnormal_finishes > 0)")
    worst = max(float(r.get("logprob_gap", 0.0)) for r in rows)
    if worst > TRAIN_LOGPROB_GAP:
        problems.append(f"logprob_gap {worst:.3g} > {TRAIN_LOGPROB_GAP}: the sampler and the learner disagree")
    return problems


# ----------------------------------------------------------------------------- the report
