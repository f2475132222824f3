"""The lab's paired statistics (toylab/stats.py) on hand-computed cases."""

import pytest
import torch

from toylab.stats import Arm, mean_ci, paired


def arm(acc, tok):
    return Arm(torch.tensor(acc, dtype=torch.float32), torch.tensor(tok, dtype=torch.float32))


def test_identical_arms_differ_by_exactly_zero():
    a = arm([[0.25, 1.0, 0.5], [0.0, 0.75, 1.0]], [[30.0, 40.0, 50.0], [35.0, 45.0, 55.0]])
    p = paired(a, a, n_boot=500)
    assert (p.d_accuracy, p.d_accuracy_ci, p.d_tokens_pct, p.d_tokens_pct_ci) == (0.0, (0.0, 0.0), 0.0, (0.0, 0.0))


def test_a_constant_shift_is_exact_whatever_is_resampled():
    # every problem 10 points more accurate and every length halved: each resample sees the same effect
    b = arm([[0.2, 0.5, 0.7], [0.1, 0.3, 0.9]], [[20.0, 40.0, 60.0], [30.0, 50.0, 10.0]])
    a = arm((b.accuracy + 0.1).tolist(), (b.tokens / 2).tolist())
    p = paired(a, b, n_boot=500)
    assert p.d_accuracy == pytest.approx(10.0, abs=1e-4)
    assert p.d_accuracy_ci == pytest.approx((10.0, 10.0), abs=1e-4)
    assert p.d_tokens_pct == pytest.approx(-50.0, abs=1e-4)
    assert p.d_tokens_pct_ci == pytest.approx((-50.0, -50.0), abs=1e-4)


def test_the_seed_stage_is_resampled():
    # seed 0: no effect; seed 1: +20 points on every problem. Resampling two seeds gives 0 (1/4), 10 (1/2) or
    # 20 points (1/4), so the 95% interval is [0, 20] and the point estimate 10.
    b = arm([[0.5, 0.5], [0.5, 0.5]], [[10.0, 10.0], [10.0, 10.0]])
    a = arm([[0.5, 0.5], [0.7, 0.7]], [[10.0, 10.0], [10.0, 10.0]])
    p = paired(a, b, n_boot=4000)
    assert p.d_accuracy == pytest.approx(10.0, abs=1e-4)
    assert p.d_accuracy_ci == pytest.approx((0.0, 20.0), abs=1e-4)


def test_the_problem_stage_is_resampled_and_paired():
    # one seed; the effect is +100 points on one problem of two and 0 on the other: resampled problems give
    # 0, 50 or 100 points with probabilities 1/4, 1/2, 1/4
    b = arm([[0.0, 0.0]], [[10.0, 10.0]])
    a = arm([[1.0, 0.0]], [[10.0, 10.0]])
    p = paired(a, b, n_boot=4000)
    assert p.d_accuracy == pytest.approx(50.0)
    assert p.d_accuracy_ci == pytest.approx((0.0, 100.0))


def test_token_change_is_a_ratio_of_means_not_a_mean_of_ratios():
    b = arm([[0.0, 0.0]], [[10.0, 90.0]])
    a = arm([[0.0, 0.0]], [[20.0, 80.0]])  # 100 tokens both: no change, though the per-problem ratios average +44%
    assert paired(a, b, n_boot=200).d_tokens_pct == pytest.approx(0.0, abs=1e-4)


def test_mean_ci_of_one_arm():
    m, lo, hi = mean_ci(torch.tensor([[0.2, 0.2], [0.4, 0.4]]), n_boot=4000)
    assert m == pytest.approx(0.3)
    assert (lo, hi) == pytest.approx((0.2, 0.4))


def test_arms_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="arms differ in shape"):
        paired(arm([[0.0, 1.0]], [[1.0, 1.0]]), arm([[0.0]], [[1.0]]))
