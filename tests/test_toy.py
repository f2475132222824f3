"""The toy lab end to end, reduced: the toy task, the SFT'd toy reasoner (small spec), and short RL runs with
every objective and every reward scheme ending with their before/after table and plot. Learning outcomes
(accuracy up, length down) are measured in docs/toy-lab.md, not asserted here."""

import json
import random

import pytest

from rewards.math import grade
from toylab.task import sft_pairs, shortcut_solution, toy_problems, worked_solution


def test_worked_solutions_are_right_and_redundancy_only_adds_lines():
    rng = random.Random(0)
    plain = worked_solution([23, 45, 17], 0, rng)
    assert plain == "23+45=68\n68+17=85\n\\boxed{85}"
    for k in range(4):
        text = worked_solution([23, 45, 17], k, rng)
        assert len(text.splitlines()) == 3 + k and grade(text, "85")[0]


def test_splits_are_disjoint_and_reproducible():
    train = {r.problem for r in toy_problems(500, seed=0)}
    test = {r.problem for r in toy_problems(200, seed=0, split="test")}
    assert not train & test
    assert toy_problems(5, seed=3) == toy_problems(5, seed=3)
    lengths = {len(s) for _, s in sft_pairs(50, 3, 99, 3, seed=0)}
    assert max(lengths) - min(lengths) > 20  # redundancy makes lengths vary


def test_the_plain_task_and_its_cache_names_did_not_move():
    """The demo's reasoner trains on exactly the problems it always did, and keeps its cache directory."""
    from toylab.reasoner import DEMO

    assert [r.problem for r in toy_problems(2, 3, 99, 0)] == ["37+11+61", "21+78+43"]
    assert DEMO.key() == "toy-reasoner-128-4-4-2-512-3-99-3-600-64-0.003-0"


def test_the_shortcut_task_has_easy_and_hard_problems_and_a_share_of_bare_answers():
    pairs = sft_pairs(4000, 4, 99, 2, seed=0, shortcut=0.25, min_operands=2)
    bare = [(p, s) for p, s in pairs if "=" not in s]
    assert 0.22 < len(bare) / len(pairs) < 0.28
    assert {p.count("+") + 1 for p, _ in pairs} == {2, 3, 4}
    for p, s in bare[:50] + pairs[:50]:  # every SFT answer is right, bare or worked
        assert grade(s, str(sum(int(x) for x in p.split("+"))))[0]
    assert shortcut_solution([23, 45, 17]) == "\\boxed{85}"
    worked = [len(s) for _, s in pairs if "=" in s]
    assert min(worked) > max(len(s) for _, s in bare)  # the bare answer is the short one
    train = {r.problem for r in toy_problems(500, 4, 99, 0, min_operands=2)}
    test = {r.problem for r in toy_problems(200, 4, 99, 0, "test", min_operands=2)}
    assert not train & test


def test_a_builtin_reasoner_trains_on_its_own_task():
    from toylab.reasoner import SHORTCUT, task_rows

    assert task_rows("builtin:toy-shortcut", 20, 1, 2, 20) == SHORTCUT.problems(20, 1)
    plain = task_rows("some/other-model", 20, 1, 2, 20)
    assert all(r.problem.count("+") == 1 and int(r.answer) <= 40 for r in plain)


