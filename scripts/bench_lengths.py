"""Realistic completion lengths from a real ``vllm serve``, for ``scripts/bench_async.py`` only.

A random tiny model almost never samples EOS, so every completion would run to ``max_tokens``: a batch would
never wait for its longest rows, the cost that dominates real RL runs. ``ForcedLengths`` is a vLLM v1 logits
processor that gives each row the length ``bench_vs_trl.py --varlen`` draws (a log-normal with median a fifth
of max new tokens and sigma 1, clamped to [4, max]: a tenfold spread inside a batch), seeded by the row's own
vLLM seed (the trainer seeds every request; vLLM gives sample ``i`` of a request seed ``s + i``), so the k=0, 1
and 2 runs generate the same lengths at the same step. EOS (every stop token) is masked before a row's target
and forced at it: the row ends exactly at its target, EOS included, and the trainer sees an ordinary completion.

The server's log-prob of a forced EOS is 0 (processed log-probs come after the logits processors), not the
model's; the other tokens keep the model's log-probs up to the tiny mass of the masked EOS. So the processor
acts only on requests for exactly ``GROUPWISE_BENCH_LENGTHS`` new tokens (the training requests) and never on
``ignore_eos`` ones (the bench's full-batch calibration): the start-up probe asks for fewer tokens and sees the
model's own distribution. No product code knows about it: the bench writes a plugin ``.dist-info`` (vLLM loads
logits processors from the ``vllm.logits_processors`` entry points of whatever is on ``sys.path``) and puts it
on the server's ``PYTHONPATH``; without that directory nothing loads this module.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

LENGTHS_ENV = "GROUPWISE_BENCH_LENGTHS"  # max new tokens of the requests whose lengths are forced; unset: off
MIN_LENGTH = 4


def length_from_normal(z: float, max_new_tokens: int) -> int:
    """The length for a standard-normal draw ``z``: exp(log(max / 5) + z) rounded, clamped to [4, max]."""
    return int(min(max(round(math.exp(math.log(max_new_tokens / 5) + z)), MIN_LENGTH), max_new_tokens))


def target_length(seed: int, max_new_tokens: int) -> int:
    """The target length (EOS included) of the row vLLM samples with ``seed``."""
    g = torch.Generator().manual_seed(seed % 2**63)
    return length_from_normal(float(torch.randn(1, generator=g, dtype=torch.float64)), max_new_tokens)


class ForcedLengths(LogitsProcessor):
    """EOS masked before each row's target length and forced at it (see the module docstring)."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.max_new_tokens = int(os.environ.get(LENGTHS_ENV) or 0)
        self.unseeded = 0  # rows without a seed take seeds 0, 1, 2, ... in arrival order
        self.rows: dict[int, tuple[int, list[int], list[int], int]] = {}  # index -> target, output, stops, eos

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token wins

    def _row(self, params: SamplingParams, _prompt: list[int] | None, output: list[int]):
        if not self.max_new_tokens or params.ignore_eos or params.max_tokens != self.max_new_tokens:
            return None
        if params.eos_token_id is None:
            return None
        seed = params.seed
        if seed is None:
            seed, self.unseeded = self.unseeded, self.unseeded + 1
        stops = sorted(params.all_stop_token_ids | {params.eos_token_id})
        return target_length(seed, self.max_new_tokens), output, stops, params.eos_token_id

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.rows, batch_update, self._row)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        for index, (target, output, stops, eos) in self.rows.items():
            if len(output) + 1 < target:
                logits[index, stops] = -math.inf  # [V]: no stop before the target
            elif len(output) + 1 == target:
                logits[index] = -math.inf  # [V]: the target token is EOS
                logits[index, eos] = 0.0
        return logits


def write_plugin(directory: Path) -> Path:
    """A ``.dist-info`` under ``directory`` whose entry point loads ``ForcedLengths`` into every vLLM engine
    that has ``directory`` on its ``sys.path``; returns ``directory``."""
    info = Path(directory) / "groupwise_bench_lengths-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: groupwise-bench-lengths\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[vllm.logits_processors]\nbench_lengths = scripts.bench_lengths:ForcedLengths\n"
    )
    return Path(directory)
