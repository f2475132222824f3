"""The efficient-reasoning methods of issue 36 on hand-computed groups: L1 (exact, max), ShorterBetter,
ThinkPrune, DLER (truncation + batch-wise normalization) and GFPO (filter + advantages over the kept set).
Edge cases: no correct answer, all correct, ties, truncated samples. Where the authors' code is public the
expected numbers are worked from it by hand (the function named beside them)."""

import math

import pytest
import torch
from support.reward_batches import reward_batch, scheme_rewards

from rewards.schemes import build_scheme
from rewards.schemes.shorterbetter import sample_optimal_length
from rewards.schemes.thinkprune import thinkprune_cap
from rollout.data import Example, with_budgets
from trainer.advantages import batch_std_advantages, gfpo_advantages, gfpo_keep_mask, group_advantages
from trainer.config import ConfigError, load_config, validate


def batch(correct, lengths, group_size, truncated=None, budgets=None, max_new_tokens=100):
    return reward_batch(correct, lengths, group_size, truncated, budgets, max_new_tokens)


rewards = scheme_rewards


# --- L1 / LCPO: numbers worked by hand from cmu-l3/l1 math_reward.py (math_reward_fn, alpha=0.0003) ----------


def test_l1_exact_is_correctness_minus_alpha_times_the_budget_gap():
    # get_delta_score_linear(1000, 1500) = (1 - 0.15) - 1 = -0.15 -> correct: 0.85; (1000, 700): -0.09 -> wrong: -0.09
    b = batch([1, 0, 1, 0], [1500, 700, 1000, 1000], 4, budgets=[1000] * 4)
    assert rewards("l1_exact", b, alpha=0.0003) == pytest.approx([0.85, -0.09, 1.0, 0.0])


def test_l1_exact_penalizes_being_short_as_much_as_being_long():
    b = batch([1, 1], [900, 1100], 2, budgets=[1000, 1000])
    r = rewards("l1_exact", b, alpha=0.0003)
    assert r[0] == pytest.approx(r[1]) == pytest.approx(0.97)


def test_l1_max_is_the_authors_clipped_multiplier():
    # get_delta_score_linear_both(-1000, used, 0.0003) then max(0, d) * correct (multiplier_reward):
    # used 1500: sc = -0.15 -> 0.425; used 600: sc = 0.12 -> 0.56; used 1000: 0.5; used 5000: sc clipped -1 -> 0.
    # The code's a = 0.0003 is the paper's (Eq. 2) alpha = a/2 with delta = 1/2.
    b = batch([1, 1, 1, 1, 0, 0], [1500, 600, 1000, 5000, 600, 1500], 6, budgets=[1000] * 6)
    assert rewards("l1_max", b, alpha=0.00015, delta=0.5) == pytest.approx([0.425, 0.56, 0.5, 0.0, 0.0, 0.0])


def test_l1_max_saturates_at_one_far_under_the_budget():
    b = batch([1, 1], [0, 10], 2, budgets=[4000, 4000])
    assert rewards("l1_max", b, alpha=0.0003) == pytest.approx([1.0, 1.0])


def test_l1_logs_budgets_and_fails_clearly_without_them():
    _, m = build_scheme("l1_exact")(batch([1, 0], [50, 70], 2, budgets=[60, 100]))
    assert m["l1/budget"] == 80 and m["l1/budget_gap"] == 20
    with pytest.raises(ValueError, match="l1_max needs a token budget"):
        build_scheme("l1_max")(batch([1, 0], [50, 70], 2))


def test_the_default_budgets_are_the_authors_range_scaled_to_the_rollout_limit():
    from trainer.config.reward import budget_range

    assert budget_range(None, None, 4096) == (100, 4000)  # deepscaler_dataset.py's randint(100, 4000), 4096 limit
    assert budget_range(None, None, 96) == (2, 94)
    assert budget_range(10, None, 96) == (10, 94) and budget_range(None, 50, 96) == (2, 50)


