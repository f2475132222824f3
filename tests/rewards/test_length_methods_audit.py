"""An independent audit of issue 36's length methods: each expected number is worked by hand from the paper's
equation or the authors' released code (named beside it), not from our implementation. L1 (cmu-l3/l1
math_reward.py; arXiv 2503.04697 Eqs. 1-2), ShorterBetter (JingyangYi/ShorterBetter
verl/workers/reward_manager/naive.py sb_compute_score), ThinkPrune (UCSB-NLP-Chang/ThinkPrune local_scripts),
DLER (arXiv 2510.15110 §3 with the REINFORCE++-baseline whitening of verl core_algos) and GFPO (arXiv
2508.09726 Eq. 2)."""

import math

import pytest
import torch
from support.reward_batches import reward_batch, scheme_rewards

from rewards.pool import Grade
from rollout.base import Completion
from rollout.data import Example
from trainer.advantages import batch_std_advantages, gfpo_advantages, gfpo_keep_mask, group_advantages
from trainer.config import load_config
from trainer.sampling import Group, tied


def batch(correct, lengths, group_size, truncated=None, budgets=None, max_new_tokens=4096):
    return reward_batch(correct, lengths, group_size, truncated, budgets, max_new_tokens)


rewards = scheme_rewards


# --- L1 / LCPO-Exact: math_reward_fn(linear_reward=True) = c + (1 - a|L - n|) - 1, a = 0.0003 --------------------


def test_l1_exact_hand_group_with_a_truncated_answer_and_no_clipping():
    # n = 2000. L 2000 right: 1. L 2500 right: 1 - 0.15 = 0.85. L 1200 right: 1 - 0.24 = 0.76. L 2000 wrong: 0.
    # L 4096 (truncated; the authors count verl's valid_response_length, the cut length) right: 1 - 0.6288.
    b = batch([1, 1, 1, 0, 1], [2000, 2500, 1200, 2000, 4096], 5, truncated=[0, 0, 0, 0, 1], budgets=[2000] * 5)
    assert rewards("l1_exact", b) == pytest.approx([1.0, 0.85, 0.76, 0.0, 0.3712])
    # no clip anywhere in get_delta_score_linear: a wrong answer 3996 tokens off its budget earns -1.1988
    far = batch([0, 0], [4096, 100], 2, budgets=[100, 100])
    assert rewards("l1_exact", far) == pytest.approx([-1.1988, 0.0])


def test_l1_exact_no_correct_answer_still_orders_by_budget_gap():
    b = batch([0, 0, 0], [300, 500, 900], 3, budgets=[500] * 3)
    assert rewards("l1_exact", b) == pytest.approx([-0.06, 0.0, -0.12])


# --- L1 / LCPO-Max, Eq. 2: r = c * clip(alpha (n - L) + delta, 0, 1), alpha = 0.0003, delta = 0.5 -------------------


def test_l1_max_is_the_papers_equation_2_at_the_papers_constants():
    # n = 1000: L 1000 -> 0.5; L 0 -> 0.8; L 500 -> 0.65; L 2000 -> 0.2; L 2700 -> clip(-0.01) = 0; wrong -> 0
    b = batch([1, 1, 1, 1, 1, 0], [1000, 0, 500, 2000, 2700, 500], 6, budgets=[1000] * 6)
    assert rewards("l1_max", b) == pytest.approx([0.5, 0.8, 0.65, 0.2, 0.0, 0.0])
    # saturates at 1 once alpha (n - L) >= 1 - delta: n 4000, L 100 -> 1.67 -> 1
    assert rewards("l1_max", batch([1], [100], 1, budgets=[4000])) == pytest.approx([1.0])


def test_l1_max_equals_the_authors_code_with_alpha_halved():
    # get_delta_score_linear_both(-n, L, a) = (clip(a (n - L), -1, 1) + 1)/2; times c (multiplier_reward)
    a, n = 0.002, 800
    lengths = [0, 300, 800, 1100, 1300, 2000]
    code = [(max(-1.0, min(1.0, a * (n - L))) + 1) / 2 for L in lengths]
    b = batch([1] * 6, lengths, 6, budgets=[n] * 6)
    assert rewards("l1_max", b, alpha=a / 2, delta=0.5) == pytest.approx(code)


def test_l1_config_defaults_are_the_papers():
    cfg = load_config(None, ["reward.name=l1_max"])
    assert (cfg.reward.l1.alpha, cfg.reward.l1.delta) == (0.0003, 0.5)


# --- ShorterBetter: sb_compute_score = alpha 1[correct] - beta |L - SOL|, alpha 2.0, beta 0.001 --------------------


def test_shorterbetter_hand_groups_from_the_authors_reward_manager():
    # group 1: SOL = 500 (shortest correct); group 2: none correct, SOL = mean(100, 200, 600, 300) = 300
    b = batch([1, 1, 0, 0, 0, 0, 0, 0], [500, 800, 300, 1000, 100, 200, 600, 300], 4)
    assert rewards("shorterbetter", b) == pytest.approx([2.0, 1.7, -0.2, -0.5, -0.2, -0.1, -0.3, 0.0])


def test_shorterbetter_all_correct_and_a_truncated_length_counted_as_cut():
    # all correct: SOL = 400; the truncated 4096 counts its cut length (valid_response_length), nothing special
    b = batch([1, 1, 1, 0], [400, 400, 900, 4096], 4, truncated=[0, 0, 0, 1])
    assert rewards("shorterbetter", b) == pytest.approx([2.0, 2.0, 1.5, -3.696])


