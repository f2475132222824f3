"""Evaluation: pass@k on hand-computed cases, summaries and tables on planted responses, the eval CLI on
the tiny model and a JSONL written here, the comparison table, and the plot command."""

import json
import subprocess

import pytest
from conftest import ROOT, bin_path

from rollout.base import Completion
from rollout.data import Example
from trainer.evaluate import compare_table, evaluate, markdown_table, pass_at_k


def test_pass_at_k_hand_computed():
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - (3 / 4) * (2 / 3))  # 0.5
    assert pass_at_k(4, 3, 2) == 1.0  # fewer than 2 wrong: any 2 samples contain a right one


class Planted:
    """A backend that returns fixed responses, so the counting can be checked exactly."""

    def __init__(self, texts: list[str]):
        self.texts = texts

    def generate(self, prompts, group_size, seed=0):
        out = []
        for i, t in enumerate(self.texts[: len(prompts) * group_size]):
            n = len(t)
            out.append(Completion([1], list(range(n)), [0.0] * n, "length" if i == 0 else "stop", t))
        return out


def test_evaluate_counts_planted_answers(tiny_model_dir):
    from transformers import AutoTokenizer

    from rewards.pool import GraderPool

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [Example("a", "1+1", "2"), Example("b", "half", "\\frac{1}{2}")]
    texts = ["\\boxed{2}", "\\boxed{3}", "so 0.5", "\\boxed{0.5}"]  # lengths 9, 9, 6, 11; right: 1st and 4th
    grader = GraderPool(workers=1)
    try:
        res = evaluate(Planted(texts), tok, rows, 2, grader, "")
    finally:
        grader.close()
    s = res["summary"]
    assert s["accuracy"] == 0.5 and s["pass@2"] == 1.0
    assert s["tokens"] == pytest.approx((9 + 9 + 6 + 11) / 4)
    assert s["tokens_correct"] == pytest.approx(10.0) and s["tokens_incorrect"] == pytest.approx(7.5)
    assert s["truncation"] == 0.25
    assert res["problems"][1]["extracted"] == [None, "0.5"] and res["problems"][1]["correct"] == [False, True]
    table = markdown_table({"mini": s})
    assert "| mini | 2 | 50.0 | 100.0 | 9 |" in table


def test_compare_table_reports_relative_change():
    base = {"b": {"accuracy": 0.5, "tokens": 200.0}}
    short = {"b": {"accuracy": 0.55, "tokens": 50.0}}
    table = compare_table({"base": base, "short": short})
    assert "| short | 55.0 | 50 | 55.0 | 50 | +5.0 | -75.0% |" in table


@pytest.mark.slow
def test_eval_cli_on_tiny_model_and_local_jsonl(tiny_model_dir, cli_env, tmp_path):
    data = tmp_path / "mini.jsonl"
    data.write_text(
        "".join(json.dumps({"id": f"m{i}", "problem": f"{i}+1", "answer": str(i + 1)}) + "\n" for i in range(3))
    )
    out = tmp_path / "ev"
    cmd = [bin_path("groupwise"), "eval", str(tiny_model_dir), "-b", str(data), "-k", "2", "--max-new-tokens", "8"]
    proc = subprocess.run([*cmd, "-o", str(out)], env=cli_env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| benchmark |" in proc.stdout
    res = json.loads((out / "results.json").read_text())
    (bench,) = res["summary"]
    assert res["summary"][bench]["problems"] == 3 and res["summary"][bench]["samples"] == 2
    assert [len(p["samples"]) for p in res["problems"][bench]] == [2, 2, 2]
    assert (out / "table.md").read_text().startswith("| benchmark |")

    cmp = subprocess.run(
        [bin_path("groupwise"), "eval", "--compare", str(out), str(out)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=900,  # a hang guard, not a speed check
        cwd=ROOT,
    )
    assert cmp.returncode == 0 and "+0.0" in cmp.stdout


def test_plot_writes_a_png_from_a_metrics_file(tmp_path):
    from app.plots import plot_runs

    rows = [{"step": s, "accuracy": s / 10, "length/mean": 50 - s, "loss": 0.1, "grad_norm": 1.0} for s in range(10)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "eval.jsonl").write_text(json.dumps({"after_steps": 0, "accuracy": 0.2, "tokens": 40.0}) + "\n")
    out = plot_runs([tmp_path, tmp_path], tmp_path / "c.png", labels=["a", "b"])
    assert out.stat().st_size > 10_000
