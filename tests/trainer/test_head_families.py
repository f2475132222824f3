"""Heads whose logits are transformed after the matmul (Gemma 2/3 soft-capping, Granite and Cohere scaling): the
chunked log-probs, entropy and gradients equal the model's own full logits' on a tiny random model of each
family; a transformation the chunked path does not know is refused by ``check_head``."""

import pytest
import torch
from test_logprobs import full_logits_reference
from transformers import (
    CohereConfig,
    CohereForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GraniteConfig,
    GraniteForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import trainer.logprobs as logprobs
from rollout.base import Completion, collate
from trainer.learner import token_logprobs

SIZE = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    initializer_range=0.5,  # large logits, so that a cap or a scale left out shows
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
FAMILIES = {  # the transform of each made strong, so a wrong path cannot pass to rounding
    "gemma2": lambda: Gemma2ForCausalLM(Gemma2Config(**SIZE, final_logit_softcapping=3.0)),
    "gemma3": lambda: Gemma3ForCausalLM(Gemma3TextConfig(**SIZE, final_logit_softcapping=3.0)),
    "granite": lambda: GraniteForCausalLM(GraniteConfig(**SIZE, logits_scaling=0.25)),
    "cohere": lambda: CohereForCausalLM(CohereConfig(**SIZE, logit_scale=2.5)),
}


def family_batch():
    g = torch.Generator().manual_seed(4)
    comps = []
    for n in (3, 7, 5, 1):
        prompt = torch.randint(3, 96, (4,), generator=g).tolist()
        toks = torch.randint(3, 96, (n,), generator=g).tolist()
        comps.append(Completion(prompt, toks, [0.0] * n, "length", ""))
    return collate(comps, 0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_transformed_heads_match_the_models_own_logits(family, monkeypatch):
    monkeypatch.setattr(logprobs, "CHUNK_BYTES", 4 * 96 * 3)  # 3-token chunks
    batch = family_batch()
    mask = batch.completion_mask
    adv = torch.tensor([1.0, -0.5, 0.3, -1.2])
    results = []
    for chunked in (False, True):
        torch.manual_seed(0)
        model = FAMILIES[family]().float().eval()
        if chunked:
            logp, ent = token_logprobs(model, batch, temperature=0.7, with_entropy=True)
        else:
            logp, ent = full_logits_reference(model, batch, temperature=0.7)
        (-(logp * adv[:, None] * mask).sum() / mask.sum()).backward()
        results.append((logp.detach() * mask, ent * mask, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (lp0, e0, g0), (lp1, e1, g1) = results
    assert torch.allclose(lp1, lp0, atol=1e-5, rtol=0)
    assert torch.allclose(e1, e0, atol=1e-5, rtol=0)
    for name in g0:  # fp32 rounding, relative to the largest entry (initializer_range 0.5 makes gradients large)
        assert (g1[name] - g0[name]).abs().max() <= 1e-5 * g0[name].abs().max() + 1e-7, name
    logprobs.check_head(model)  # accepted at start-up
    # the model's own forward is left as it was: its logits are transformed again outside the context
    with torch.no_grad():
        out = model(input_ids=batch.input_ids[:1]).logits
    if family.startswith("gemma"):
        assert out.abs().max() <= 3.0
    else:
        assert out.abs().max() > 3.0


def test_an_unknown_logit_transform_is_refused():
    torch.manual_seed(0)
    cfg = {k: v for k, v in SIZE.items() if k != "head_dim"}
    model = Qwen2ForCausalLM(Qwen2Config(**cfg)).eval()
    logprobs.check_head(model)
    model.register_forward_hook(lambda mod, args, out: out.__setitem__("logits", out.logits * 2.0) or out)
    with pytest.raises(NotImplementedError, match=r"Qwen2ForCausalLM \(qwen2\): the chunked log-probs differ"):
        logprobs.check_head(model)