def test_budgets_are_drawn_once_per_row_in_range_and_written_into_the_prompt():
    rows = [Example(f"r{i}", f"{i} + 1 = ?", str(i + 1)) for i in range(200)]
    a = with_budgets(rows, "Think for {n} tokens.", 10, 40, seed=3)
    assert a == with_budgets(rows, "Think for {n} tokens.", 10, 40, seed=3)  # the same on every rank and resume
    assert {r.budget for r in a} == set(range(10, 41))  # uniform over the integers, ends included
    assert a[0].problem == f"0 + 1 = ? Think for {a[0].budget} tokens." and a[0].answer == "1"
    fixed = with_budgets(rows[:3], "Think for maximum {n} tokens.", 32, 32, seed=0)
    assert [r.budget for r in fixed] == [32] * 3 and fixed[2].problem.endswith("Think for maximum 32 tokens.")


def test_groupwise_eval_evaluates_each_benchmark_at_each_fixed_budget():
    from app.eval_cli import budget_variants

    rows = [Example("a", "1 + 2 = ?", "3")]
    assert budget_variants("toy", rows, None, "exact") == [("toy", rows)]
    (l1, r1), (l2, r2) = budget_variants("toy", rows, [16, 64], "max")
    assert r1[0].budget == 16
    assert (l1, l2) == ("toy@16", "toy@64") and r2[0].problem == "1 + 2 = ? Think for maximum 64 tokens."
    with pytest.raises(ValueError, match="--budget 0"):
        budget_variants("toy", rows, [0], "exact")


# --- ShorterBetter (arXiv 2504.21370, Eqs. 2-3; no public code) -------------------------------------------------


def test_shorterbetter_pulls_every_answer_to_the_shortest_correct_length():
    # SOL = 20 (the shortest correct); alpha 2, beta 0.001
    b = batch([1, 0, 1, 0], [30, 10, 20, 50], 4)
    assert rewards("shorterbetter", b) == pytest.approx([1.99, -0.01, 2.0, -0.03])


def test_shorterbetter_without_a_correct_answer_uses_the_mean_length():
    b = batch([0, 0, 0, 0], [10, 20, 30, 40], 4)  # SOL = 25
    assert rewards("shorterbetter", b) == pytest.approx([-0.015, -0.005, -0.005, -0.015])


def test_shorterbetter_all_correct_with_ties_and_a_truncated_sample():
    b = batch([1, 1, 1, 1, 0, 1], [20, 20, 30, 20, 100, 40], 3, truncated=[0, 0, 0, 0, 1, 0])
    assert sample_optimal_length(b.correct, b.lengths, 3).tolist() == [20, 20, 20, 20, 20, 20]
    assert rewards("shorterbetter", b, beta=0.01) == pytest.approx([2.0, 2.0, 1.9, 2.0, -0.8, 1.8])


# --- ThinkPrune (arXiv 2504.01296; UCSB-NLP-Chang/ThinkPrune: max_response_length = the cap) ----------------------


def test_thinkprune_schedule_is_the_authors_4k_3k_2k():
    caps = [thinkprune_cap(4000, 0.25, 3, 10, step) for step in (0, 9, 10, 19, 20, 1000)]
    assert caps == [4000, 4000, 3000, 3000, 2000, 2000]  # the last limit is kept after the rounds
    assert thinkprune_cap(4000, 0.25, 3, 0, 1000) == 4000  # round_steps 0: one round


def test_thinkprune_over_the_cap_earns_zero_and_the_cap_tightens():
    scheme = build_scheme("thinkprune", cap=100, shrink=0.25, rounds=3, round_steps=1)
    b = batch([1, 1, 0, 1], [80, 75, 20, 100], 4, truncated=[0, 0, 0, 1])
    r0, m0 = scheme(b)  # cap 100: a truncated right answer earns 1, as the authors grade the cut text
    r1, m1 = scheme(b)  # cap 75: 75 is within, 80 and 100 over
    r2, _ = scheme(b)  # cap 50
    assert (m0["thinkprune/cap"], m1["thinkprune/cap"]) == (100, 75)
    assert r0.tolist() == [1, 1, 0, 1] and r1.tolist() == [0, 1, 0, 0] and r2.tolist() == [0, 0, 0, 0]
    assert scheme.state_dict() == {"scheme": {"steps": 3}, "penalty_scale": 1.0}


# --- DLER (arXiv 2510.15110): truncation penalty and batch-wise normalization -------------------------------------


