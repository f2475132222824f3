"""The toy lab end to end, reduced: the toy task, the SFT'd toy reasoner (small spec), and short RL runs with
every objective and every reward scheme ending with their before/after table and plot. Learning outcomes
(accuracy up, length down) are measured in docs/toy-lab.md, not asserted here."""

import json
import random
import sys
from pathlib import Path

import pytest

from rewards.math import grade
from toylab.experiments import EXPERIMENTS
from toylab.results import against_baseline, agreement, collect, summarize, table
from toylab.task import sft_pairs, shortcut_solution, toy_problems, worked_solution


def test_worked_solutions_are_right_and_redundancy_only_adds_lines():
    rng = random.Random(0)
    plain = worked_solution([23, 45, 17], 0, rng)
    assert plain == "23+45=68\n68+17=85\n\\boxed{85}"
    for k in range(4):
        text = worked_solution([23, 45, 17], k, rng)
        assert len(text.splitlines()) == 3 + k and grade(text, "85")[0]


def test_the_length_pays_task_merges_work_and_every_answer_is_right():
    """toylab.task: ``merge`` joins an addition to the next line's; the sum stays right, the work shrinks."""
    assert worked_solution([23, 45, 17, 30], 0, random.Random(0), merge=1.0) == "23+45+17+30=115\n\\boxed{115}"
    pairs = sft_pairs(2000, 5, 99, 0, seed=0, shortcut=0.1, min_operands=2, merge=0.4)
    for p, s in pairs[:200]:
        nums = [int(x) for x in p.split("+")]
        assert grade(s, str(sum(nums)))[0]
        for line in s.splitlines()[:-1]:  # every written line is true arithmetic
            lhs, rhs = line.split("=")
            assert sum(int(x) for x in lhs.split("+")) == int(rhs)
    worked = [(p.count("+"), s.count("\n")) for p, s in pairs if "=" in s]
    merged = sum(lines < adds for adds, lines in worked) / len(worked)
    assert 0.3 < merged < 0.8  # P(some merge) for 1-4 additions at 0.4 each, 2-5 numbers uniform: ~0.5


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


def test_every_lab_run_has_a_config_that_loads_and_starts_from_its_experiments_model():
    """Each (experiment, method) of toylab/experiments.py loads as the runner composes it (base, experiment,
    method), with the experiment's starting model, and methods keep their objective and reward."""
    from trainer.config import load_config

    root = Path(__file__).parents[2]
    for name, exp in EXPERIMENTS.items():
        for method in exp.methods + exp.controls:
            files = ["base.yaml", *exp.configs, f"{method}.yaml"]
            cfg = load_config([str(root / "configs" / "lab" / f) for f in files], [])
            assert cfg.model.path == exp.model, (name, method)
            if method.startswith("kimi_lp"):
                assert cfg.reward.name == "kimi_lp" and cfg.loss.name == "grpo"
    x2 = load_config([str(root / "configs" / "lab" / f) for f in ("base.yaml", "collapse.yaml", "kimi_lp_x2.yaml")])
    assert x2.reward.length_penalty.weight == 2.0


def test_a_replications_verdict_reads_the_two_intervals_signs():
    """The lab runner's --reference (``toylab.results.replication``): an effect holds when both 95% intervals
    exclude 0 on the same side."""
    assert agreement((-28.0, -11.3), (-33.4, -20.0)) == "holds"
    assert agreement((-3.4, 7.5), (-1.0, 2.0)) == "no effect in either"
    assert agreement((-3.4, 7.5), (2.4, 11.0)) == "not shown here"
    assert agreement((2.4, 11.0), (-3.4, 7.5)) == "**new here**"
    assert agreement((0.5, 1.0), (-2.0, -0.1)) == "**reversed**"
    assert agreement((0.0, 1.0), (0.0, 2.0)) == "no effect in either"  # an interval touching 0 includes it


def test_the_lab_summary_applies_the_stated_collapse_criteria(tmp_path):
    """toylab.results: collapse = end accuracy below half the start; length collapse = end tokens
    below half the start; unfinished runs are left out; each method is paired with the baseline by seed."""

    def run(name, evals, finished=True):
        d = tmp_path / "length" / name
        d.mkdir(parents=True)
        rows = [
            {"after_steps": 50 * i, "accuracy": sum(c) / 8, "tokens": sum(t) / 2, "samples": 4,
             "problem_correct": c, "problem_tokens": t}
            for i, (c, t) in enumerate(evals)
        ]  # fmt: skip
        (d / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if finished:
            (d / "lab.json").write_text(json.dumps({"status": 0, "minutes": 1.0}))
        return summarize(d)

    base = run("grpo-s0", [([2, 2], [30.0, 30.0]), ([4, 2], [30.0, 30.0])])  # 50% -> 75%, 30 tokens
    assert not base["collapsed"] and base["problem_acc"] == [1.0, 0.5]
    fell = run("kimi_lp-s0", [([2, 2], [30.0, 30.0]), ([1, 0], [10.0, 18.0])])  # 50% -> 12.5%, 30 -> 14 tokens
    assert fell["collapsed"] and fell["length_collapsed"]
    held = run("correct_lp-s0", [([2, 2], [30.0, 30.0]), ([2, 0], [15.0, 16.0])])  # 25% = half: not below it
    assert not held["collapsed"] and not held["length_collapsed"]
    assert run("acoer-s0", [([2, 2], [30.0, 30.0]), ([4, 4], [30.0, 30.0])], finished=False) is None
    got = collect("length", tmp_path, [0])
    text = table("length", got, against_baseline("length", got))
    assert "| grpo | 1 | 50.0% | 75.0% [50.0, 100.0] | 30.0 | 30.0 | (baseline) | (baseline) |" in text
    # kimi_lp - grpo at seed 0: accuracy 12.5% - 75% = -62.5 points; tokens 28 / 60 - 1 = -53.3%
    assert "| kimi_lp | 1 | 50.0% |" in text and "| -62.5 [" in text and "| -53.3% [" in text
    assert "| 1/1 / 1/1 |" in text and "| acoer | 0 |" in text


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

    script = Path(__file__).parents[2] / "scripts" / "collapse_lab.py"
    args = [sys.executable, str(script), "--only", "offpolicy", "--methods", "gspo", "--seeds", "0", "--jobs", "1"]
    args += ["--probe", "0"]
    args += ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "model.path=builtin:toy-reasoner-test"]
    args += ["steps=2", "data.prompts_per_step=2", "rollout.group_size=4", "eval.every=2", "eval.problems=4"]
    args += ["eval.samples=1", "rollout.max_new_tokens=32", "checkpoint.every=1", "optim.micro_batch_size=2"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "offpolicy/gspo-s0: exit 0" in first.stdout
    run = tmp_path / "runs" / "offpolicy" / "gspo-s0"
    assert json.loads((run / "lab.json").read_text())["status"] == 0
    assert "updates_per_batch: 4" in (run / "config.yaml").read_text()  # configs/lab/offpolicy.yaml applied
    results = (tmp_path / "out" / "lab-results.md").read_text()
    assert "| gspo | 1 |" in results and "(baseline)" in results
    assert "| luspo |" not in results  # --methods: the table holds the methods run (and the baseline) only
    assert (tmp_path / "out" / "lab-offpolicy.png").stat().st_size > 10_000
    groups = [json.loads(line) for line in (run / "groups.jsonl").read_text().splitlines()]
    assert [g["step"] for g in groups] == [0, 1] and all(len(g["correct"]) == 2 for g in groups)
    again = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert "offpolicy/gspo-s0: exit 0 (0.0 min)" in again.stdout  # finished runs are not trained again
