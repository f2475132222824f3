"""The plan of `groupwise check-gpu`: the checks, each a command run in its own process, in order."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.check_gpu import GROUP, NEW_TOKENS, PROMPTS_PER_GPU, REAL_VOCAB
from app.check_gpu.results import pytest_result, train_result


@dataclass
class Check:
    """One step of the report: a command run in its own process group, with a time limit."""

    name: str
    title: str
    argv: list[str]
    timeout: float  # seconds, capped by what is left of the global deadline
    reserve: float = 0.0  # seconds later checks keep for themselves out of the global deadline
    needs: tuple[str, ...] = ()  # checks that must have passed first
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""  # shown by --dry-run under the command
    clean: tuple[Path, ...] = ()  # outputs of an earlier report, removed before the check runs
    post: Callable[[dict, dict], dict] | None = None  # (this result, all results) -> result, in this process


# ----------------------------------------------------------------------------- the plan


def train_overrides(model: Path, run: Path, steps: int, gpus: int, zero: int) -> list[str]:
    """A short run in base_gpu.yaml's setting (bf16, ZeRO-3 + gradient checkpointing, colocated vLLM with
    sleep mode), sized to take minutes: 8 prompts x 8 samples x 512 new tokens (random weights: EOS is rare) per GPU."""
    return [
        f"model.path={model}",
        f"run_dir={run}",
        "device=cuda",
        f"steps={steps}",
        "seed=0",
        "model.dtype=bf16",
        "model.gradient_checkpointing=true",
        "data.source=arith",
        f"data.prompts_per_step={PROMPTS_PER_GPU * gpus}",
        "rollout.backend=vllm",
        f"rollout.group_size={GROUP}",
        f"rollout.max_new_tokens={NEW_TOKENS}",
        "rollout.vllm.gpu_memory_utilization=0.35",
        "rollout.vllm.sleep=true",
        "reward.name=binary",
        "optim.lr=1e-6",
        "optim.micro_batch_size=16",
        f"deepspeed.zero_stage={zero}",
        "eval.every=0",
        "log.tensorboard=false",
        "checkpoint.every=0",
        "checkpoint.keep=1",
        "guard.collapse_action=off",
    ]


def plan(args) -> list[Check]:
    """Every check, in order: the stack, the GPU tests, then the training run (its figures are the report's)."""
    work = Path(args.work)
    py = sys.executable

    def worker(name: str, *extra: str) -> list[str]:
        return [py, "-m", "app.check_gpu.workers", name, "--result", str(work / f"{name}.json"), *extra]

    def pytest(marker: str, name: str) -> list[str]:
        junit = work / f"{name}.xml"
        argv = [py, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-m", marker, "tests/gpu/test_gpu.py"]
        return [*argv, f"--junitxml={junit}"]

    model = work / "qwen2.5-0.5b-shaped"
    learner_xml, vllm_xml = work / "tests-learner.xml", work / "tests-vllm.xml"
    return [
        Check("torch", "torch CUDA build, devices, free memory, bf16 matmul probe", worker("torch"), 90, 20),
        Check("vllm", "vLLM imports (CUDA build, pinned version)", worker("vllm"), 120, 20),
        Check("deepspeed", "DeepSpeed imports, CUDA accelerator, bf16", worker("deepspeed"), 90, 20),
        Check("nccl", "NCCL all-reduce over every GPU (one process each)", worker("nccl"), 120, 20),
        Check(
            "tests-learner",
            "GPU tests, learner: ZeRO-2 and ZeRO-3 steps, chunked log-probs (bf16)",
            pytest("gpu and not vllm", "tests-learner"),
            180,
            60,
            clean=(learner_xml,),
            post=lambda res, results: pytest_result(res, learner_xml),
        ),
        Check(
            "tests-vllm",
            "GPU tests, vLLM: bf16 engine + sleep mode, weight-sync round trip, server broadcast push (NCCL)",
            pytest("gpu and vllm", "tests-vllm"),
            240,
            60,
            clean=(vllm_xml,),
            post=lambda res, results: pytest_result(res, vllm_xml),
        ),
        Check(
            "build-model",
            f"build a Qwen2.5-0.5B-shaped random model at the real vocabulary ({REAL_VOCAB:,})",
            worker("build-model", "--model", str(model)),
            120,
            30,
        ),
        train_check(args, model),
    ]


def train_check(args, model: Path) -> Check:
    """The short ``groupwise train`` run (under torchrun when it has several GPUs) whose metrics give the figures."""
    py, run = sys.executable, Path(args.work) / "train"
    if args.train_gpus > 1:
        launcher = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.train_gpus)]
        launcher += ["-m", "app.cli", "train"]
    else:
        launcher = [py, "-m", "app.cli", "train"]  # what the `groupwise train` console script runs
    return Check(
        "train",
        f"groupwise train, {args.train_steps} steps: colocated vLLM (sleep mode), bf16, ZeRO-{args.train_zero}",
        launcher + train_overrides(model, run, args.train_steps, args.train_gpus, args.train_zero),
        360,
        150,
        needs=("build-model",),
        note=f"(python -m app.cli is `groupwise`); figures from {run}/metrics.jsonl, first step = warm-up",
        clean=(run,),
        post=lambda res, results: train_result(res, results, args),
    )
