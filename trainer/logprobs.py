"""Per-token log-probs and entropy straight from the final hidden states and the LM head, a chunk of tokens
at a time, so that no ``[n, T, V]`` tensor (logits, softmax, or their gradients) ever exists.

At a real vocabulary (151,936 tokens) the logits of one micro-batch of 16 x 256 completion tokens are 2.4 GB
in fp32, and the plain path holds several such tensors (the slice, the division by the temperature, the
softmax for the entropy, their gradients). ``LinearLogprobs`` keeps only the hidden states, the weight and
one float per token (log Z) from the forward pass; the backward pass recomputes each chunk's logits and
forms ``dlogits = g (onehot(y) - softmax) / T`` for that chunk alone. Plain torch: the same code on CPU and
GPU (on GPU a fused kernel such as Liger's would save the recomputation; this keeps one code path).

``head_logprobs`` runs it *inside* the LM head module's call (its ``forward`` is swapped for the duration),
so DeepSpeed's ZeRO-3 hooks gather the (possibly partitioned) head weight for the forward and again for
the backward, exactly as for an ``nn.Linear``; a tied head shares the embedding's parameter, so both
gradients land in it.

Heads whose logits are transformed after the matmul are handled exactly: the model's own post-head step is
switched off for the duration (``head_transform``) and each chunk applies it instead, ``z = cap * tanh(scale
* hidden @ W.T / cap)``: Gemma 2/3 (``final_logit_softcapping``), Granite and MiniCPM3 (``logits_scaling``,
a division), Cohere (``logit_scale``, a multiplication). Any other family that transforms its logits is
refused at start-up by ``check_head``, which compares this path with the model's own logits on a probe.
"""

from __future__ import annotations

import contextlib
import math

import torch

CHUNK_BYTES = 128 << 20  # fp32 logits of one chunk; the pass holds about three such buffers at a time


