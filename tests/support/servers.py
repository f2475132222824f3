"""What the tests of real ``vllm serve`` processes share: the tiny model they serve, free ports, a health
check, and the arguments of a small training run against them."""

from __future__ import annotations

import socket
from pathlib import Path

import requests
import torch

NEW = 16  # tokens per completion in the server tests
ATOL = 1e-4  # fp32 on CPU: a server's log-probs and the learner's agree to rounding


def tiny32(directory: Path, **kw) -> Path:
    """A tiny random Qwen2 with head_dim 32 (vLLM's CPU attention refuses 16) and tied embeddings."""
    from toylab.models import save_tiny

    return save_tiny(directory, seed=0, hidden=128, layers=2, heads=4, kv_heads=2, **kw)


def free_ports(n: int = 1) -> int:
    """A port p with p .. p + n - 1 free on 127.0.0.1 (``groupwise serve --servers n`` takes consecutive ports)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            for k in range(1, n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + k))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no {n} consecutive free ports")


def healthy(url: str, timeout: float = 5.0) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def train_args(*, prompts: int = 4, new: int = 16, prompt_tokens: int = 64) -> list[str]:
    """The dotted overrides of a small CPU run on the arithmetic task (add ``rollout.backend`` and the rest)."""
    return [
        "device=cpu",
        "data.source=arith",
        f"data.prompts_per_step={prompts}",
        f"data.max_prompt_tokens={prompt_tokens}",
        f"rollout.max_new_tokens={new}",
        "rollout.group_size=4",
        "optim.micro_batch_size=8",
        "optim.lr=3e-3",
        "reward.name=kimi_lp",
        "eval.every=0",
        "log.tensorboard=false",
    ]


def server_config(model_dir, run_dir, new: int = NEW):
    """The config of a small server-backend run (2 prompts x 4 samples)."""
    from support.helpers import make_config

    cfg = make_config(model_dir, prompts=2, group_size=4, max_new_tokens=new, mbs=8, lr=3e-3)
    cfg.data.max_prompt_tokens = 64
    cfg.run_dir = str(run_dir)
    cfg.rollout.backend = "server"
    return cfg


def backend_for(urls, model_dir, learner=None, push_dir=None, new: int = NEW, **kw):
    """A ``ServerBackend`` on ``urls``; with ``learner``, it pushes the learner's weights."""
    from transformers import AutoTokenizer

    from rollout.server import ServerBackend

    tok = AutoTokenizer.from_pretrained(model_dir)
    return ServerBackend(
        list(urls),
        str(model_dir),
        tok,
        new,
        named_tensors=learner.full_parameters if learner is not None else None,
        push_dir=str(push_dir) if push_dir else None,
        max_model_len=64 + new,
        **kw,
    )


def prompts_of(model_dir) -> list[list[int]]:
    from transformers import AutoTokenizer

    from rollout.base import encode_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)
    return [encode_prompt(tok, "12+30"), encode_prompt(tok, "7+5+9")]


def max_gap(module, completions) -> float:
    """The largest gap between a sampled token's log-prob and the learner's, over ``completions``."""
    from rollout.base import collate
    from trainer.learner import token_logprobs

    batch = collate(completions, module.config.pad_token_id)
    with torch.no_grad():
        logp, _ = token_logprobs(module, batch, 1.0)
    gaps = [(torch.tensor(c.logprobs) - logp[i, : len(c.token_ids)]).abs().max() for i, c in enumerate(completions)]
    return float(max(gaps))
