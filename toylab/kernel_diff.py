"""Do AVX2 kernels round differently from this machine's? The check behind `make lab-avx2` (docs/toy-lab.md).

    python scripts/kernel_diff.py [--model builtin:toy-lengthpays]

Runs one forward pass of a shipped starting model on fixed random tokens twice, in child processes: with this
machine's kernels and with ATen, oneDNN and MKL capped at AVX2 (the environment `make lab-avx2` sets), and
prints how many logits differ and by how much. Identical logits would mean the AVX2 re-run tests nothing but new
seeds; differing ones mean each training run's trajectory departs from the first step on, as on another machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def forward(model: str, out: Path) -> None:
    """Child: logits of ``model`` on 8 x 48 seeded random tokens, saved to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM

    from toylab.reasoner import resolve_model_path

    torch.set_num_threads(1)
    m = AutoModelForCausalLM.from_pretrained(resolve_model_path(model)).eval()
    ids = torch.randint(0, m.config.vocab_size, (8, 48), generator=torch.Generator().manual_seed(0))  # [8, 48]
    with torch.no_grad():
        logits = m(ids).logits.float()  # [8, 48, V]
    torch.save({"kernels": torch.backends.cpu.get_cpu_capability(), "logits": logits}, out)


def main(argv: list[str] | None = None) -> int:
    """Both forward passes, each in a child process (the caps must be set before torch loads), compared."""
    p = argparse.ArgumentParser(
        prog="scripts/kernel_diff.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="builtin:toy-lengthpays")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        forward(args.model, args.child)
        return 0
    import torch

    base = {k: v for k, v in os.environ.items() if k not in AVX2}
    got = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, env in (("native", base), ("avx2", {**base, **AVX2})):
            out = Path(tmp) / f"{name}.pt"
            cmd = [sys.executable, "-m", "toylab.kernel_diff", "--model", args.model, "--child", str(out)]
            subprocess.run(cmd, env=env, check=True, cwd=Path(__file__).resolve().parents[1])
            got.append(torch.load(out))
    a, b = got[0]["logits"], got[1]["logits"]
    differ = (a != b).double().mean().item()
    print(f"{args.model}: kernels {got[0]['kernels']} vs {got[1]['kernels']}: {100 * differ:.1f}% of {a.numel():,} "
          f"logits differ, largest difference {(a - b).abs().max().item():.2e}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
