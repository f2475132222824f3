"""The hf sampler's token draw (``rollout.hf.sample_tokens``): exact in distribution, exact log-probs, seeded."""

import torch

from rollout.hf import sample_tokens, top_p_filter

PROBS = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])


def chi_square(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(tokens.flatten(), minlength=len(probs)).double()
    expect = probs.double() * tokens.numel()
    return float(((counts - expect) ** 2 / expect).sum())


def test_draws_follow_the_softmax():
    logits = (PROBS.log() + 3.0).expand(40_000, -1).contiguous()  # a shift the softmax ignores
    tok, logp = sample_tokens(logits, torch.Generator().manual_seed(0))
    # 5 degrees of freedom: P(chi2 > 30) ~ 1.5e-5; with a fixed seed this is a regression check, not a coin toss
    assert chi_square(tok, PROBS) < 30
    assert torch.allclose(logp, logits.log_softmax(-1).gather(1, tok), atol=1e-6)


def test_nucleus_and_masked_tokens():
    logits = PROBS.log().expand(40_000, -1).clone()
    logits[:, 1] = float("-inf")  # e.g. EOS suppressed: never drawn
    tok, logp = sample_tokens(logits, torch.Generator().manual_seed(1), top_p=0.7)
    kept = torch.isfinite(top_p_filter(logits[:1], 0.7))[0]  # tokens 0, 2, 3 (0.4/0.75 + 0.15/0.75 + ...)
    assert set(tok.flatten().tolist()) == set(kept.nonzero().flatten().tolist())
    nucleus = torch.where(kept, PROBS, torch.zeros(()))
    assert chi_square(tok, nucleus / nucleus.sum() + 1e-12) < 30
    # the recorded log-prob is the full softmax's, as the learner computes it (nucleus or not)
    assert torch.allclose(logp, logits.log_softmax(-1).gather(1, tok), atol=1e-6)


def test_seeded_and_large_vocabulary():
    logits = torch.randn(8, 151_936, generator=torch.Generator().manual_seed(2)) * 4
    a, lp_a = sample_tokens(logits, torch.Generator().manual_seed(5))
    b, _ = sample_tokens(logits, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.allclose(lp_a, logits.log_softmax(-1).gather(1, a), atol=1e-5)
