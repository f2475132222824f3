"""Token-budget micro-batches: the packing itself, and the learner's update being independent of it."""

import pytest
import torch
from support.helpers import fixed_batch, make_config, step_gradients

from rollout.base import Completion, collate
from trainer import dist
from trainer.learner import Learner
from trainer.micro_batches import pack_by_tokens, padded_tokens, plan_micro_batches


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist.init("cpu")


def varied_batch(lengths: list[int], prompt_len: int = 5):
    comps = [Completion([7] * prompt_len, [9] * n, [-1.0] * n, "stop", "") for n in lengths]
    return collate(comps, 0)


def test_packing_covers_every_row_once_within_the_budget():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 120, (64,), generator=g).tolist()
    batch = varied_batch(lengths)
    idx = torch.arange(64)
    groups = pack_by_tokens(batch, idx, budget=400)
    assert sorted(torch.cat(groups).tolist()) == list(range(64))
    for grp in groups:
        real, computed = padded_tokens(batch, grp)
        assert real == int(batch.rows(grp).attention_mask.sum())
        assert computed <= 400 or len(grp) == 1
        sub = batch.rows(grp)
        assert sub.input_ids.numel() == computed  # what the learner computes is what the budget counted
    # longest first: the groups' longest rows never increase
    longest = [max(lengths[i] for i in grp.tolist()) for grp in groups]
    assert longest == sorted(longest, reverse=True)


def test_packing_cuts_padding_and_equal_rows_fill_the_budget():
    g = torch.Generator().manual_seed(1)
    lengths = torch.empty(128).log_normal_(3.0, 1.0, generator=g).clamp(1, 256).long().tolist()  # tenfold spread
    batch = varied_batch(lengths)
    idx = torch.arange(128)
    fixed = list(idx.split(16))
    packed = pack_by_tokens(batch, idx, budget=16 * (5 + 256))

    def computed(groups):
        return sum(padded_tokens(batch, grp)[1] for grp in groups)

    assert computed(packed) < 0.6 * computed(fixed) and len(packed) <= len(fixed)  # less work in fewer passes
    same = varied_batch([10] * 32)
    assert [len(grp) for grp in pack_by_tokens(same, torch.arange(32), budget=8 * 15)] == [8, 8, 8, 8]
    assert [len(grp) for grp in pack_by_tokens(same, torch.arange(4, 8), budget=1)] == [1, 1, 1, 1]


@pytest.mark.parametrize("loss", ["dapo", "gspo"])  # a token-level and a sequence-level objective
def test_token_budget_update_equals_fixed_rows(tiny_model_dir, loss):
    batch, adv = fixed_batch(tiny_model_dir, 2, 8, seed=7)
    results = []
    for budget in (0, 40, None):
        cfg = make_config(tiny_model_dir, loss=loss, mbs=4, optim__grad_clip=0.0)
        cfg.optim.max_tokens_per_micro_batch = budget
        learner = Learner(cfg, str(tiny_model_dir), torch.device("cpu"))
        plan = plan_micro_batches(batch, torch.arange(16), cfg.optim.micro_batch_size, budget)
        m = learner.update(batch, adv)
        results.append((len(plan), step_gradients(learner), m))
    (n0, g0, m0), (n1, g1, m1), (_, g2, m2) = results
    assert n0 == 4 and n1 > n0  # the budget path really regrouped the rows
    assert m1["padding_share"] < m0["padding_share"] and m2["padding_share"] < m0["padding_share"]
    for g, m in ((g1, m1), (g2, m2)):
        assert m["loss"] == pytest.approx(m0["loss"], rel=1e-5, abs=1e-7)
        assert m["grad_norm"] == pytest.approx(m0["grad_norm"], rel=1e-5)
        for name in g0:
            assert torch.allclose(g[name], g0[name], rtol=1e-4, atol=1e-7), name


def test_frozen_logprobs_do_not_depend_on_packing(tiny_model_dir):
    batch, _ = fixed_batch(tiny_model_dir, 2, 8, seed=9)
    outs = []
    for budget in (0, 30):
        cfg = make_config(tiny_model_dir, mbs=4)
        cfg.optim.max_tokens_per_micro_batch = budget
        learner = Learner(cfg, str(tiny_model_dir), torch.device("cpu"))
        outs.append(learner.frozen_logprobs(learner.module, batch))
    m = batch.completion_mask  # columns past a row's end are padding: whatever a pass left there is never used
    assert torch.allclose(outs[0] * m, outs[1] * m, atol=1e-5)
    assert ((outs[1] * m) != 0).sum() == m.sum()
