"""Contract of the rollout backend interface, on the hf backend."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rollout.base import collate
from rollout.hf import HFBackend, top_p_filter
from trainer.learner import token_logprobs


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = [tok("1 + 2 = ?")["input_ids"], tok("10 + 20 + 3 = ?")["input_ids"]]
    return tok, model, prompts


def test_groups_finish_reasons_and_eos(setup):
    tok, model, prompts = setup
    backend = HFBackend(lambda: model, tok, max_new_tokens=200, temperature=1.5)
    out = backend.generate(prompts, group_size=16, seed=0)
    assert len(out) == 32
    for i, c in enumerate(out):
        assert c.prompt_ids == prompts[i // 16]  # groups are contiguous blocks of G rows
        assert len(c.token_ids) == len(c.logprobs) <= 200
        assert tok.eos_token_id not in c.token_ids[:-1]  # nothing after EOS
        if c.finish_reason == "stop":
            assert c.token_ids[-1] == tok.eos_token_id
        else:
            assert c.finish_reason == "length" and len(c.token_ids) == 200
        assert "<|im_end|>" not in c.text
    assert {c.finish_reason for c in out} == {"stop", "length"}


def test_sampler_logprobs_equal_learner_logprobs(setup):
    tok, model, prompts = setup
    backend = HFBackend(lambda: model, tok, max_new_tokens=20, temperature=0.8)
    comps = backend.generate(prompts, group_size=4, seed=1)
    batch = collate(comps, tok.pad_token_id)
    logp, _ = token_logprobs(model, batch, temperature=0.8)
    m = batch.completion_mask
    assert torch.allclose(logp * m, batch.sampler_logp * m, atol=1e-4)


def test_seeded_and_truncated(setup):
    tok, model, prompts = setup
    backend = HFBackend(lambda: model, tok, max_new_tokens=5)
    a = backend.generate(prompts, 4, seed=7)
    b = backend.generate(prompts, 4, seed=7)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert all(len(c.token_ids) <= 5 for c in a)


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
