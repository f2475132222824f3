"""The learner's weights as a vLLM ``WeightSource`` (for vLLM's NCCL weight-transfer engine, GPU nodes).

Imports vllm at module import: only ``rollout.server`` imports it, and only for ``rollout.server_push=nccl``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource


class GatheredSource(WeightSource):
    """``named_tensors()`` (HF names, full tensors; ZeRO-3 gathers one parameter at a time, a collective every
    rank runs in the same order) with metadata read from the module without gathering: a ZeRO-3 partitioned
    parameter keeps its full shape in ``ds_shape``."""

    def __init__(self, module: torch.nn.Module, named_tensors: Callable[[], Iterator[tuple[str, torch.Tensor]]]):
        self.module, self.named_tensors = module, named_tensors

    def metadata(self) -> list[ParamMeta]:
        return [
            ParamMeta(name, p.dtype, tuple(getattr(p, "ds_shape", p.shape)))
            for name, p in self.module.named_parameters()
        ]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self.named_tensors())
