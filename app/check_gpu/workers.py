"""The workers of `groupwise check-gpu`, each run in a check's own process and leaving its verdict in a JSON file:

python -m app.check_gpu.workers torch --result work/torch.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import sys
import time
from pathlib import Path

from app.check_gpu import PINNED, QWEN05B, REAL_VOCAB


def write_result(path: str, status: str, reason: str = "", figures=None, details=None) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    data = {"status": status, "reason": reason, "figures": figures or {}, "details": details or {}}
    Path(path).write_text(json.dumps(data, indent=1))


def worker_torch(args) -> None:
    import torch

    d = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "python": platform.python_version()}
    problems = []
    if torch.version.cuda is None:
        return write_result(args.result, "fail", f"torch {torch.__version__} is a CPU build (make setup-gpu)", {}, d)
    nccl = torch.cuda.nccl.version() if torch.cuda.is_available() else None
    d["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl
    devices = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        devices.append(
            {
                "index": i,
                "name": p.name,
                "capability": f"{p.major}.{p.minor}",
                "total_gib": round(total / 2**30, 1),
                "free_gib": round(free / 2**30, 1),
            }
        )
        if free < 0.8 * total:
            problems.append(f"GPU {i} has {free / 2**30:.1f} of {total / 2**30:.1f} GiB free (other processes?)")
    d["devices"] = devices
    if not devices:
        return write_result(args.result, "fail", "torch sees no CUDA device", {}, d)
    if not torch.cuda.is_bf16_supported():
        problems.append(f"{devices[0]['name']} has no bf16 support")
    if torch.__version__.split("+")[0] != PINNED["torch"]:
        d["note"] = f"torch {torch.__version__}; groupwise pins {PINNED['torch']} (the vllm 0.32.0 build's)"
    n, iters = 8192, 20
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        a @ b
    end.record()
    torch.cuda.synchronize()
    tflops = 2 * n**3 * iters / (start.elapsed_time(end) / 1e3) / 1e12
    figures = {"matmul_tflops": round(tflops, 1)}
    names = ", ".join(f"{x['name']} ({x['free_gib']}/{x['total_gib']} GiB free)" for x in devices)
    reason = "; ".join(problems) or f"torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL {d['nccl']}; {names}"
    write_result(args.result, "fail" if problems else "pass", reason, figures, d)


def worker_vllm(args) -> None:
    t0 = time.perf_counter()
    try:
        import vllm
        from vllm.platforms import current_platform
    except Exception as e:
        return write_result(args.result, "fail", f"import vllm: {type(e).__name__}: {e} (make setup-gpu)")
    d = {"vllm": vllm.__version__, "platform": type(current_platform).__name__, "import_s": time.perf_counter() - t0}
    if not current_platform.is_cuda():
        return write_result(
            args.result, "fail", f"vllm {vllm.__version__} is not the CUDA build ({d['platform']})", {}, d
        )
    if vllm.__version__ != PINNED["vllm"]:
        why = f"vllm {vllm.__version__}; groupwise pins {PINNED['vllm']} (make setup-gpu)"
        return write_result(args.result, "fail", why, {}, d)
    write_result(args.result, "pass", f"vllm {vllm.__version__}, {d['platform']}", {}, d)


def worker_deepspeed(args) -> None:
    try:
        import deepspeed
        from deepspeed.accelerator import get_accelerator
    except Exception as e:
        return write_result(args.result, "fail", f"import deepspeed: {type(e).__name__}: {e}")
    acc = get_accelerator()
    d = {"deepspeed": deepspeed.__version__, "accelerator": acc.device_name(), "bf16": acc.is_bf16_supported()}
    if acc.device_name() != "cuda":
        why = f"DeepSpeed {deepspeed.__version__} picked the {acc.device_name()!r} accelerator, not cuda"
        return write_result(args.result, "fail", why, {}, d)
    if not acc.is_bf16_supported():
        return write_result(args.result, "fail", "DeepSpeed reports no bf16 on this accelerator", {}, d)
    write_result(args.result, "pass", f"deepspeed {deepspeed.__version__}, accelerator cuda, bf16", {}, d)


def _nccl_rank(rank: int, world: int, port: int, result: str) -> None:
    """One rank of the NCCL check: a correctness all-reduce, then 256 MiB all-reduces timed."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank)
    dist.init_process_group(
        "nccl",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
        device_id=dev,
    )
    x = torch.full((1024,), float(rank + 1), device=dev)
    dist.all_reduce(x)
    expect = world * (world + 1) / 2
    correct = bool(torch.all(x == expect).item())
    size = 256 << 20
    buf = torch.ones(size // 2, dtype=torch.bfloat16, device=dev)
    for _ in range(3):
        dist.all_reduce(buf)
    torch.cuda.synchronize()
    iters = 10
    t0 = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(buf)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / iters
    busbw = size * 2 * (world - 1) / world / seconds / 1e9 if world > 1 else None
    if rank == 0:
        figures = {"nccl_busbw_gbps": round(busbw, 1) if busbw else None}
        details = {"world": world, "allreduce_256mib_ms": round(seconds * 1e3, 3), "nccl": torch.cuda.nccl.version()}
        if not correct:
            write_result(result, "fail", f"all-reduce over {world} GPUs gave {x[0].item()}, expected {expect}")
        else:
            one = " (one GPU: no inter-GPU traffic)" if world == 1 else f", bus bandwidth {busbw:.0f} GB/s"
            write_result(result, "pass", f"all-reduce over {world} GPU(s) correct{one}", figures, details)
    dist.destroy_process_group()


def worker_nccl(args) -> None:
    import torch
    import torch.multiprocessing as mp

    world = torch.cuda.device_count()
    if world == 0:
        return write_result(args.result, "fail", "no CUDA device")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_nccl_rank, args=(world, port, args.result), nprocs=world, join=True)


