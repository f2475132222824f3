"""Chunked log-probs and entropy (trainer.logprobs) against the full-logits computation, to fp32 rounding:
values, entropy and the gradient of every parameter (the tied embedding included), temperature applied,
the work split over many chunks."""

import pytest
import torch
from support.helpers import fixed_batch
from transformers import AutoModelForCausalLM

import trainer.logprobs as logprobs
from trainer.learner import token_logprobs


def full_logits_reference(model, batch, temperature):
    """The plain path: all T+1 positions' logits materialized, log_softmax and entropy from them."""
    t = batch.completion_mask.shape[1]
    pos = (batch.attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=pos, use_cache=False)
    logits = out.logits[:, -(t + 1) : -1, :].float() / temperature  # [n, T, V]
    logp_all = logits.log_softmax(dim=-1)
    targets = batch.input_ids[:, batch.prompt_width :]
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(dim=-1)
    return logp, entropy.detach()


@pytest.mark.parametrize("chunk_bytes", [4 * 259 * 3, logprobs.CHUNK_BYTES], ids=["3-token chunks", "one chunk"])
def test_chunked_logprobs_entropy_and_gradients_equal_the_full_path(tiny_model_dir, monkeypatch, chunk_bytes):
    monkeypatch.setattr(logprobs, "CHUNK_BYTES", chunk_bytes)
    batch, adv = fixed_batch(tiny_model_dir, n_prompts=3, group_size=4, seed=1)
    mask = batch.completion_mask
    results = []
    for chunked in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
        if chunked:
            logp, ent = token_logprobs(model, batch, temperature=0.7, with_entropy=True)
        else:
            logp, ent = full_logits_reference(model, batch, temperature=0.7)
        loss = -((logp * adv[:, None] * mask).sum() / mask.sum())  # any scalar of the log-probs
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((logp.detach() * mask, ent * mask, grads))
    (lp0, e0, g0), (lp1, e1, g1) = results
    assert torch.allclose(lp1, lp0, atol=2e-6, rtol=0)
    assert torch.allclose(e1, e0, atol=2e-6, rtol=0)
    for name in g0:
        assert torch.allclose(g1[name], g0[name], atol=1e-6, rtol=1e-5), name
    assert g1["model.embed_tokens.weight"].abs().sum() > 0


def test_chunk_size_follows_the_vocabulary():
    assert logprobs.chunk_tokens(151_936) == (128 << 20) // (4 * 151_936)  # ~220 tokens: ~85 MB of logits
    assert logprobs.chunk_tokens(259) > 100_000  # the byte vocabulary: one chunk per micro-batch
