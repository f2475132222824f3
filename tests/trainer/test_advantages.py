import math

import pytest
import torch

from trainer.advantages import group_advantages, zero_variance_share


def test_group_normalization_hand_computed():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    adv = group_advantages(r, group_size=4)
    z = 0.5 / math.sqrt(1 / 3)  # |r - 0.5| / unbiased std sqrt(1/3)
    assert adv.dtype == torch.float64  # kept in float64 until the loss (README: Advantages)
    assert torch.allclose(
        adv[:4], torch.tensor([z, -z, -z, z], dtype=torch.float64) / (1 + 1e-6 / math.sqrt(1 / 3)), atol=1e-12
    )
    assert torch.equal(adv[4:], torch.zeros(4))  # tied group: exactly zero


def test_without_std_scaling_is_centered_reward():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25], dtype=torch.float64)
    assert torch.equal(group_advantages(r, 4, scale_std=False), expected)


def test_tied_non_representable_rewards_are_exactly_zero():
    r = torch.full((16,), 0.1)  # mean of 16 x 0.1 is not exactly 0.1 in floating point
    assert torch.count_nonzero(group_advantages(r, 16)) == 0
    assert zero_variance_share(torch.cat([r, torch.arange(16.0)]), 16) == 0.5


def test_bad_rewards_raise():
    with pytest.raises(ValueError, match="divisible"):
        group_advantages(torch.zeros(5), 4)
    with pytest.raises(ValueError, match="NaN"):
        group_advantages(torch.tensor([0.0, float("nan")]), 2)
