"""Runs that survive: exact resume after SIGKILL (also during a checkpoint write), SIGTERM, the NaN guard
on every rank, and the collapse guard's halt and rollback. All through the real CLI in subprocesses; faults
are planted at the run's boundaries by ``tests/support/fault_cli.py`` (the CLI with wrapped parts), never by hooks in
the trainer."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, bin_path
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# a tiny random model with a length-aware reward: advantages are non-zero, so every step moves the weights
BASE = [
    "-c",
    str(ROOT / "configs/smoke.yaml"),
    "device=cpu",
    "reward.name=kimi_lp",
    "steps=6",
    "checkpoint.every=2",
    "checkpoint.keep=0",
]
VOLATILE = ("time", "tokens_per_s")  # wall-clock figures; every other key must match exactly


FAULT_CLI = str(ROOT / "tests" / "support" / "fault_cli.py")


def cli(args: list[str], env: dict, fault: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``groupwise train``; with ``fault`` (``GROUPWISE_FAULT``'s syntax) the same CLI with that fault planted."""
    entry = [sys.executable, FAULT_CLI] if fault else [bin_path("groupwise")]
    return subprocess.run(
        [*entry, "train", *BASE, *args],
        env={**env, "GROUPWISE_FAULT": fault or ""},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def torchrun_cli(args: list[str], env: dict, fault: str) -> subprocess.CompletedProcess:
    cmd = [bin_path("torchrun"), "--nproc_per_node", "2", "--standalone", FAULT_CLI, "train", *BASE, *args]
    env = {**env, "GROUPWISE_FAULT": fault, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=ROOT)


def start_and_wait(args: list[str], env: dict, run: Path, n_rows: int, quiet: bool = False) -> subprocess.Popen:
    """Start the CLI in the background and return once ``n_rows`` metrics rows are written (or it exited)."""
    out = subprocess.DEVNULL if quiet else subprocess.PIPE
    proc = subprocess.Popen(
        [bin_path("groupwise"), "train", *BASE, *args],
        env=env,
        cwd=ROOT,
        stdout=out,
        stderr=out,
        text=True,
        start_new_session=quiet,  # quiet runs are killed as a process group (grader workers included)
    )
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n_rows:
            break
        time.sleep(0.05)
    return proc


def rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def stable(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE and not k.startswith("time/")} for r in rows(run)]


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step-{step:06d}" / "model" / "model.safetensors")