# --- ThinkPrune: 4k -> 3k -> 2k; over the limit earns 0 ------------------------------------------------------------


def test_thinkprune_at_a_3k_cap():
    b = batch([1, 1, 0, 1], [3000, 3001, 10, 2999], 4)
    assert rewards("thinkprune", b, cap=3000) == [1.0, 0.0, 0.0, 1.0]


# --- DLER: truncation penalty, batch-wise normalization, dynamic sampling on reward ties -------------------------


def test_dler_reward_is_zero_when_truncated_even_if_right():
    b = batch([1, 1, 0, 0], [50, 4096, 4096, 10], 4, truncated=[0, 1, 1, 0])
    assert rewards("dler", b) == [1.0, 0.0, 0.0, 0.0]


def test_dler_batch_whitening_over_tokens_by_hand():
    # group 1 rewards [1, 0] (means 0.5): a = [0.5, -0.5], L = [10, 30]; group 2 tied [1, 1]: a = [0, 0], L 20, 20.
    # token mean = (10*0.5 - 30*0.5)/80 = -0.125; token var (Bessel over 80 tokens) =
    # (10*0.625^2 + 30*0.375^2 + 40*0.125^2)/79 = 8.75/79
    r = torch.tensor([1.0, 0.0, 1.0, 1.0])
    L = torch.tensor([10, 30, 20, 20])
    std = math.sqrt(8.75 / 79)
    expected = [0.625 / std, -0.375 / std, 0.125 / std, 0.125 / std]
    assert batch_std_advantages(r, 2, eps=0.0, lengths=L).tolist() == pytest.approx(expected)
    # one token per row: the per-sequence form (mean 0; unbiased std over the 4 rows, sqrt(0.5/3))
    eq = batch_std_advantages(r, 2, eps=0.0, lengths=torch.tensor([1, 1, 1, 1]))
    assert eq.tolist() == pytest.approx([0.5 / math.sqrt(0.5 / 3), -0.5 / math.sqrt(0.5 / 3), 0.0, 0.0])


def test_dler_batch_whitening_of_an_all_tied_batch_is_zero():
    adv = batch_std_advantages(torch.tensor([0.0, 0, 1, 1]), 2, lengths=torch.tensor([5, 9, 7, 3]))
    assert adv.tolist() == [0.0] * 4


def group(correct, finish):
    comps = [Completion([1], [2], [0.0], f, "") for f in finish]
    return Group(Example("x", "1 + 1 = ?", "2"), comps, [Grade(c, "2" if c else None) for c in correct])


def test_dler_dynamic_sampling_drops_reward_ties_not_correctness_ties():
    # all right, one truncated: rewards [1, 0, 1] vary -> DLER keeps it; correctness ties -> DAPO drops it
    g = group([True, True, True], ["stop", "length", "stop"])
    assert not tied(g, "dler") and tied(g, "grpo")
    # right but truncated beside a wrong answer: rewards [0, 0] tie -> DLER drops; correctness varies -> DAPO keeps
    g = group([True, False], ["length", "stop"])
    assert tied(g, "dler") and not tied(g, "grpo")
    # all right, all truncated: rewards all 0 -> dropped by both
    g = group([True, True], ["length", "length"])
    assert tied(g, "dler") and tied(g, "grpo")
    # a plain informative group is kept by both
    g = group([True, False], ["stop", "stop"])
    assert not tied(g, "dler") and not tied(g, "grpo")


# --- GFPO, Eq. 2: keep k of G by the metric; A = (r - mean_S r)/std_S r on S, 0 elsewhere -------------------------


def test_gfpo_length_filter_ties_and_token_efficiency():
    r = torch.tensor([1.0, 1, 0, 1])
    L = torch.tensor([30, 10, 20, 10])
    assert gfpo_keep_mask(r, L, 4, 2, "length").tolist() == [False, True, False, True]  # the two 10s
    assert gfpo_keep_mask(r, L, 4, 3, "length").tolist() == [False, True, True, True]
    # reward per token: 1/50, 1/20, 0/5, 1/40 -> the two best are rows 1 and 3
    eff = gfpo_keep_mask(r, torch.tensor([50, 20, 5, 40]), 4, 2, "token_efficiency")
    assert eff.tolist() == [False, True, False, True]


def test_gfpo_advantages_normalize_over_the_kept_set_only():
    # kept rewards [1, 0, 1]: mean 2/3, deviations [1/3, -2/3, 1/3], unbiased std sqrt((1/9+4/9+1/9)/2) = sqrt(1/3)
    r = torch.tensor([1.0, 0, 1, 1])
    kept = torch.tensor([True, True, True, False])
    s = math.sqrt(1 / 3)
    adv = gfpo_advantages(r, kept, 4, eps=0.0)
    assert adv.tolist() == pytest.approx([(1 / 3) / s, (-2 / 3) / s, (1 / 3) / s, 0.0])
    # a kept set whose rewards tie (even if the group does not) gets exactly 0, and so does k = 1
    assert gfpo_advantages(r, torch.tensor([True, False, True, True]), 4).tolist() == [0.0] * 4
    assert gfpo_advantages(r, torch.tensor([False, True, False, False]), 4).tolist() == [0.0] * 4


def test_grpo_groups_that_tie_get_exactly_zero():
    assert group_advantages(torch.tensor([0.7, 0.7, 0.7, 1.0, 0.0, 0.5]), 3)[:3].tolist() == [0.0] * 3