def test_dler_truncation_penalty_zeroes_truncated_answers_right_or_wrong():
    b = batch([1, 1, 0, 1], [40, 100, 100, 30], 4, truncated=[0, 1, 1, 0])
    assert rewards("dler", b) == [1, 0, 0, 1]
    assert rewards("dler", batch([0, 0], [5, 6], 2)) == [0, 0]  # no correct answer: all 0


def test_batch_std_advantages_use_group_means_and_one_batch_std():
    r = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 0])  # group means 0.25, 0.75
    a = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.25, 0.25, 0.25, -0.75])
    expected = a / (math.sqrt((a**2).sum().item() / 7) + 1e-6)  # batch mean of a is 0; unbiased std
    assert torch.allclose(batch_std_advantages(r, 4), expected.double())
    # a tied group stays at 0, and the other group's scale comes from the batch, not the group
    adv = batch_std_advantages(torch.tensor([1.0, 0, 1, 1]), 2)
    assert adv[2:].tolist() == [0, 0] and adv[0].item() == pytest.approx(0.5 / math.sqrt(0.5 / 3), rel=1e-5)
    assert group_advantages(torch.tensor([1.0, 0, 1, 1]), 2)[0].item() == pytest.approx(1 / math.sqrt(2), rel=1e-5)
    assert batch_std_advantages(torch.ones(6), 3).tolist() == [0.0] * 6  # everything tied: no signal, no NaN


# --- GFPO (arXiv 2508.09726, Eq. 2) --------------------------------------------------------------------------------


def test_gfpo_keeps_the_shortest_and_normalizes_over_them_only():
    r, L = torch.tensor([1.0, 1, 0, 1]), torch.tensor([10.0, 40, 5, 20])
    kept = gfpo_keep_mask(r, L, 4, 2, "length")
    assert kept.tolist() == [True, False, True, False]  # lengths 10 and 5
    adv = gfpo_advantages(r, kept, 4)  # kept rewards 1, 0: mean 0.5, unbiased std 1/sqrt(2)
    assert adv.tolist() == pytest.approx([1 / math.sqrt(2), 0, -1 / math.sqrt(2), 0], rel=1e-5)


def test_gfpo_token_efficiency_and_a_tied_kept_set():
    r, L = torch.tensor([1.0, 1, 0, 1]), torch.tensor([10.0, 40, 5, 20])  # r / L = 0.1, 0.025, 0, 0.05
    kept = gfpo_keep_mask(r, L, 4, 2, "token_efficiency")
    assert kept.tolist() == [True, False, False, True]
    assert gfpo_advantages(r, kept, 4).tolist() == [0, 0, 0, 0]  # both kept are right: no signal


def test_gfpo_ties_go_to_the_lower_index_and_no_correct_answer_gives_zero():
    kept = gfpo_keep_mask(torch.zeros(4), torch.full((4,), 10.0), 4, 3, "length")
    assert kept.tolist() == [True, True, True, False]
    assert gfpo_advantages(torch.zeros(4), kept, 4).tolist() == [0, 0, 0, 0]


def test_gfpo_keeping_every_row_is_grpo():
    r = torch.tensor([1.0, 0, 0, 1, 1, 1, 0, 1])
    kept = torch.ones(8, dtype=torch.bool)
    assert torch.allclose(gfpo_advantages(r, kept, 4), group_advantages(r, 4))


# --- config -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["reward.name=l1_exact", "reward.l1.budget_max=4000"],
            "reward.l1.budget_max=4000 > rollout.max_new_tokens=96",
        ),
        (["reward.name=l1_max", "reward.l1.budget_max=50", "reward.l1.budget_min=60"], "budget_min=60 > "),
        (["reward.name=thinkprune", "reward.thinkprune.cap=200"], "reward.thinkprune.cap=200 > rollout"),
        (["loss.gfpo_keep=16"], r"loss.gfpo_keep=16 must be in \[2, rollout.group_size=16\)"),
        (["loss.gfpo_keep=8", "loss.adv_norm=batch"], "set loss.adv_norm=group"),
    ],
)
def test_bad_length_method_settings_fail_at_load_with_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(load_config(None, overrides), world_size=1)


