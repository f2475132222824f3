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


def test_acoer_reward_hand_computed_and_budget_frozen_during_warmup():
    scheme = ACOER(alpha=0.02, k=5, min_budget=10, initial_budget=100)
    r, m = scheme(batch([1, 1, 1, 0], [50, 100, 150, 20], 4))
    g = math.log(1 + 5 * 0.5) / math.log(6)  # L/B = 0.5
    assert r.tolist() == pytest.approx([1 + 0.02 * g, 1.0, 1.0, 0.0])
    assert m["acoer/budget"] == 100
    assert scheme.budget == 100  # the authors recompute B only in the adaptation step, after warm-up


def test_acoer_initial_budget_is_half_the_completion_limit():
    """The authors' max_thinking_tokens 4096 with max_completion_length 8192: half of it."""
    scheme = ACOER()
    _, m = scheme(batch([1, 0], [10, 20], 2, max_new_tokens=8192))
    assert m["acoer/budget"] == 4096


def test_acoer_controller_hand_computed():
    """span 1 (EMA = last value), warmup 2, window 3: adaptation from step index 2 once 3 values are held,
    comparing with history[-3], two steps back; the budget moves only in adaptation steps."""
    s = ACOER(alpha=0.1, span=1, warmup=2, window=3, delta=0.25, min_budget=1, initial_budget=50, gamma=0.5)
    s.update(0.5, 10.0)  # index 0: warm-up
    s.update(0.5, 12.0)  # index 1: warm-up
    assert (s.alpha, s.budget) == (0.1, 50)
    s.update(0.5, 14.0)  # index 2: history [0.5, 0.5, 0.5], no drop -> up; B = 0.5 * 14
    assert s.alpha == pytest.approx(0.102) and s.budget == pytest.approx(7.0)
    s.update(0.125, 16.0)  # history [0.5, 0.5, 0.125]: drop 0.375 > 0.25 against two steps back -> down
    assert s.alpha == pytest.approx(0.102 * 0.95) and s.budget == pytest.approx(8.0)
    s.update(0.25, 16.0)  # history [0.5, 0.125, 0.25]: a drop of exactly delta is not > delta -> up
    assert s.alpha == pytest.approx(0.102 * 0.95 * 1.02)
    s.alpha = 0.5
    s.update(0.25, 16.0)  # history [0.125, 0.25, 0.25]: no drop, 0.5 * 1.02 clipped to alpha_max
    assert s.alpha == 0.5


def test_acoer_step_without_correct_answers_zero_or_skip():
    zero = ACOER(span=1, warmup=0, window=1, min_budget=1, gamma=1.0, initial_budget=50)  # the authors' rule
    zero.update(0.0, None)
    assert zero.ema_len == 0.0 and zero.budget == 50  # a zero EMA leaves B where it was (their > 0 guard)
    zero.update(0.5, 8.0)
    assert zero.budget == pytest.approx(8.0)
    s51 = ACOER(span=50, warmup=0, window=1, min_budget=1, gamma=1.0, initial_budget=50)
    s51.update(0.5, 10.0)
    s51.update(0.0, None)
    assert s51.ema_len == pytest.approx(10.0 * (1 - 2 / 51))  # 0 fed into the EMA shrinks it
    skip = ACOER(span=50, warmup=0, window=1, min_budget=1, gamma=1.0, initial_budget=50, empty_step="skip")
    skip.update(0.5, 10.0)
    skip.update(0.0, None)
    assert skip.ema_len == 10.0


