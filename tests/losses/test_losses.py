"""Objectives on a 2x3 case checked on paper, and their defining properties."""

import math

import pytest
import torch

from losses import OBJECTIVES, LossParams, compute_loss, get_objective
from losses.core import kl_penalty

# Row 0: 3 tokens, ratios 1.1, 0.9, 1.3, A = +1.  Row 1: 2 tokens (+ padding), ratios 1.1, 0.7, A = -1.
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
RATIOS = torch.tensor([[1.1, 0.9, 1.3], [1.1, 0.7, 1.0]])
ADV = torch.tensor([1.0, -1.0])
P = LossParams(clip_low=0.2, clip_high=0.2, max_tokens=3)


def case(garbage: float = 0.0):
    logp = torch.log(RATIOS).clone()
    logp[1, 2] = garbage
    return logp.requires_grad_(True), torch.zeros(2, 3)


def loss_of(name, params=P, garbage=0.0):
    logp, old = case(garbage)
    loss, terms = compute_loss(name, logp, old, ADV, MASK, params)
    return loss, terms, logp


def test_grpo_hand_computed():
    # row 0: -(1.1 + 0.9 + min(1.3, 1.2)) / 3 ; row 1: (1.1 + max(0.7, 0.8)) / 2 ; mean over rows
    expected = (-(1.1 + 0.9 + 1.2) / 3 + (1.1 + 0.8) / 2) / 2
    assert loss_of("grpo")[0].item() == pytest.approx(expected, abs=1e-6)


def test_dapo_hand_computed_clip_higher():
    params = LossParams(clip_low=0.2, clip_high=0.28)
    expected = (-(1.1 + 0.9 + 1.28) + (1.1 + 0.8)) / 5  # token mean over the 5 real tokens
    assert loss_of("dapo", params)[0].item() == pytest.approx(expected, abs=1e-6)


def test_dr_grpo_divides_by_constant():
    expected = (-(1.1 + 0.9 + 1.2) / 3 + (1.1 + 0.8) / 3) / 2  # token sums / L_max=3, mean over rows
    assert loss_of("dr_grpo")[0].item() == pytest.approx(expected, abs=1e-6)


def test_gspo_and_luspo_hand_computed():
    s0 = (1.1 * 0.9 * 1.3) ** (1 / 3)  # geometric mean ratio, 1.0878 (inside the clip range)
    s1 = (1.1 * 0.7) ** (1 / 2)  # 0.8775, A < 0
    gspo = (-s0 + s1) / 2
    luspo = (-3 * s0 + 2 * s1) / 2
    assert loss_of("gspo")[0].item() == pytest.approx(gspo, abs=1e-6)
    assert loss_of("gspo_token")[0].item() == pytest.approx(gspo, abs=1e-6)
    assert loss_of("luspo")[0].item() == pytest.approx(luspo, abs=1e-6)


def test_luspo_row_loss_is_gspo_times_length():
    _, g, _ = loss_of("gspo")
    _, lu, _ = loss_of("luspo")
    assert torch.allclose(lu.per_row, g.per_row * MASK.sum(dim=1))


def test_on_policy_gspo_gradient_is_sequence_mean_reinforce():
    torch.manual_seed(0)
    logp = torch.randn(2, 3).requires_grad_(True)
    loss, _ = compute_loss("gspo", logp, logp.detach(), ADV, MASK, LossParams(3e-4, 4e-4))
    (g,) = torch.autograd.grad(loss, logp)
    logp2 = logp.detach().clone().requires_grad_(True)
    reinforce = -(ADV * (logp2 * MASK).sum(1) / MASK.sum(1)).mean()
    (g2,) = torch.autograd.grad(reinforce, logp2)
    assert torch.allclose(g, g2, atol=1e-7)


def test_gspo_token_matches_gspo_gradient_off_policy():
    torch.manual_seed(1)
    base, old = torch.randn(2, 3) * 0.01, torch.zeros(2, 3)
    grads = []
    for name in ("gspo", "gspo_token"):
        logp = base.clone().requires_grad_(True)
        loss, _ = compute_loss(name, logp, old, ADV, MASK, LossParams(0.2, 0.2))
        grads.append(torch.autograd.grad(loss, logp)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-7)