def test_the_lab_summary_applies_the_stated_collapse_criteria(tmp_path):
    """scripts/collapse_lab.py: collapse = end accuracy > 20 points below the start; length collapse = end
    tokens below half the start; guard events counted from events.jsonl."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("lab", Path(__file__).parents[1] / "scripts" / "collapse_lab.py")
    lab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lab)

    def run(name, evals, events=()):
        d = tmp_path / name
        d.mkdir()
        (d / "eval.jsonl").write_text("".join(json.dumps({"after_steps": 25 * i, "accuracy": a, "tokens": t}) + "\n"
                                              for i, (a, t) in enumerate(evals)))  # fmt: skip
        (d / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        return lab.summarize(d)

    fell = run("kimi_lp-s0", [(0.60, 30.0), (0.50, 20.0), (0.39, 14.0)], [{"event": "collapse", "step": 40}])
    assert fell["collapsed"] and fell["length_collapsed"] and fell["collapse_events"] == 1
    assert fell["acc_min"] == 0.39 and fell["steps"] == 50
    held = run("kimi_lp-s1", [(0.60, 30.0), (0.41, 15.5)])
    assert not held["collapsed"] and not held["length_collapsed"]  # 19 points, 0.52x: inside both lines
    assert lab.mean_sd([0.4, 0.6], 100) == "50.0 ± 14.1"
    table = lab.table("length", tmp_path, [0, 1])
    assert "| kimi_lp | 2 | 60.0 ± 0.0% | 40.0 ± 1.4% |" in table and "| 1/2 | 1/2 | 1 (0 rollbacks) |" in table


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory, monkeypatch_module):
    """The test-size toy reasoner, built by the same code path as builtin:toy-reasoner."""
    monkeypatch_module.setenv("GROUPWISE_CACHE", str(tmp_path_factory.mktemp("cache")))
    from toylab.reasoner import resolve_model_path

    return resolve_model_path("builtin:toy-reasoner-test")


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.mark.slow
def test_sft_gives_a_model_that_solves_a_clear_share(toy_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rollout.base import encode_prompt
    from rollout.hf import HFBackend
    from toylab.reasoner import TEST, heldout

    info = json.loads((__import__("pathlib").Path(toy_model) / "toy_reasoner.json").read_text())
    assert info["spec"]["steps"] == TEST.steps
    tok = AutoTokenizer.from_pretrained(toy_model)
    model = AutoModelForCausalLM.from_pretrained(toy_model, dtype=torch.float32).eval()
    rows = heldout(TEST, 40)
    comps = HFBackend(lambda: model, tok, 64).generate([encode_prompt(tok, r.problem) for r in rows], 2, seed=0)
    acc = sum(grade(c.text, rows[i // 2].answer)[0] for i, c in enumerate(comps)) / len(comps)
    assert acc > 0.2, acc  # a clearly non-zero share (random models score 0)


RUNS = [("grpo", "binary"), ("dr_grpo", "binary"), ("dapo", "binary"), ("gspo", "binary"), ("gspo_token", "binary")]
RUNS += [("luspo", "binary"), ("grpo", "kimi_lp"), ("grpo", "correct_lp"), ("grpo", "grpo_lambda")]
RUNS += [("grpo", "arora_zanette"), ("grpo", "acoer")]


@pytest.mark.slow
@pytest.mark.parametrize(("loss", "reward"), RUNS)
def test_rl_steps_with_each_objective_and_scheme_end_with_table_and_plot(toy_model, tmp_path, loss, reward):
    from app.cli import main
    from app.report import before_after_table

    run = tmp_path / f"{loss}-{reward}"
    code = main(  # the whole entry point in this process: the toy lab resolved, training, table and plot
        [
            "train",
            "model.path=builtin:toy-reasoner-test",
            "device=cpu",
            f"run_dir={run}",
            f"loss.name={loss}",
            f"reward.name={reward}",
            "steps=2",
            "data.prompts_per_step=4",
            "rollout.group_size=8",
            "rollout.max_new_tokens=48",
            "eval.every=2",
            "eval.problems=8",
            "eval.samples=2",
            "reward.grade_workers=1",
        ]
    )
    assert code == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1] and rows[1]["eval/accuracy"] is not None
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert [e["after_steps"] for e in evals] == [0, 2]
    table = before_after_table([run])
    assert f"| {run.name} | {loss} | {reward} | 2 |" in table
    assert (run / "curves.png").stat().st_size > 10_000
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())  # TensorBoard sink


@pytest.mark.slow
def test_the_collapse_lab_runs_resumes_and_reports(toy_model, tmp_path):
    """scripts/collapse_lab.py end to end on the test-size reasoner (2 steps): the run, its table and figure;
    a second call finds the run finished and does not train again."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "collapse_lab.py"
    args = [sys.executable, str(script), "--only", "guard", "--seeds", "0", "--jobs", "1", "--probe", "0"]
    args += ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "model.path=builtin:toy-reasoner-test"]
    args += ["steps=2", "data.prompts_per_step=2", "rollout.group_size=4", "eval.every=2", "eval.problems=4"]
    args += ["eval.samples=1", "rollout.max_new_tokens=32", "checkpoint.every=1", "optim.micro_batch_size=8"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "guard-s0: exit 0" in first.stdout
    assert json.loads((tmp_path / "runs" / "guard-s0" / "lab.json").read_text())["status"] == 0
    assert "| guard | 1 |" in (tmp_path / "out" / "lab-results.md").read_text()
    assert (tmp_path / "out" / "lab-guard.png").stat().st_size > 10_000
    again = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert "guard-s0: exit 0 (0.0 min)" in again.stdout  # finished runs are not trained again
