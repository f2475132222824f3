"""Every bad input fails before any work, through the real CLI: the message names the key or file:line and
the fix, and no model was built (the toy reasoner's cache stays empty; building it takes minutes)."""

import json
import subprocess

import pytest
from conftest import ROOT, bin_path


def train(args: list[str], env: dict, cache) -> subprocess.CompletedProcess:
    env = {**env, "GROUPWISE_CACHE": str(cache)}
    cmd = [bin_path("groupwise"), "train", "device=cpu", *args]
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT
    )  # a hang guard, not a speed check


def failed_before_any_model(proc, cache, run) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not any(cache.iterdir()), "a model was built before the input was checked"
    assert not (run / "config.yaml").exists()
    return proc.stderr


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=.nan", r"optim\.lr=nan is out of range: it must be a finite number in \(0, ∞\)"),
        ("optim.lr=nan", r"optim\.lr"),
        ("reward.acoer.gamma=2", r"reward\.acoer\.gamma=2\.0 is out of range"),
        ("optim.grad_clip=.inf", r"optim\.grad_clip=inf is out of range"),
        ("eval.benchmark=/nonexistent/bench.jsonl", r"/nonexistent/bench\.jsonl"),
        ("data.max_prompt_tokens=500", r"= 596 tokens, but builtin:toy-reasoner holds 512 positions"),
    ],
)
def test_bad_values_fail_before_any_model_is_built(override, message, cli_env, tmp_path):
    import re

    cache, run = tmp_path / "cache", tmp_path / "run"
    cache.mkdir()
    err = failed_before_any_model(train([override, f"run_dir={run}"], cli_env, cache), cache, run)
    assert re.search(message, err), err


def test_a_malformed_data_row_is_named_before_the_toy_reasoner_is_built(cli_env, tmp_path):
    data = tmp_path / "data.jsonl"
    rows = [{"problem": "1+1", "answer": "2"}, {"problem": "2+2"}, {"problem": "3+3", "answer": "6"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache, run = tmp_path / "cache", tmp_path / "run"
    cache.mkdir()
    err = failed_before_any_model(train([f"data.source={data}", f"run_dir={run}"], cli_env, cache), cache, run)
    assert f"{data}:2: missing field 'answer'" in err
