"""Adaptive Difficulty GFPO (arXiv 2508.09726 §3.1, Algorithm 2) on hand-computed groups: the t-digest's
quartiles, the bucket and k of each prompt, advantages over the kept set only, the edge cases (none correct,
all correct, ties, a k of the whole group), the state across steps and checkpoints, and every rank agreeing.

Percentiles by hand: with n single difficulties x_1 <= ... <= x_n, x_j sits at rank j - 1/2 and the p-th
percentile is at rank p n / 100, linear between neighbours (numpy's ``method="hazen"``)."""

import json
import random

import numpy as np
import pytest
import torch

from trainer.advantages import gfpo_advantages, gfpo_keep_mask
from trainer.config import ConfigError, load_config, validate
from trainer.difficulty import TDigest, difficulty_keep
from trainer.step_advantages import DIGEST_KEY, step_advantages

K = {"easy": 2, "medium": 3, "hard": 4, "very_hard": 5}  # distinct, so each k names its bucket (G = 8)
G = 8


def group(n_right: int) -> list[float]:
    return [1.0] * n_right + [0.0] * (G - n_right)


def rewards_of(*n_right: int) -> torch.Tensor:
    return torch.tensor([r for n in n_right for r in group(n)], dtype=torch.float64)


def warm_state():
    """One warmup step over difficulties 1/8, 3/8, 5/8, 7/8: every prompt keeps k_very_hard."""
    k, state, _ = difficulty_keep(rewards_of(1, 3, 5, 7), G, K, None, warmup_steps=1)
    assert k.tolist() == [5, 5, 5, 5] and state["steps"] == 1
    return state


# --- the t-digest ---------------------------------------------------------------------------------------------


def test_digest_quartiles_by_hand_and_exact_for_small_counts():
    d = TDigest()
    for x in (0.125, 0.375, 0.625, 0.875):
        d.add(x)
    # ranks 0.5 1.5 2.5 3.5; q25 at rank 1: halfway 0.125 -> 0.375; q50 at 2; q75 at 3
    assert d.percentiles([25, 50, 75]) == pytest.approx([0.25, 0.5, 0.75])
    assert d.percentiles([0, 100]) == [0.125, 0.875]  # the ends are the minimum and maximum
    rng = random.Random(1)
    xs = [rng.random() for _ in range(57)]
    d = TDigest()
    for x in xs:
        d.add(x)
    assert d.percentiles([25, 50, 75]) == pytest.approx(np.percentile(xs, [25, 50, 75], method="hazen").tolist())


def test_digest_stays_small_and_close_on_a_long_stream():
    rng = random.Random(0)
    xs = [rng.random() ** 2 for _ in range(20000)]
    d = TDigest(100)
    for x in xs:
        d.add(x)
    assert d.percentiles([25, 50, 75]) == pytest.approx(np.percentile(xs, [25, 50, 75]).tolist(), abs=0.005)
    assert len(d.centroids) <= 60  # about delta/2 centroids, not 20000
    with pytest.raises(ValueError, match="finite"):
        d.add(float("nan"))


# --- Algorithm 2: bucket and k per prompt ---------------------------------------------------------------------


def test_quartile_assignment_and_k_per_bucket_by_hand():
    # after the warmup step the digest holds 1/8 3/8 5/8 7/8; this step's groups run through Algorithm 2 in order
    # (update, then quartiles of everything seen, then the bucket with a strict <):
    #  mu 0 (none right): {0, 1/8, 3/8, 5/8, 7/8}, q25 at rank 1.25 = 0 + 0.75 x 1/8 = 0.09375; 0 < q25: very hard
    #  mu 1 (all right): 6 points, q75 at rank 4.5 = 7/8; 1 >= q75: easy
    #  mu 1/2: 7 points, q25 0.1875, q50 at rank 3.5 = 1/2, q75 at 5.25 = 0.8125; 1/2 is not < q50: medium
    #  mu 1/4: 8 points, q25 at rank 2 = (1/8 + 1/4)/2 = 0.1875, q50 at 4 = (3/8 + 1/2)/2 = 0.4375: hard
    k, state, m = difficulty_keep(rewards_of(0, 8, 4, 2), G, K, warm_state(), warmup_steps=1)
    assert k.tolist() == [5, 2, 3, 4]
    assert state["steps"] == 2 and state["digest"]["count"] == 8
    assert (m["gfpo/difficulty_q25"], m["gfpo/difficulty_q50"], m["gfpo/difficulty_q75"]) == pytest.approx(
        (0.1875, 0.4375, 0.75)
    )
    assert m["gfpo/keep_mean"] == pytest.approx(3.5)