def real_vocab_tokenizer(vocab: int = REAL_VOCAB):
    """The toy lab's byte-level tokenizer (256 bytes + ChatML specials) padded with filler tokens to ``vocab``
    entries, so every id a random model at that vocabulary can emit decodes (vLLM detokenizes each sampled id;
    an id past the tokenizer breaks it). Prompts stay byte-level."""
    from toylab.models import build_tokenizer

    return build_tokenizer(vocab)


def qwen05b_config(tok):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=REAL_VOCAB,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        **QWEN05B,
    )


def worker_build_model(args) -> None:
    """Random-init Qwen2.5-0.5B shape in bf16, initialized on the GPU (seconds, not a minute on the CPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    from toylab.models import publish

    t0 = time.perf_counter()
    tok = real_vocab_tokenizer()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(qwen05b_config(tok), dtype=torch.bfloat16)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    params = sum(p.numel() for p in model.parameters())
    out = Path(args.model)
    if out.exists():  # a model from an earlier check: rebuild, the shape may have changed
        shutil.rmtree(out)
    publish(out, tok, model.cpu())
    details = {"params": params, "path": str(out), "device": torch.cuda.get_device_name(0), "vocab": REAL_VOCAB}
    why = f"{params / 1e6:.0f}M parameters, vocabulary {len(tok):,}, in {time.perf_counter() - t0:.0f} s"
    write_result(args.result, "pass", why, {}, details)


WORKERS = {
    "torch": worker_torch,
    "vllm": worker_vllm,
    "deepspeed": worker_deepspeed,
    "nccl": worker_nccl,
    "build-model": worker_build_model,
}


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.check_gpu.workers", description="one check's worker")
    p.add_argument("worker", choices=sorted(WORKERS))
    p.add_argument("--result", required=True, help="where the verdict (JSON) goes")
    p.add_argument("--model", help="build-model: the model directory")
    args = p.parse_args(argv)
    WORKERS[args.worker](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