def test_clipped_tokens_get_zero_gradient():
    loss, _, logp = loss_of("grpo")
    (g,) = torch.autograd.grad(loss, logp)
    assert g[0, 2] == 0.0  # ratio 1.3 > 1.2 with A > 0: clipped
    assert g[1, 1] == 0.0  # ratio 0.7 < 0.8 with A < 0: clipped
    assert (g[0, :2] != 0).all() and g[1, 0] != 0


def test_dapo_token_mean_equals_grpo_when_lengths_are_equal():
    torch.manual_seed(2)
    logp, old, mask = torch.randn(4, 5) * 0.1, torch.zeros(4, 5), torch.ones(4, 5)
    adv = torch.tensor([1.0, -0.5, 0.3, -0.8])
    a, _ = compute_loss("dapo", logp, old, adv, mask, P)
    b, _ = compute_loss("grpo", logp, old, adv, mask, P)
    assert a.item() == pytest.approx(b.item(), abs=1e-7)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_zero_advantage_gives_zero_gradient(name):
    logp, old = case()
    loss, _ = compute_loss(name, logp, old, torch.zeros(2), MASK, P)
    (g,) = torch.autograd.grad(loss, logp)
    assert torch.count_nonzero(g) == 0


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), -1e9, 123.0])
def test_padding_never_changes_loss_or_gradient(name, garbage):
    params = LossParams(0.2, 0.28, beta=0.1, max_tokens=3)
    ref = torch.log(RATIOS) * 0.5
    ref_bad = ref.clone()
    ref_bad[1, 2] = garbage
    l0, _ = compute_loss(name, *case(0.0), ADV, MASK, params, ref_logp=ref)
    logp, old = case(garbage)
    old[1, 2] = garbage
    l1, _ = compute_loss(name, logp, old, ADV, MASK, params, ref_logp=ref_bad)
    (g,) = torch.autograd.grad(l1, logp)
    assert l1.item() == pytest.approx(l0.item(), abs=1e-7)
    assert torch.isfinite(g).all() and g[1, 2] == 0.0


def test_empty_row_contributes_nothing_and_is_not_counted():
    logp, old = case()
    mask = MASK.clone()
    mask[1] = 0.0  # e.g. filtered out
    for name in OBJECTIVES:
        loss, terms = compute_loss(name, logp, old, ADV, mask, P)
        assert terms.per_row[1] == 0.0
        only_row0, _ = compute_loss(name, logp[:1], old[:1], ADV[:1], mask[:1], P)
        assert loss.item() == pytest.approx(only_row0.item(), abs=1e-7)


def test_kl_estimators_hand_computed():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 - math.log(0.5) - 1)


def test_grpo_kl_term_is_beta_times_token_mean_k3():
    logp, old = case()
    ref = torch.zeros(2, 3)
    params = LossParams(0.2, 0.2, beta=0.04)
    with_kl, terms = compute_loss("grpo", logp, old, ADV, MASK, params, ref_logp=ref)
    without, _ = compute_loss("grpo", logp, old, ADV, MASK, P)
    k3 = torch.exp(-torch.log(RATIOS)) + torch.log(RATIOS) - 1  # [2, 3], ref = 0
    per_row = (k3 * MASK).sum(1) / MASK.sum(1)
    assert (with_kl - without).item() == pytest.approx(0.04 * per_row.mean().item(), abs=1e-7)
    assert "kl_ref" in terms.stats


def test_ratio_one_on_policy_and_clip_metrics():
    logp = torch.randn(2, 3)
    _, terms = compute_loss("grpo", logp, logp, ADV, MASK, P)
    s, n = terms.stats["ratio_mean"]
    assert (s / n).item() == pytest.approx(1.0)
    _, terms, _ = loss_of("grpo")
    low, n = terms.stats["clip_frac_low_token"]
    high, _ = terms.stats["clip_frac_high_token"]
    assert (low.item(), high.item(), n.item()) == (1.0, 1.0, 5.0)


def test_unknown_objective_lists_choices():
    with pytest.raises(KeyError, match="choose from"):
        get_objective("ppo2")