def chunk_tokens(vocab: int) -> int:
    """Tokens per chunk: ``CHUNK_BYTES`` of fp32 logits (at least 1; a small vocabulary is one chunk)."""
    return max(1, CHUNK_BYTES // (4 * vocab))


def _logits(h: torch.Tensor, weight: torch.Tensor, scale: float, softcap: float | None) -> torch.Tensor:
    """The model's logits of a chunk, fp32: ``softcap(scale * h @ W.T)``. [c, V]"""
    z = (h @ weight.t()).float()
    if scale != 1.0:
        z = z * scale
    if softcap is not None:
        z = torch.tanh(z / softcap) * softcap
    return z


class LinearLogprobs(torch.autograd.Function):
    """``(hidden [M, H], weight [V, H], targets [M]) -> (logp [M], entropy [M] or empty)``, fp32, at temperature
    ``temperature``: logp_m = z_m[y_m] - logsumexp(z_m), z = softcap(scale * hidden @ weight.T) / T (no cap when
    ``softcap`` is None). Entropy has no gradient."""

    @staticmethod
    def forward(
        ctx,
        hidden,
        weight,
        targets,
        temperature: float,
        chunk: int,
        with_entropy: bool,
        scale: float = 1.0,
        softcap: float | None = None,
    ):
        m = hidden.shape[0]
        logp = torch.empty(m, dtype=torch.float32, device=hidden.device)
        logz = torch.empty(m, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty(m if with_entropy else 0, dtype=torch.float32, device=hidden.device)
        for s in range(0, m, chunk):
            z = _logits(hidden[s : s + chunk], weight, scale, softcap) / temperature  # [c, V]
            lz = z.logsumexp(dim=-1)  # [c]
            logz[s : s + chunk] = lz
            logp[s : s + chunk] = z.gather(1, targets[s : s + chunk, None]).squeeze(1) - lz
            if with_entropy:  # H = log Z - sum_v p_v z_v
                entropy[s : s + chunk] = lz - (torch.softmax(z, dim=-1) * z).sum(dim=-1)
        ctx.save_for_backward(hidden, weight, targets, logz)
        ctx.temperature, ctx.chunk, ctx.scale, ctx.softcap = temperature, chunk, scale, softcap
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, targets, logz = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for s in range(0, hidden.shape[0], ctx.chunk):
            h, g = hidden[s : s + ctx.chunk], grad_logp[s : s + ctx.chunk].float()  # [c, H], [c]
            capped = _logits(h, weight, ctx.scale, ctx.softcap)  # [c, V], recomputed
            dz = capped.div(ctx.temperature).sub_(logz[s : s + ctx.chunk, None]).exp_().mul_(-g[:, None])  # -g p
            dz.scatter_add_(1, targets[s : s + ctx.chunk, None], g[:, None])  # + g onehot(y)
            dz = dz.mul_(ctx.scale / ctx.temperature)  # d/d(hidden @ W.T) = d/dz * scale / T ...
            if ctx.softcap is not None:  # ... * (1 - tanh^2), with tanh = capped / cap
                dz.mul_(1 - (capped / ctx.softcap).square_())
            dz = dz.to(hidden.dtype)  # [c, V] d loss / d (hidden @ weight.T)
            if grad_hidden is not None:
                grad_hidden[s : s + ctx.chunk] = dz @ weight
            grad_weight += (dz.t() @ h).float()
        return grad_hidden, grad_weight.to(weight.dtype), None, None, None, None, None, None


@contextlib.contextmanager
def head_transform(model: torch.nn.Module):
    """Yields ``(scale, softcap)`` of the model's logits, ``softcap(scale * hidden @ W.T)``, with the model's
    own post-head step switched off while active (so the head's output reaches the caller unchanged)."""
    cfg = model.config
    scale, softcap, neutral = 1.0, None, []  # neutral: (object, attribute, value while active)
    if getattr(cfg, "final_logit_softcapping", None) is not None:  # Gemma 2/3: cap * tanh(logits / cap)
        softcap = float(cfg.final_logit_softcapping)
        neutral.append((cfg, "final_logit_softcapping", None))
    if getattr(cfg, "logits_scaling", None) not in (None, 1, 1.0):  # Granite (logits), MiniCPM3 (hidden): divide
        scale /= float(cfg.logits_scaling)
        neutral.append((cfg, "logits_scaling", 1.0))
    if isinstance(getattr(model, "logit_scale", None), (int, float)) and model.logit_scale != 1:  # Cohere
        scale *= float(model.logit_scale)
        neutral.append((model, "logit_scale", 1.0))
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in neutral]
    for obj, name, value in neutral:
        setattr(obj, name, value)
    try:
        yield scale, softcap
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


@torch.no_grad()
def check_head(model: torch.nn.Module, tol: float | None = None) -> None:
    """Refuse a model whose logits the chunked path does not reproduce: compares its log-probs of a short
    random sequence with ``log_softmax`` of the model's own logits. Collective under ZeRO-3 (every rank calls
    it). Raises ``NotImplementedError`` naming the model type."""
    was_training = model.training
    model.eval()
    try:
        vocab = model.config.get_text_config().vocab_size
        ids = torch.randint(0, vocab, (1, 9), generator=torch.Generator().manual_seed(0))
        ids = ids.to(next(model.parameters()).device)
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()  # [8, V]
        expect = logits.log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
        with head_logprobs(model, ids[:, 1:], 1.0, with_entropy=False):
            got = model(input_ids=ids, use_cache=False, logits_to_keep=9).logits[0, :8, 0]
    finally:
        model.train(was_training)
    low_precision = next(model.parameters()).dtype != torch.float32
    tol = tol if tol is not None else (5e-2 if low_precision else 1e-3)
    err = (got - expect).abs().max().item()
    if not math.isfinite(err) or err > tol:
        raise NotImplementedError(
            f"{type(model).__name__} ({model.config.model_type}): the chunked log-probs differ from the model's own "
            f"by {err:.3g} (tolerance {tol:g}); its head must transform the logits in a way trainer/logprobs.py "
            "does not know (known: final_logit_softcapping, logits_scaling, logit_scale). Add it to head_transform."
        )


@contextlib.contextmanager
def head_logprobs(model: torch.nn.Module, targets: torch.Tensor, temperature: float, with_entropy: bool):
    """While active, the model's LM head returns ``[n, T+1, 2]``: (log-prob of ``targets [n, T]``, entropy)
    at each of the first T positions it is given (the last one predicts past the completion: zeros)."""
    head = model.get_output_embeddings()
    vocab = getattr(head, "out_features", None) or head.weight.shape[0]  # ZeRO-3: the weight may be partitioned now
    if getattr(head, "bias", None) is not None:
        raise NotImplementedError("chunked log-probs assume an LM head without bias (every HF causal LM used here)")

    with head_transform(model) as (scale, softcap):

        def forward(hidden: torch.Tensor) -> torch.Tensor:  # [n, T+1, H] -> [n, T+1, 2]
            n, t = targets.shape
            h = hidden[:, :t, :].reshape(n * t, -1)  # [n*T, H] positions that predict completion tokens
            logp, ent = LinearLogprobs.apply(
                h, head.weight, targets.reshape(-1), temperature, chunk_tokens(vocab), with_entropy, scale, softcap
            )
            ent = ent.view(n, t) if with_entropy else torch.zeros(n, t, device=h.device)
            out = torch.stack([logp.view(n, t), ent], dim=-1)  # [n, T, 2]
            return torch.cat([out, out.new_zeros(n, 1, 2)], dim=1)  # [n, T+1, 2]

        original = head.forward
        head.forward = forward
        try:
            yield
        finally:
            head.forward = original