def test_the_recipes_load_on_top_of_another_config():
    gfpo = load_config(["configs/smoke.yaml", "configs/gfpo.yaml"])
    assert (gfpo.rollout.group_size, gfpo.loss.gfpo_keep, gfpo.reward.name) == (16, 8, "kimi_lp")  # smoke's reward
    dler = load_config(["configs/smoke.yaml", "configs/dler.yaml"])
    assert (dler.reward.name, dler.loss.adv_norm, dler.loss.clip_high, dler.rollout.dynamic_sampling) == (
        "dler",
        "batch",
        0.28,
        True,
    )


# --- end to end: each method trains a few steps through the real entry point --------------------------------------

E2E = {
    "l1_exact": ["reward.name=l1_exact", "reward.l1.alpha=0.01", "eval.budget=32"],
    "l1_max": ["reward.name=l1_max", "reward.l1.alpha=0.01"],
    "shorterbetter": ["reward.name=shorterbetter", "reward.shorterbetter.beta=0.01"],
    "thinkprune": ["reward.name=thinkprune", "reward.thinkprune.round_steps=1"],
    "gfpo": ["-c", "configs/gfpo.yaml", "reward.name=binary"],
    "gfpo_adaptive": ["-c", "configs/gfpo_adaptive.yaml", "reward.name=binary", "loss.gfpo_warmup_steps=1"],
    "dler": ["-c", "configs/dler.yaml"],
}
SIGN = {  # a metric each method writes, proof that it ran
    "l1_exact": "l1/budget_gap",
    "l1_max": "l1/over_budget",
    "shorterbetter": "shorterbetter/sol",
    "thinkprune": "thinkprune/cap",
    "gfpo": "gfpo/kept_length",
    "gfpo_adaptive": "gfpo/keep_mean",
    "dler": "sampling_rounds",
}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(E2E))
def test_each_length_method_trains_end_to_end(method, tmp_path, monkeypatch):
    """Two steps of the shipped toy reasoner (it answers a share right, so rewards vary) through ``groupwise
    train``: the method's own metric is logged, the weights move, and L1 evaluates at a fixed budget."""
    import json

    from app.cli import main

    monkeypatch.setenv("GROUPWISE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / method
    base = ["model.path=builtin:toy-shortcut5", "device=cpu", f"run_dir={run}", "steps=2", "data.prompts_per_step=2"]
    base += ["rollout.max_new_tokens=48", "reward.grade_workers=1", "eval.every=0", "checkpoint.every=0"]
    if method == "l1_exact":
        base += ["eval.every=2", "eval.problems=4", "eval.samples=2"]
    args = ["train", *E2E[method], *base]
    assert main(args) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1]
    assert all(SIGN[method] in r for r in rows)
    if method == "l1_max":
        # the toy reasoner never saw a budget phrase; with one it answered none right in this 2-step run, and a
        # wrong answer earns 0 under l1_max at any length, so no gradient: the run shows the budgets flowing
        assert all(1 <= r["l1/budget"] <= 47 and 0 <= r["l1/over_budget"] <= 1 for r in rows)
    else:
        assert any(r["grad_norm"] > 0 for r in rows), "no step moved the weights"
    if method == "thinkprune":
        assert [r["thinkprune/cap"] for r in rows] == [48, 36]  # a round a step: 48 -> 0.75 x 48
    if method == "gfpo_adaptive":  # step 0 warms up at k 8; step 1 keeps 4, 6 or 8 by quartile
        assert rows[0]["gfpo/keep_mean"] == 8 and "gfpo/difficulty_q50" in rows[1]
        assert 4 <= rows[1]["gfpo/keep_mean"] <= 8
        state = json.loads((run / "checkpoints" / "step-000002" / "state.json").read_text())
        assert state["run"]["gfpo_difficulty"]["steps"] == 2  # the digest is in the checkpoint: exact resume
        assert state["run"]["gfpo_difficulty"]["digest"]["count"] == 4  # two prompts a step
    if method == "l1_exact":
        assert 1 <= rows[0]["l1/budget"] <= 47  # the authors' range scaled to 48 tokens: [1, 47]
        assert (run / "eval.jsonl").is_file()
