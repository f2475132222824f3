"""The command line says no at once and leaves nothing behind: each command exits non-zero on a missing or bad
input with one message naming it, before any heavy library loads or any file is written; each --help points
to what comes next. Every case runs the real CLI in a subprocess, in an empty working directory."""

import json
import subprocess
import sys

import pytest
from conftest import bin_path

HEAVY = ("deepspeed", "transformers", "vllm")


def groupwise(args: list[str], env: dict, cwd) -> subprocess.CompletedProcess:
    # the timeout is a hang guard, not a speed check
    return subprocess.run([bin_path("groupwise"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def refused(proc, cwd, *names: str) -> str:
    """Exit 2, nothing on stdout, one error line naming ``names``, and the working directory still empty."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("groupwise: error: "), proc.stderr
    assert all(n in lines[0] for n in names), lines[0]
    assert not any(cwd.iterdir()), f"created before the input was checked: {sorted(cwd.iterdir())}"
    return lines[0]


def test_a_bad_config_key_is_the_only_thing_printed(cli_env, tmp_path):
    """No DeepSpeed accelerator warning (nothing heavy was imported), no run directory."""
    err = refused(groupwise(["train", "loss.nme=x"], cli_env, tmp_path), tmp_path, "loss.nme")
    assert "accelerator" not in err


def _modules_after_bad_config(env, cwd) -> list[str]:
    code = (
        "import json, sys; from app.cli import main; rc = main(['train', 'loss.nme=x']); "
        "print(json.dumps([rc, sorted(m for m in ['torch', *sys.argv[1:]] if m in sys.modules)]))"
    )
    proc = subprocess.run([sys.executable, "-c", code, *HEAVY], env=env, cwd=cwd, capture_output=True, text=True)
    rc, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rc == 2
    return loaded


def test_no_heavy_library_loads_before_the_config_is_checked(cli_env, tmp_path):
    assert not set(_modules_after_bad_config(cli_env, tmp_path)) & set(HEAVY)


def test_torch_does_not_load_before_the_config_is_checked(cli_env, tmp_path):
    assert "torch" not in _modules_after_bad_config(cli_env, tmp_path)


BAD_INPUTS = [
    (["train", "-c", "nope.yaml"], ["nope.yaml", "-c"]),
    (["eval", "./no/such/model", "-b", "toy"], ["./no/such/model"]),
    (["eval", "builtin:toy-reasoner", "-b", "nosuchbench"], ["nosuchbench"]),
    (["eval", "builtin:toy-reasoner", "-b", "missing.jsonl"], ["missing.jsonl"]),
    (["eval", "builtin:toy-reasoner", "--temperature", "0"], ["--temperature"]),
    (["eval", "builtin:toy-reasoner", "--budget", "64", "0"], ["--budget 0"]),
    (["eval"], ["MODEL"]),
    (["report", "/nonexistent"], ["/nonexistent", "metrics.jsonl"]),
    (["plot", "/nonexistent", "-o", "c.png"], ["/nonexistent"]),
    (["launch", "--servers", "0"], ["--servers 0"]),
    (["launch", "--servers", "1", "--server-gpus", "0;1"], ["--server-gpus", "one per server"]),
    (["launch", "--nproc", "0"], ["--nproc 0"]),
    (["serve", "-c", "nope.yaml"], ["nope.yaml"]),
    (["launch", "--host", "0.0.0.0"], ["GROUPWISE_SERVER_SECRET"]),
]


@pytest.mark.parametrize("args, names", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_a_missing_or_bad_input_exits_2_and_creates_nothing(args, names, cli_env, tmp_path):
    """The toy reasoner is not built either (its cache stays empty: building it takes minutes)."""
    cwd, cache = tmp_path / "cwd", tmp_path / "cache"
    cwd.mkdir(), cache.mkdir()
    env = {k: v for k, v in cli_env.items() if k != "GROUPWISE_SERVER_SECRET"}
    refused(groupwise(args, {**env, "GROUPWISE_CACHE": str(cache)}, cwd), cwd, *names)
    assert not any(cache.iterdir())


@pytest.mark.parametrize(
    "command, hints",
    [
        ("train", ["groupwise config", "toy CPU demo", "configs/base_gpu.yaml", "hub:gsm8k", "train_multinode.sh"]),
        ("eval", ["--data-dir", "GROUPWISE_DATA", "hub", "builtin:toy-reasoner"]),
        ("launch", ["configs/server_gpu.yaml", "GROUPWISE_SERVER_SECRET"]),
        ("serve", ["configs/server_gpu.yaml"]),
        ("report", ["run_dir", "groupwise train"]),
        ("plot", ["run_dir"]),
    ],
)
def test_help_points_to_what_comes_next(command, hints, cli_env, tmp_path):
    proc = groupwise([command, "--help"], cli_env, tmp_path)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # argparse wraps lines
    assert all(h in text for h in hints), [h for h in hints if h not in text]


def test_grading_workers_print_no_math_verify_timeout_warning(cli_env, tmp_path):
    """We give Math-Verify no timeout on purpose (our own deadline); its warning must not reach the terminal."""
    code = (
        "from rewards.pool import GraderPool\n"
        "pool = GraderPool(workers=1)\n"
        "try:\n"
        "    print([g.correct for g in pool.grade(['so \\\\boxed{\\\\frac{x^2 - 1}{x - 1}}', 'so \\\\boxed{2x}'],"
        " ['x + 1', 'x^2'])])\n"
        "finally:\n"
        "    pool.close()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[True, False]"  # the symbolic case reached Math-Verify
    assert "Timeout is disabled" not in proc.stderr
