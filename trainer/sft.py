"""Build the toy reasoner: a ~1M-parameter Qwen2 model supervised-fine-tuned on the toy task on CPU.

This is the starting point of the CPU demo and the toy lab (``builtin:toy-reasoner``). Plain PyTorch on one
process: the model is small enough that DeepSpeed would only add start-up time. The result is saved with
``save_pretrained`` (temporary directory, then rename) and reused by later runs.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from rollout.base import encode_prompt
from rollout.toy import sft_pairs, toy_problems
from trainer.tiny import build_model, build_tokenizer, publish


@dataclass
class ToySpec:
    """Everything that determines the toy reasoner; its hash names the cache directory."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 512
    operands: int = 3
    max_value: int = 99
    max_redundant: int = 3  # redundant lines per SFT solution, uniform in [0, max_redundant]
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0

    def key(self) -> str:
        return "toy-reasoner-" + "-".join(str(v) for v in asdict(self).values())


DEMO = ToySpec()
POSITIONS = 512  # positions of every toy reasoner (prompt + completion budget must fit)

# The test suite's toy reasoner: same recipe, smaller model, 2 operands, fewer steps (about 45 s; ~50% sampled).
TEST = ToySpec(hidden=96, layers=3, intermediate=384, operands=2, max_value=49, max_redundant=2, steps=300)
BUILTINS = {"builtin:toy-reasoner": DEMO, "builtin:toy-reasoner-test": TEST}


def _encode(tok, problem: str, solution: str) -> tuple[list[int], int]:
    prompt = encode_prompt(tok, problem)
    answer = tok(solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return prompt + answer, len(prompt)


def _batch(examples: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, L] and labels [B, L] with -100 on prompt and padding (loss on the answer only)."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, (seq, p) in enumerate(examples):
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, p : len(seq)] = torch.tensor(seq[p:])
    return ids, labels


def sft(spec: ToySpec, out_dir: str | Path, progress: bool = True) -> Path:
    """Train the toy reasoner described by ``spec`` and save it to ``out_dir``; returns the directory."""
    torch.manual_seed(spec.seed)
    tok = build_tokenizer()
    model = build_model(
        tok,
        spec.hidden,
        spec.layers,
        spec.heads,
        spec.kv_heads,
        spec.intermediate,
        max_positions=POSITIONS,
        seed=spec.seed,
    )
    n_params = sum(p.numel() for p in model.parameters())
    data = [
        _encode(tok, p, s) for p, s in sft_pairs(20_000, spec.operands, spec.max_value, spec.max_redundant, spec.seed)
    ]
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warm = max(1, spec.steps // 20)

    def lr_at(s: int) -> float:  # linear warm-up, cosine decay to 10%
        if s < warm:
            return (s + 1) / warm
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (s - warm) / max(1, spec.steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = random.Random(spec.seed)
    model.train()
    t0 = time.time()
    bar = tqdm(range(spec.steps), desc=f"sft toy reasoner ({n_params / 1e6:.2f}M params)", disable=not progress)
    for _ in bar:
        ids, labels = _batch(rng.sample(data, spec.batch_size), tok.pad_token_id)
        loss = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    info = {"spec": asdict(spec), "params": n_params, "final_loss": loss.item(), "seconds": round(time.time() - t0, 1)}
    return publish(out_dir, tok, model, {"toy_reasoner.json": json.dumps(info, indent=2)})


def heldout(spec: ToySpec, n: int = 200, seed: int = 0):
    """The toy task's held-out problems (disjoint from every SFT and RL training problem)."""
    return toy_problems(n, spec.operands, spec.max_value, seed, split="test")