def events(run: Path) -> list[dict]:
    path = run / "events.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(cli_env, tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must reproduce bit for bit."""
    run = tmp_path_factory.mktemp("ref") / "run"
    proc = cli([f"run_dir={run}"], cli_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run


def test_sigkill_at_a_random_step_then_resume_is_bitwise_exact(reference, cli_env, tmp_path):
    run = tmp_path / "run"
    kill_after = 3 + int(time.time()) % 2  # a step somewhere after the first checkpoint
    proc = start_and_wait([f"run_dir={run}"], cli_env, run, kill_after, quiet=True)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(rows(run)) < 6, "the run finished before it could be killed"

    resumed = cli([f"run_dir={run}", "--resume"], cli_env)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming from" in resumed.stdout
    assert stable(run) == stable(reference)
    assert_same_weights(weights(run, 6), weights(reference, 6))


def test_kill_during_a_checkpoint_write_leaves_no_valid_looking_checkpoint(reference, cli_env, tmp_path):
    run = tmp_path / "run"
    proc = cli([f"run_dir={run}"], cli_env, "checkpoint-mid-save@4")
    assert proc.returncode == -signal.SIGKILL
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step-000002", "step-000004.tmp"]  # the half-written one is only a .tmp
    assert not (run / "checkpoints" / "step-000004.tmp" / "COMPLETE").exists()

    resumed = cli([f"run_dir={run}", "--resume"], cli_env)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "step-000002" in resumed.stdout  # resumed from the last complete one
    assert not (run / "checkpoints" / "step-000004.tmp").exists()
    assert stable(run) == stable(reference)
    assert_same_weights(weights(run, 6), weights(reference, 6))
    assert (run / "metrics.discarded.jsonl").exists()  # the replayed steps' first rows are kept aside


def test_adaptive_gfpo_resumes_exactly_with_its_difficulty_digest(cli_env, tmp_path):
    """Adaptive GFPO carries a t-digest of prompt difficulties from step to step; a run killed mid-save and
    resumed from its last checkpoint picks the same k per prompt, so metrics, weights and digest match."""
    extra = ["-c", str(ROOT / "configs/gfpo_adaptive.yaml"), "loss.gfpo_warmup_steps=1"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert cli([f"run_dir={ref}", *extra], cli_env).returncode == 0
    assert cli([f"run_dir={run}", *extra], cli_env, "checkpoint-mid-save@4").returncode == -signal.SIGKILL
    resumed = cli([f"run_dir={run}", *extra, "--resume"], cli_env)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "step-000002" in resumed.stdout
    assert stable(run) == stable(ref) and all("gfpo/difficulty_q50" in r for r in rows(run)[1:])
    assert_same_weights(weights(run, 6), weights(ref, 6))

    def digest(r: Path) -> dict:
        return json.loads((r / "checkpoints" / "step-000006" / "state.json").read_text())["run"]["gfpo_difficulty"]

    assert digest(run) == digest(ref) and digest(ref)["digest"]["count"] == 24  # 4 prompts x 6 steps


def test_sigterm_writes_a_resumable_checkpoint(reference, cli_env, tmp_path):
    run = tmp_path / "run"
    proc = start_and_wait([f"run_dir={run}", "checkpoint.every=0"], cli_env, run, 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "--resume" in err
    saved = [p.name for p in (run / "checkpoints").iterdir()]
    assert len(saved) == 1 and (run / "checkpoints" / saved[0] / "COMPLETE").exists()

    resumed = cli([f"run_dir={run}", "--resume", "checkpoint.every=0"], cli_env)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert stable(run) == stable(reference)
    assert_same_weights(weights(run, 6), weights(reference, 6))


def test_planted_nan_on_one_rank_skips_the_step_on_every_rank(cli_env, tmp_path):
    run = tmp_path / "run"
    proc = torchrun_cli(
        [f"run_dir={run}", "steps=3", "checkpoint.every=1", "deepspeed.zero_stage=2"],
        cli_env,
        "nan-loss@1:1",  # rank 1 only
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    skipped = [r["skipped_updates"] for r in rows(run)]
    assert skipped == [0.0, 1.0, 0.0]
    assert_same_weights(weights(run, 1), weights(run, 2))  # step 1 changed nothing
    assert not all(torch.equal(a, b) for a, b in zip(weights(run, 2).values(), weights(run, 3).values()))
    assert [e["event"] for e in events(run)] == ["skipped_update"]


def test_zero0_nan_skip_keeps_weights_and_schedule_and_streak_halts(cli_env, tmp_path):
    run = tmp_path / "run"
    proc = cli(
        [f"run_dir={run}", "checkpoint.every=1", "optim.warmup_steps=4", "guard.max_nonfinite_streak=2"],
        cli_env,
        "nan-loss@2+",
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "2 steps in a row had a non-finite loss" in proc.stderr
    r = rows(run)
    assert [x["skipped_updates"] for x in r] == [0.0, 0.0, 1.0, 1.0]
    assert r[2]["lr"] == r[1]["lr"]  # the warm-up schedule did not advance on the skipped step
    assert_same_weights(weights(run, 2), weights(run, 3))


def test_collapse_guard_halts_with_evidence(cli_env, tmp_path):
    run = tmp_path / "run"
    guard = ["guard.collapse_action=halt", "guard.min_history=2", "steps=8"]
    proc = cli([f"run_dir={run}", *guard], cli_env, "collapse@4+")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "collapse detected at step 5" in proc.stderr  # patience 2: steps 4 and 5
    (ev,) = events(run)
    assert ev["event"] == "collapse" and ev["action"] == "halt"
    assert {t["signal"] for t in ev["triggers"]} >= {"degenerate_share", "length/mean"}


def test_collapse_guard_rolls_back_to_the_last_good_checkpoint(cli_env, tmp_path):
    run = tmp_path / "run"
    guard = ["guard.collapse_action=rollback", "guard.min_history=2", "steps=8"]
    proc = cli([f"run_dir={run}", *guard], cli_env, "collapse@4+")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev = events(run)
    assert [e["event"] for e in ev] == ["collapse", "rollback"]
    assert ev[1]["step"] == 4 and ev[1]["checkpoint"].endswith("step-000004")
    r = rows(run)
    assert [x["step"] for x in r] == list(range(8))  # one linear history
    assert all(x["degenerate_share"] < 0.5 for x in r[4:])  # the collapsed rows were replaced
    assert r[5]["lr"] == pytest.approx(r[3]["lr"] * 0.5)  # the rollback halved the learning rate
    assert r[5]["reward/penalty_scale"] == 0.5
    discarded = [json.loads(x) for x in (run / "metrics.discarded.jsonl").read_text().splitlines()]
    assert [x["step"] for x in discarded] == [4, 5]


def test_dynamic_sampling_draws_more_rounds_when_groups_tie(cli_env, tmp_path):
    run = tmp_path / "run"
    # the random model never answers right: every group ties on correctness, so each step uses all 3 rounds
    proc = cli([f"run_dir={run}", "steps=2", "rollout.dynamic_sampling=true", "rollout.max_sampling_rounds=3"], cli_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["sampling_rounds"] for r in rows(run)] == [3.0, 3.0]