class AuthorsACOER:
    """The authors' ACOERReward control flow (js-lee-AI/ACOER, acoer/reward.py), restated for this test in
    their units: lengths in characters (4 per token), budget in characters, min_budget * 4, history trimmed
    to 2 x window, adaptation after the warm-up and window early returns, history[-window]."""

    def __init__(self, warmup, window, span=50, max_thinking_tokens=4096, min_budget=512):
        self.alpha, self.warmup, self.window, self.min_budget = 0.02, warmup, window, min_budget
        self.decay, self.ema_acc, self.ema_len, self.hist = 2 / (span + 1), None, None, []
        self.budget_chars, self.step = max_thinking_tokens * 4, 0

    def __call__(self, correct, lengths_tokens):
        out, lens = [], []
        for c, n in zip(correct, lengths_tokens):
            if not c:
                out.append(0.0)
                continue
            lens.append(4 * n)
            x = min(4 * n / self.budget_chars, 1.0)
            out.append(1.0 + self.alpha * math.log(1 + 5 * (1 - x)) / math.log(6))
        acc, mean_len = sum(correct) / len(correct), (sum(lens) / len(lens) if lens else 0.0)
        if self.ema_acc is None:
            self.ema_acc, self.ema_len = acc, mean_len
        else:
            self.ema_acc = self.decay * acc + (1 - self.decay) * self.ema_acc
            self.ema_len = self.decay * mean_len + (1 - self.decay) * self.ema_len
        self.hist = [*self.hist, self.ema_acc][-2 * self.window :]
        if self.step >= self.warmup and len(self.hist) >= self.window:
            drop = self.hist[-self.window] - self.ema_acc
            self.alpha = max(0.01, self.alpha * 0.95) if drop > 0.02 else min(0.5, self.alpha * 1.02)
            if self.ema_len > 0:
                self.budget_chars = max(self.min_budget * 4, self.ema_len * 0.85)
        self.step += 1
        return out


def test_acoer_matches_the_authors_control_flow_over_many_steps():
    g = torch.Generator().manual_seed(0)
    ours = ACOER(warmup=6, window=4, min_budget=20)
    theirs = AuthorsACOER(warmup=6, window=4, max_thinking_tokens=100, min_budget=20)
    for step in range(40):
        p = 0.9 if step < 15 else 0.2  # accuracy falls mid-way: alpha must come down
        correct = (torch.rand(16, generator=g) < p).float()
        if step == 20:
            correct.zero_()  # a step without a correct answer
        lengths = torch.randint(5, 200, (16,), generator=g).double()
        r, _ = ours(RewardBatch(correct.double(), torch.ones(16), lengths, torch.zeros(16), 16, 200))
        expected = theirs(correct.tolist(), lengths.tolist())
        assert r.tolist() == pytest.approx(expected, rel=1e-12), step
        assert ours.alpha == pytest.approx(theirs.alpha, rel=1e-12)
        assert ours.budget == pytest.approx(theirs.budget_chars / 4, rel=1e-12)
    assert ours.alpha < 0.02 * 1.02**10  # the fall was seen


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


def truncated_batch(correct, lengths, truncated, group_size):
    b = batch(correct, lengths, group_size)
    b.truncated = torch.tensor(truncated, dtype=torch.float64)
    return b


def test_arora_zanette_check_eos_hand_computed():
    """The authors' check_eos: the truncated correct answer (length 100) gets 0 and is not in the statistic;
    the remaining correct lengths 10, 30 have mean 20 and population std 10."""
    sig = lambda z: 1 / (1 + math.exp(-z))
    b = truncated_batch([1, 1, 1, 0], [10, 30, 100, 50], [0, 0, 1, 0], 4)
    r = rewards("arora_zanette", b)
    assert r.tolist() == pytest.approx([1 - 0.2 * sig(-1), 1 - 0.2 * sig(1), 0.0, 0.0])
    # the option off: the truncated answer is correct and in the statistic (mean 140/3, population std)
    r = rewards("arora_zanette", b, eos_required=False)
    mean = 140 / 3
    std = math.sqrt(((10 - mean) ** 2 + (30 - mean) ** 2 + (100 - mean) ** 2) / 3)
    assert r.tolist() == pytest.approx([1 - 0.2 * sig((L - mean) / std) for L in (10, 30, 100)] + [0.0])


