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
"""

from __future__ import annotations

import contextlib

import torch

CHUNK_BYTES = 128 << 20  # fp32 logits of one chunk; the pass holds about three such buffers at a time


def chunk_tokens(vocab: int) -> int:
    """Tokens per chunk: ``CHUNK_BYTES`` of fp32 logits (at least 1; a small vocabulary is one chunk)."""
    return max(1, CHUNK_BYTES // (4 * vocab))


class LinearLogprobs(torch.autograd.Function):
    """``(hidden [M, H], weight [V, H], targets [M]) -> (logp [M], entropy [M] or empty)``, fp32, at temperature
    ``temperature``: logp_m = z_m[y_m] - logsumexp(z_m), z = hidden @ weight.T / T. Entropy has no gradient."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature: float, chunk: int, with_entropy: bool):
        m = hidden.shape[0]
        logp = torch.empty(m, dtype=torch.float32, device=hidden.device)
        logz = torch.empty(m, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty(m if with_entropy else 0, dtype=torch.float32, device=hidden.device)
        for s in range(0, m, chunk):
            z = (hidden[s : s + chunk] @ weight.t()).float() / temperature  # [c, V]
            lz = z.logsumexp(dim=-1)  # [c]
            logz[s : s + chunk] = lz
            logp[s : s + chunk] = z.gather(1, targets[s : s + chunk, None]).squeeze(1) - lz
            if with_entropy:  # H = log Z - sum_v p_v z_v
                entropy[s : s + chunk] = lz - (torch.softmax(z, dim=-1) * z).sum(dim=-1)
        ctx.save_for_backward(hidden, weight, targets, logz)
        ctx.temperature, ctx.chunk = temperature, chunk
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, targets, logz = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for s in range(0, hidden.shape[0], ctx.chunk):
            h, g = hidden[s : s + ctx.chunk], grad_logp[s : s + ctx.chunk].float()  # [c, H], [c]
            z = (h @ weight.t()).float() / ctx.temperature  # [c, V], recomputed
            dz = torch.exp(z - logz[s : s + ctx.chunk, None]).mul_(-g[:, None])  # -g p
            dz.scatter_add_(1, targets[s : s + ctx.chunk, None], g[:, None])  # + g onehot(y)
            dz = dz.div_(ctx.temperature).to(hidden.dtype)  # [c, V] d loss / d (hidden @ weight.T)
            if grad_hidden is not None:
                grad_hidden[s : s + ctx.chunk] = dz @ weight
            grad_weight += (dz.t() @ h).float()
        return grad_hidden, grad_weight.to(weight.dtype), None, None, None, None


@contextlib.contextmanager
def head_logprobs(model: torch.nn.Module, targets: torch.Tensor, temperature: float, with_entropy: bool):
    """While active, the model's LM head returns ``[n, T+1, 2]``: (log-prob of ``targets [n, T]``, entropy)
    at each of the first T positions it is given (the last one predicts past the completion: zeros)."""
    head = model.get_output_embeddings()
    vocab = getattr(head, "out_features", None) or head.weight.shape[0]  # ZeRO-3: the weight may be partitioned now
    if getattr(head, "bias", None) is not None:
        raise NotImplementedError("chunked log-probs assume an LM head without bias (every HF causal LM used here)")

    def forward(hidden: torch.Tensor) -> torch.Tensor:  # [n, T+1, H] -> [n, T+1, 2]
        n, t = targets.shape
        h = hidden[:, :t, :].reshape(n * t, -1)  # [n*T, H] positions that predict completion tokens
        logp, ent = LinearLogprobs.apply(
            h, head.weight, targets.reshape(-1), temperature, chunk_tokens(vocab), with_entropy
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
