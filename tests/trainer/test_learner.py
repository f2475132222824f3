"""The learner on a tiny real model through the real DeepSpeed engine (one process, gloo)."""

import pytest
import torch
from support.helpers import fixed_batch, make_config, step_gradients
from transformers import AutoModelForCausalLM

from losses import OBJECTIVES
from rollout.base import RolloutBatch
from trainer import dist
from trainer.learner import Learner, token_logprobs


@pytest.fixture(scope="module", autouse=True)
def process_group():
    dist.init("cpu")


def params_of(learner):
    return {n: p.detach().clone() for n, p in learner.module.named_parameters()}


def test_token_logprobs_equal_manual_log_softmax(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    batch, _ = fixed_batch(tiny_model_dir, 2, 3)
    logp, entropy = token_logprobs(model, batch, temperature=0.7, with_entropy=True)
    for i in range(batch.input_ids.shape[0]):  # one row at a time, unpadded, the textbook way
        keep = batch.attention_mask[i].bool()
        ids = batch.input_ids[i][keep][None]
        n_prompt = int(batch.attention_mask[i, : batch.prompt_width].sum())
        logits = model(input_ids=ids).logits[0].float() / 0.7
        lp = torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
        expect = lp[n_prompt - 1 :]
        n = int(batch.completion_mask[i].sum())
        assert torch.allclose(logp[i, :n], expect[:n], atol=1e-5)
        probs = torch.softmax(logits[n_prompt - 1 : n_prompt - 1 + n], -1)
        ent = -(probs * probs.log()).sum(-1)
        assert torch.allclose(entropy[i, :n], ent, atol=1e-4)


@pytest.mark.parametrize("loss", sorted(OBJECTIVES))
def test_one_step_changes_every_parameter(tiny_model_dir, loss):
    cfg = make_config(tiny_model_dir, loss=loss, mbs=8)
    learner = Learner(cfg, str(tiny_model_dir), torch.device("cpu"))
    batch, adv = fixed_batch(tiny_model_dir, 2, 8)
    before = params_of(learner)
    metrics = learner.update(batch, adv)
    after = params_of(learner)
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged, f"parameters not updated: {unchanged}"
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k != "ratio_min")
    assert metrics["grad_norm"] > 0 and metrics["ratio_mean"] == pytest.approx(1.0)


@pytest.mark.parametrize("loss", ["grpo", "dapo", "luspo"])
def test_micro_batch_accumulation_equals_one_big_batch(tiny_model_dir, loss):
    batch, adv = fixed_batch(tiny_model_dir, 2, 8, seed=3)
    results = []
    for mbs in (16, 4):
        cfg = make_config(tiny_model_dir, loss=loss, mbs=mbs, optim__grad_clip=0.0)
        learner = Learner(cfg, str(tiny_model_dir), torch.device("cpu"))
        m = learner.update(batch, adv)
        results.append((step_gradients(learner), m["loss"], m["grad_norm"]))
    (p1, l1, g1), (p2, l2, g2) = results
    assert l1 == pytest.approx(l2, rel=1e-5) and g1 == pytest.approx(g2, rel=1e-4)
    for n in p1:
        assert torch.allclose(p1[n], p2[n], rtol=1e-4, atol=1e-7), n


def test_several_updates_per_batch_use_old_logprobs(tiny_model_dir):
    cfg = make_config(tiny_model_dir, loss="grpo", mbs=8, loss__updates_per_batch=2, lr=1e-2)
    learner = Learner(cfg, str(tiny_model_dir), torch.device("cpu"))
    batch, adv = fixed_batch(tiny_model_dir, 2, 8, seed=5)
    m = learner.update(batch, adv)
    # the second mini-batch is evaluated after the first step moved the weights: ratios leave 1
    assert m["ratio_max"] > 1.0 or m["ratio_min"] < 1.0
    assert m["approx_kl_old"] > 0


def test_reference_model_only_loaded_with_beta(tiny_model_dir):
    plain = Learner(make_config(tiny_model_dir), str(tiny_model_dir), torch.device("cpu"))
    assert plain.ref is None
    cfg = make_config(tiny_model_dir, loss__beta=0.04)
    with_ref = Learner(cfg, str(tiny_model_dir), torch.device("cpu"))
    batch, adv = fixed_batch(tiny_model_dir, 2, 8)
    m = with_ref.update(batch, adv)
    assert with_ref.ref is not None and m["kl_ref"] == pytest.approx(0.0, abs=1e-6)  # ref == policy at step 0


def test_rows_trims_padding_columns(tiny_model_dir):
    batch, _ = fixed_batch(tiny_model_dir, 2, 4)
    sub = batch.rows(slice(0, 4))
    assert isinstance(sub, RolloutBatch)
    assert sub.completion_mask.shape[1] == int(batch.completion_mask[:4].sum(1).max())
    assert (sub.attention_mask[:, 0] == 1).any()  # no all-padding leading column