def test_grpo_lambda_top_group_uses_check_eos_and_others_stay_binary():
    b = truncated_batch([1, 1, 1, 1, 1, 0], [10, 30, 100, 50, 60, 70], [0, 0, 1, 1, 0, 0], 3)
    r = rewards("grpo_lambda", b, top_fraction=0.5)  # ceil(0.5 * 2) = 1 group: the first (accuracy 1.0)
    sig = lambda z: 1 / (1 + math.exp(-z))
    assert r.tolist() == pytest.approx([1 - 0.2 * sig(-1), 1 - 0.2 * sig(1), 0.0, 1.0, 1.0, 0.0])


def test_kimi_length_warmup_then_penalty():
    scheme = build_scheme("kimi_lp", warmup=2)
    first = [scheme(MIXED)[0].tolist() for _ in range(2)]
    assert first == [[1.0, 0.0, 1.0, 0.0]] * 2  # steps 0 and 1: plain 0/1
    assert scheme(MIXED)[0].tolist() == pytest.approx([1.5, 0.0, 1 - 1 / 6, -0.5])  # lam if correct, min(0, lam) if not
    state = scheme.state_dict()
    again = build_scheme("kimi_lp", warmup=2)
    again.load_state_dict(state)
    assert torch.equal(again(MIXED)[0], scheme(MIXED)[0])  # the phase survives a resume


def test_dapo_task_reward_plus_minus_one_with_overlong():
    """DAPO Eq. 10 + 13: +1 / -1, then the soft overlong term in [-1, 0] (L_max 100, L_cache 20)."""
    b = batch([1, 0, 1, 0], [50, 50, 90, 100], 4)
    r = rewards("binary", b, incorrect=-1.0, overlong_weight=1.0, overlong_cache=20)
    assert r.tolist() == pytest.approx([1.0, -1.0, 1.0 - 0.5, -1.0 - 1.0])


def test_penalty_scale_leaves_the_task_reward_alone():
    scheme = build_scheme("binary", incorrect=-1.0)
    scheme.penalty_scale = 0.5
    assert scheme(MIXED)[0].tolist() == [1.0, -1.0, 1.0, -1.0]
    az = build_scheme("arora_zanette")
    az.penalty_scale = 0.5
    r = az(truncated_batch([1, 1, 1, 0], [10, 30, 100, 50], [0, 0, 1, 0], 4))[0]
    sig = lambda z: 1 / (1 + math.exp(-z))
    assert r.tolist() == pytest.approx([1 - 0.1 * sig(-1), 1 - 0.1 * sig(1), 0.0, 0.0])


def test_every_registered_scheme_is_configured_and_built_from_its_own_module():
    """A scheme module's knobs are the ``reward.<section>.*`` keys (declared torch-free with the config), with
    their ranges and docs, and the config builds it; a scheme's defaults are its knobs' defaults."""
    from rewards.schemes import SCHEMES, scheme_from_config
    from trainer.config import Config, RewardConfig, describe_fields, load_config

    docs = {r.key: r.doc for r in describe_fields()}
    for name, cls in SCHEMES.items():
        reward = load_config(None, [f"reward.name={name}"]).reward
        built = scheme_from_config(reward).scheme
        assert type(built) is cls
        assert vars(built) == vars(cls()), f"{name}: class defaults differ from its config knobs' defaults"
        module = cls.__module__.rsplit(".", 1)[-1]
        if cls.section is None:  # a scheme without knobs (dler): its module declares no section either
            assert module not in RewardConfig.model_fields and not vars(built), f"{name}: knobs without a section"
            continue
        assert cls.section in RewardConfig.model_fields, f"{name}: reward.{cls.section} is not declared"
        assert cls.section == module, f"{name}: one section per scheme module"
        for knob in type(getattr(reward, cls.section)).model_fields:
            assert docs.get(f"reward.{cls.section}.{knob}"), f"reward.{cls.section}.{knob} has no doc"
    assert Config().reward.acoer.alpha == 0.02  # a sectioned scheme's knobs keep their section
