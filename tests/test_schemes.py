"""Reward schemes on hand-computed groups (all wrong, all right, equal lengths included)."""

import math
import pickle

import pytest
import torch

from rewards.schemes import ACOER, RewardBatch, build_scheme, efficiency_reward, overlong_penalty


def batch(correct, lengths, group_size, max_new_tokens=100):
    c = torch.tensor(correct, dtype=torch.float64)
    return RewardBatch(
        c,
        torch.ones_like(c),
        torch.tensor(lengths, dtype=torch.float64),
        torch.zeros_like(c),
        group_size,
        max_new_tokens,
    )


def rewards(name, b, **kw):
    return build_scheme(name, **kw)(b)[0]


# lengths 10..40: lam = 0.5 - (L - 10) / 30 = [0.5, 1/6, -1/6, -0.5]
MIXED = batch([1, 0, 1, 0], [10, 20, 30, 40], 4)


def test_binary():
    assert rewards("binary", MIXED).tolist() == [1, 0, 1, 0]


def test_kimi_penalizes_long_incorrect_answers_too():
    assert torch.allclose(rewards("kimi_lp", MIXED), torch.tensor([1.5, 0.0, 1 - 1 / 6, -0.5], dtype=torch.float64))
    all_wrong = rewards("kimi_lp", batch([0, 0, 0, 0], [10, 20, 30, 40], 4))
    assert torch.allclose(all_wrong, torch.tensor([0.0, 0.0, -1 / 6, -0.5], dtype=torch.float64))


def test_correct_lp_never_touches_incorrect_answers():
    assert torch.allclose(rewards("correct_lp", MIXED), torch.tensor([1.5, 0.0, 1 - 1 / 6, 0.0], dtype=torch.float64))
    assert rewards("correct_lp", batch([0] * 4, [10, 20, 30, 40], 4)).tolist() == [0.0] * 4


def test_length_schemes_with_equal_lengths_reduce_to_binary():
    for name in ("kimi_lp", "correct_lp"):
        assert rewards(name, batch([1, 0, 1, 1], [7] * 4, 4)).tolist() == [1, 0, 1, 1]


def test_all_correct_group_with_weight():
    r = build_scheme("correct_lp", weight=0.5)(batch([1] * 4, [10, 20, 30, 40], 4))[0]
    assert torch.allclose(r, torch.tensor([1.25, 1 + 0.5 / 6, 1 - 0.5 / 6, 0.75], dtype=torch.float64))


def test_grpo_lambda_penalizes_only_top_groups_ties_by_index():
    # groups of 2: accuracies 0.5, 1.0, 1.0; ceil(0.2 * 3) = 1 group -> group 1 (tie with 2, lower index)
    b = batch([1, 0, 1, 1, 1, 1], [50, 60, 10, 30, 10, 30], 2)
    r = rewards("grpo_lambda", b)
    sig = lambda z: 1 / (1 + math.exp(-z))
    expected = [1, 0, 1 - 0.2 * sig(-1), 1 - 0.2 * sig(1), 1, 1]  # mean 20, population std 10
    assert torch.allclose(r, torch.tensor(expected, dtype=torch.float64))


def test_efficiency_single_correct_uses_unit_std_and_all_wrong_is_zero():
    r = efficiency_reward(torch.tensor([0.0, 1.0]), torch.tensor([5.0, 9.0]), alpha=0.2)
    assert r.tolist() == pytest.approx([0.0, 0.9])
    assert efficiency_reward(torch.zeros(3), torch.tensor([1.0, 2.0, 3.0]), 0.2).tolist() == [0, 0, 0]


def test_acoer_reward_hand_computed_and_budget_update():
    scheme = ACOER(alpha=0.02, k=5, min_budget=10, initial_budget=100)
    r, m = scheme(batch([1, 1, 1, 0], [50, 100, 150, 20], 4))
    g = math.log(1 + 5 * 0.5) / math.log(6)  # L/B = 0.5
    assert r.tolist() == pytest.approx([1 + 0.02 * g, 1.0, 1.0, 0.0])
    assert m["acoer/budget"] == 100
    assert scheme.budget == pytest.approx(0.85 * 100)  # EMA starts at the first mean correct length, 100


def test_acoer_incorrect_answers_always_zero():
    r, _ = ACOER(initial_budget=100)(batch([0, 0, 0, 0], [1, 50, 100, 400], 4))
    assert r.tolist() == [0, 0, 0, 0]


def test_acoer_controller_up_down_and_clip():
    s = ACOER(alpha=0.1, span=1, warmup=2, window=2, delta=0.02)  # span 1: EMA = last value
    for acc in (0.5, 0.5, 0.5):  # steps 1-3: step 3 is past warm-up with 3 history entries, no drop
        s.update(acc, 10.0)
    assert s.alpha == pytest.approx(0.1 * 1.02)
    s.update(0.4, 10.0)  # drop of 0.1 against two steps earlier
    assert s.alpha == pytest.approx(0.1 * 1.02 * 0.95)
    s.update(0.4, 10.0)  # history [0.5, 0.4, 0.4]: still a drop against two steps earlier
    s.alpha = 0.5
    s.update(0.4, 10.0)  # history [0.4, 0.4, 0.4]: no drop, 0.5 * 1.02 is clipped
    assert s.alpha == 0.5


def test_acoer_state_roundtrip_is_exact():
    a = ACOER(warmup=0, window=1, min_budget=1, initial_budget=64)
    for i in range(5):
        a(batch([1, 0, i % 2, 1], [10 + i, 20, 30, 5], 4, 64))
    b = pickle.loads(pickle.dumps(ACOER(warmup=0, window=1, min_budget=1)))
    b.load_state_dict(a.state_dict())
    nxt = batch([1, 1, 0, 1], [12, 40, 9, 33], 4, 64)
    assert torch.equal(a(nxt)[0], b(nxt)[0]) and a.state_dict() == b.state_dict()


def test_dapo_overlong_penalty_hand_computed():
    p = overlong_penalty(torch.tensor([80.0, 90.0, 100.0, 101.0]), max_tokens=100, cache=20)
    assert p.tolist() == [0.0, -0.5, -1.0, -1.0]


def test_composite_terms_are_added_and_logged():
    b = batch([1, 0], [90, 50], 2)
    r, m = build_scheme("binary", format_weight=0.1, overlong_weight=1.0, overlong_cache=20)(b)
    assert r.tolist() == pytest.approx([1 + 0.1 - 0.5, 0.1])
    assert {"reward/scheme", "reward/format", "reward/overlong"} <= set(m)


def test_unknown_scheme_lists_choices():
    with pytest.raises(KeyError, match="choose from"):
        build_scheme("lengthy")