def test_registry_defaults_follow_papers():
    assert (OBJECTIVES["gspo"].clip_low, OBJECTIVES["gspo"].clip_high) == (3e-4, 4e-4)
    assert (OBJECTIVES["luspo"].clip_low, OBJECTIVES["luspo"].clip_high) == (2e-3, 2.5e-3)
    assert (OBJECTIVES["dapo"].clip_low, OBJECTIVES["dapo"].clip_high) == (0.2, 0.28)
    assert OBJECTIVES["dr_grpo"].scale_std is False and OBJECTIVES["dapo"].unit == "tokens"


def test_truncated_importance_sampling_weights_hand_computed():
    import math

    from losses.core import truncated_is_weights

    old = torch.zeros(1, 3)
    sampler = torch.tensor([[0.0, -math.log(2.0), -math.log(4.0)]])  # trainer/sampler ratios 1, 2, 4
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third token is padding
    tok = truncated_is_weights(old, sampler, mask, cap=1.5, level="token")
    assert torch.allclose(tok, torch.tensor([[1.0, 1.5, 0.0]]))  # 2 is capped at 1.5
    seq = truncated_is_weights(old, sampler, mask, cap=1.5, level="sequence")
    assert torch.allclose(seq, torch.tensor([math.sqrt(2.0)]))  # exp(mean(0, ln 2)) = sqrt 2 < 1.5


def test_per_token_advantages_scale_each_token_term():
    from losses import LossParams
    from losses.objectives import grpo

    logp = torch.log(torch.tensor([[0.5, 0.25]])).requires_grad_()
    mask = torch.ones(1, 2)
    p = LossParams(clip_low=0.2, clip_high=0.2)
    # on-policy: each token's term is -A_t * ratio_t = -A_t; GRPO averages over the sequence
    terms = grpo(logp, logp.detach(), torch.tensor([[1.0, 1.5]]), mask, p)
    assert terms.per_row.item() == pytest.approx(-(1.0 + 1.5) / 2)
    terms.per_row.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.5, -0.75]]))  # d/dlogp of -A_t r_t / 2


def test_gspo_token_per_token_advantages_follow_eq_13_14():
    """GSPO-token with A_{i,t} [N, T]: on-policy (s_i = 1) the gradient of the per-row loss on token t is
    -A_{i,t} / |y_i| (Eq. 14 with s_{i,t} = sg[s_i] pi_t / sg[pi_t]); a token with A_{i,t} = 0 gets none,
    and with A_{i,t} = A_i for all t it is GSPO's gradient. Off-policy beyond the clip, no gradient."""
    from losses import LossParams
    from losses.objectives import gspo, gspo_token

    logp = torch.log(torch.tensor([[0.5, 0.25, 0.8], [0.6, 0.3, 0.1]])).requires_grad_()
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # |y| = 3, 2
    adv = torch.tensor([[1.0, 0.0, -2.0], [0.5, 1.5, 9.0]])  # the padded 9.0 must not matter
    p = LossParams(clip_low=3e-4, clip_high=4e-4)
    terms = gspo_token(logp, logp.detach(), adv, mask, p)
    assert torch.allclose(terms.per_row, torch.tensor([-(1.0 + 0.0 - 2.0) / 3, -(0.5 + 1.5) / 2]))
    terms.per_row.sum().backward()
    expected = torch.tensor([[-1.0 / 3, 0.0, 2.0 / 3], [-0.25, -0.75, 0.0]])
    assert torch.allclose(logp.grad, expected)

    # A_{i,t} = A_i on every token: the same gradient as GSPO's sequence form
    row_adv = torch.tensor([0.7, -1.2])
    a, b = logp.detach().clone().requires_grad_(), logp.detach().clone().requires_grad_()
    gspo_token(a, a.detach(), row_adv[:, None].expand(2, 3), mask, p).per_row.sum().backward()
    gspo(b, b.detach(), row_adv, mask, p).per_row.sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-7)

    # off-policy: row 0's sequence ratio s = exp(0.01) > 1 + 4e-4 with A > 0 on every token -> clipped
    c = logp.detach().clone().requires_grad_()
    old = c.detach() - 0.01
    gspo_token(c, old, torch.ones(2, 3), mask, p).per_row.sum().backward()
    assert torch.count_nonzero(c.grad) == 0
