"""The toy lab end to end, reduced: the toy task, the SFT'd toy reasoner (small spec), and short RL runs with
every objective and every reward scheme ending with their before/after table and plot. Learning outcomes
(accuracy up, length down) are measured in docs/toy-lab.md, not asserted here."""

import json
import random

import pytest

from rewards.math import grade
from toylab.task import sft_pairs, toy_problems, worked_solution


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
    from trainer.config import load_config
    from trainer.loop import train
    from trainer.report import before_after_table

    run = tmp_path / f"{loss}-{reward}"
    cfg = load_config(
        None,
        [
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
        ],
    )
    train(cfg)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1] and rows[1]["eval/accuracy"] is not None
    evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    assert [e["after_steps"] for e in evals] == [0, 2]
    table = before_after_table([run])
    assert f"| {run.name} | {loss} | {reward} | 2 |" in table
    assert (run / "curves.png").stat().st_size > 10_000
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())  # TensorBoard sink