def test_a_difficulty_equal_to_a_quartile_goes_to_the_easier_bucket():
    # digest {1/8, 3/8, 5/8, 7/8} + mu 1/8: 5 points, q25 at rank 1.25 = 1/8 (x1 = x2 = 1/8); 1/8 < 1/8 is false,
    # q50 at rank 2.5 = 3/8: hard, not very hard (Algorithm 2's strict <)
    k, _, _ = difficulty_keep(rewards_of(1), G, K, warm_state(), warmup_steps=1)
    assert k.tolist() == [4]


def test_warmup_keeps_k_very_hard_for_every_prompt_then_adapts():
    state = None
    for step in range(3):
        k, state, m = difficulty_keep(rewards_of(0, 8, 4, 2), G, K, state, warmup_steps=2)
        if step < 2:
            assert k.tolist() == [5, 5, 5, 5] and "gfpo/difficulty_q25" not in m
    assert k.tolist() != [5, 5, 5, 5] and state["digest"]["count"] == 12


def test_a_k_of_the_whole_group_or_more_keeps_it_all():
    big = {b: 99 for b in K}
    k, _, _ = difficulty_keep(rewards_of(3), G, big, None, warmup_steps=0)
    assert k.tolist() == [G]
    kept = gfpo_keep_mask(rewards_of(3), torch.arange(G, dtype=torch.float64), G, k, "length")
    assert kept.all()  # GRPO on that group


def test_bad_keep_names_fail():
    with pytest.raises(ValueError, match="very_hard"):
        difficulty_keep(rewards_of(3), G, {"easy": 2}, None, warmup_steps=0)


# --- the filter with k per group, and advantages over the kept set ------------------------------------------------


def test_advantages_over_each_groups_own_k_zero_elsewhere():
    # the four groups of the hand example, k = 5 2 3 4
    r = rewards_of(0, 8, 4, 2)
    L = torch.tensor(
        [10.0] * 8  # none right: all tie at 10, the 5 lowest indices kept
        + [40, 30, 20, 10, 50, 60, 70, 80]  # all right: the 2 shortest (indices 3, 2)
        + [10, 20, 30, 40, 15, 25, 35, 45]  # rewards 1 1 1 1 0 0 0 0: shortest 3 are i0 (1), i4 (0), i1 (1)
        + [50, 10, 20, 30, 40, 60, 70, 80]  # rewards 1 1 0 ...: shortest 4 are i1 (1), i2, i3, i4 (0); i0 right, cut
    )
    kept = gfpo_keep_mask(r, L, G, torch.tensor([5, 2, 3, 4]), "length").view(4, G)
    assert kept[0].tolist() == [True] * 5 + [False] * 3
    assert kept[1].nonzero().view(-1).tolist() == [2, 3]
    assert kept[2].nonzero().view(-1).tolist() == [0, 1, 4]
    assert kept[3].nonzero().view(-1).tolist() == [1, 2, 3, 4]
    adv = gfpo_advantages(r, kept.view(-1), G, eps=0.0).view(4, G)
    assert adv[0].tolist() == [0.0] * G and adv[1].tolist() == [0.0] * G  # none right / all right: no signal
    # group 3, kept 1 1 0: mean 2/3, unbiased std sqrt(1/3)
    s = (1 / 3) ** 0.5
    assert adv[2].tolist() == pytest.approx([(1 / 3) / s, (1 / 3) / s, 0, 0, -(2 / 3) / s, 0, 0, 0])
    # group 4, kept 1 0 0 0: mean 1/4, std sqrt((9/16 + 3/16)/3) = 1/2; the long right answer i0 gets 0
    assert adv[3].tolist() == pytest.approx([0, 1.5, -0.5, -0.5, -0.5, 0, 0, 0])


