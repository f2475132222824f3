"""``groupwise check-gpu`` (``app/check_gpu/``) on CPU: the dry run, the refusal without a GPU, and the report
machinery (a check that hangs, crashes or fails leaves the others and the report intact;
figures from a run's metrics)."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT

from app.check_gpu import plan, running, workers
from app.check_gpu import report as gpu_report
from app.check_gpu import results as gpu_results


def run_script(*args, env=None) -> subprocess.CompletedProcess:
    """The real command line: ``groupwise check-gpu`` (``python -m app.cli`` is the console script's target)."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "check-gpu", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )


def test_dry_run_lists_every_step_with_its_command_and_runs_nothing(tmp_path):
    out = tmp_path / "r.json"
    proc = run_script("--dry-run", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    names = ["torch", "vllm", "deepspeed", "nccl", "tests-learner", "tests-vllm", "build-model", "train", "report"]
    for i, name in enumerate(names, 1):
        assert f"{i:>2}. {name}" in text, text
    assert "-m 'gpu and not vllm' tests/gpu/test_gpu.py" in text and "-m 'gpu and vllm' tests/gpu/test_gpu.py" in text
    assert "app.cli train" in text and "rollout.backend=vllm" in text and "model.dtype=bf16" in text
    assert "limit 480 s" in text and str(out) in text
    assert not out.exists() and not (tmp_path / "work").exists()


def test_dry_run_follows_only_and_skip():
    proc = run_script("--dry-run", "--only", "torch", "train", "--skip", "train")
    assert proc.returncode == 0 and " 1. torch" in proc.stdout and "train " not in proc.stdout
    proc = run_script("--dry-run", "--only", "train")  # with the model it needs
    assert " 1. build-model" in proc.stdout and " 2. train" in proc.stdout and " 3. report" in proc.stdout
    bad = run_script("--dry-run", "--only", "gpus")
    assert bad.returncode == 2 and "unknown check(s) ['gpus']" in bad.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run")
def test_refuses_without_a_gpu_with_the_fix(tmp_path):
    out = tmp_path / "r.json"
    proc = run_script("--out", str(out))
    assert proc.returncode == 2
    msg = proc.stderr.strip()
    assert msg.startswith("check-gpu: no CUDA device visible (torch ")
    assert torch.__version__ in msg and "make setup-gpu" in msg and "--dry-run" in msg
    assert not out.exists()


def test_a_hang_or_a_crash_fails_that_check_only(tmp_path):
    """Each check is a process with a time limit; the reason names what happened."""
    py = sys.executable
    checks = [
        plan.Check("hang", "sleeps", [py, "-c", "import time; time.sleep(60)"], timeout=1),
        plan.Check("crash", "raises", [py, "-c", "raise RuntimeError('CUDA error: out of memory')"], 30),
        plan.Check("segv", "dies", [py, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"], 30),
        plan.Check("ok", "passes", [py, "-c", "print('fine')"], 30),
        plan.Check("after", "needs crash", [py, "-c", "pass"], 30, needs=("crash",)),
    ]
    results = {}
    for c in checks:
        results[c.name] = running.run_check(c, 100, tmp_path, results)
    assert results["hang"]["status"] == "fail" and results["hang"]["reason"].startswith("timed out after 1 s")
    assert results["crash"]["reason"] == "RuntimeError: CUDA error: out of memory"
    assert results["segv"]["reason"] == "killed by SIGSEGV"
    assert results["ok"]["status"] == "pass"
    assert results["after"]["status"] == "skip" and "needs crash" in results["after"]["reason"]
    report = gpu_report.summarize(list(results.values()), {"total_s": 3.0, "out": "r.json", "work": str(tmp_path)})
    assert not report["ok"]
    text = gpu_report.render(report)
    assert "| 2 | crash | FAIL |" in text and "| 4 | ok | PASS |" in text and "1/5 checks passed" in text


def test_worker_verdicts_and_the_deadline_reserve(tmp_path):
    py = sys.executable
    verdict = "import json, sys; open(sys.argv[1], 'w').write(json.dumps({'status': 'fail', 'reason': 'low memory'}))"
    c = plan.Check("w", "worker", [py, "-c", verdict, str(tmp_path / "w.json")], 30)
    assert running.run_check(c, 100, tmp_path, {})["reason"] == "low memory"
    checks = [plan.Check(n, n, [], 100, reserve) for n, reserve in (("a", 10), ("b", 20), ("train", 150))]
    budget = running.budgets(checks, 480)
    assert budget(0, 0) == 480 - 170 and budget(2, 400) == 80
    gone = running.run_check(checks[0], budget(1, 470), tmp_path, {})
    assert gone["status"] == "skip" and "global deadline" in gone["reason"]


def test_pytest_results_per_test_from_junit_or_from_a_killed_run(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text(
        '<testsuites><testsuite><testcase name="test_a" time="2.5"/>'
        '<testcase name="test_b"><skipped message="server backend NCCL push: not in this tree yet"/></testcase>'
        '<testcase name="test_c"><failure message="AssertionError: gap 0.3">tb</failure></testcase>'
        "</testsuite></testsuites>"
    )
    res = {"name": "tests-vllm", "status": "fail", "reason": "", "log": str(tmp_path / "none.log")}
    out = gpu_results.pytest_result(res, xml)
    assert [t["status"] for t in out["tests"]] == ["pass", "skip", "fail"]
    assert out["status"] == "fail" and out["reason"] == "1 failed; first: test_c: AssertionError: gap 0.3"
    log = tmp_path / "killed.log"
    log.write_text("tests/gpu/test_gpu.py::test_a PASSED [ 33%]\ntests/gpu/test_gpu.py::test_b ")
    killed = {"name": "t", "status": "fail", "reason": "timed out after 240 s", "log": str(log)}
    tests = gpu_results.pytest_result(killed, tmp_path / "absent.xml")["tests"]
    assert tests == [
        {"test": "test_a", "status": "pass", "reason": "", "seconds": 0.0},
        {"test": "test_b", "status": "fail", "reason": "still running when the check timed out"},
    ]


def test_training_figures_from_metrics(tmp_path):
    run = tmp_path / "train"
    run.mkdir()
    row = {"loss": 0.1, "skipped_updates": 0, "abnormal_finishes": 0, "logprob_gap": 0.004, "length/mean": 500.0}
    row.update({"time/fwd_bwd": 3.0, "time/optimizer": 1.0, "time/old_ref_logprobs": 0.0, "time/learner": 4.5})
    row.update({"time/step": 8.0, "time/rollout": 3.5, "tokens_per_s": 9000.0})
    warm = {**row, "time/fwd_bwd": 60.0}  # the first step is left out
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [warm, row, row]))
    args = SimpleNamespace(work=str(tmp_path), train_gpus=1, train_steps=3, peak_tflops=None, keep_work=False)
    results = {"build-model": {"details": {"params": 494_032_768, "device": "NVIDIA H200"}}}
    res = {"status": "pass", "reason": "", "figures": {}}
    out = gpu_results.train_result(res, results, args)
    f = out["figures"]
    assert out["status"] == "pass", out["reason"]
    assert f["learner_tokens_per_s"] == 500 * 64 / 4.0  # 8 prompts x 8 samples x 500 tokens in 4 s
    assert f["mfu"] == pytest.approx(6 * 494_032_768 * 8000 / 989.4e12, abs=1e-4)
    assert f["weight_sync_s"] == 0.5 and f["vllm_tokens_per_s"] == 9000.0 and "H200" in f["mfu_peak"]
    bad = {**row, "logprob_gap": 0.9}
    (run / "metrics.jsonl").write_text(json.dumps(bad) + "\n")
    out = gpu_results.train_result({"status": "pass", "reason": "", "figures": {}}, results, args)
    assert out["status"] == "fail" and "1 of 3 steps logged" in out["reason"] and "logprob_gap 0.9" in out["reason"]


def test_peak_table_and_the_model_shape():
    assert gpu_results.peak_tflops("NVIDIA H100 PCIe", None)[0] == 756.0
    assert gpu_results.peak_tflops("NVIDIA H200", None)[0] == 989.4
    assert gpu_results.peak_tflops("NVIDIA H20", None)[0] == 148.0
    assert gpu_results.peak_tflops("Some GPU", None)[0] is None
    assert gpu_results.peak_tflops("Some GPU", 100.0) == (100.0, "--peak-tflops 100")
    from transformers import AutoModelForCausalLM

    from toylab.models import build_tokenizer

    with torch.device("meta"):  # Qwen2.5-0.5B's parameter count, without allocating it
        model = AutoModelForCausalLM.from_config(workers.qwen05b_config(build_tokenizer()))
    assert sum(p.numel() for p in model.parameters()) == 494_032_768