def test_a_single_k_still_works_as_before():
    r, L = rewards_of(4), torch.tensor([10.0, 20, 30, 40, 15, 25, 35, 45])
    one = gfpo_keep_mask(r, L, G, 3, "length")
    assert one.tolist() == gfpo_keep_mask(r, L, G, torch.tensor([3]), "length").tolist()
    assert one.nonzero().view(-1).tolist() == [0, 1, 4]


# --- state across steps, checkpoints and ranks --------------------------------------------------------------------


def test_state_round_trips_through_json_and_continues_exactly():
    rng = random.Random(3)
    steps = [rewards_of(*(rng.randrange(G + 1) for _ in range(16))) for _ in range(8)]  # 128 difficulties
    straight, saved = None, None
    for i, r in enumerate(steps):
        k1, straight, _ = difficulty_keep(r, G, K, straight, warmup_steps=2)
        k2, saved, _ = difficulty_keep(r, G, K, json.loads(json.dumps(saved)), warmup_steps=2)  # a resume each step
        assert k1.tolist() == k2.tolist(), f"step {i}"
    assert json.loads(json.dumps(saved)) == straight  # the digest after merging, exactly


def test_every_rank_computes_the_same_digest_and_its_own_rows():
    cfg = load_config(["configs/gfpo_adaptive.yaml"], ["loss.gfpo_warmup_steps=0", "data.prompts_per_step=4"])
    rng = random.Random(5)
    r = torch.tensor([float(rng.random() < 0.5) for _ in range(4 * 16)], dtype=torch.float64)
    L = torch.tensor([float(rng.randrange(5, 90)) for _ in range(4 * 16)])
    runs = [{}, {}]
    out = [step_advantages(cfg, r, L, rank, 32, runs[rank]) for rank in (0, 1)]
    assert runs[0][DIGEST_KEY] == runs[1][DIGEST_KEY] and runs[0][DIGEST_KEY]["steps"] == 1
    assert out[0][2] == out[1][2]  # metrics from the global batch
    whole = {}
    adv, kept, _ = step_advantages(cfg, r, L, 0, 64, whole)  # one rank holding the whole batch
    assert torch.equal(torch.cat([out[0][0], out[1][0]]), adv) and torch.equal(torch.cat([out[0][1], out[1][1]]), kept)


# --- config -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.gfpo_adaptive=true", "loss.gfpo_keep=8"], "set loss.gfpo_keep=0 for adaptive GFPO"),
        (["loss.gfpo_adaptive=true", "loss.adv_norm=batch"], "set loss.adv_norm=group"),
        (["loss.gfpo_adaptive=true", "loss.gfpo_k_easy=16"], r"loss.gfpo_k_easy=16 must be < rollout.group_size=16"),
        (["loss.gfpo_adaptive=true", "loss.gfpo_k_hard=1"], "gfpo_k_hard"),
    ],
)
def test_bad_adaptive_settings_fail_at_load_with_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(load_config(None, overrides), world_size=1)


def test_the_recipe_loads_on_top_of_another_config_with_the_papers_k():
    c = load_config(["configs/smoke.yaml", "configs/gfpo.yaml", "configs/gfpo_adaptive.yaml"]).loss
    assert (c.gfpo_keep, c.gfpo_adaptive, c.gfpo_metric) == (0, True, "length")
    assert (c.gfpo_k_easy, c.gfpo_k_medium, c.gfpo_k_hard, c.gfpo_k_very_hard) == (4, 6, 8, 8)
