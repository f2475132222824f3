"""The trainer's side of vLLM's NCCL weight-transfer engine (``rollout.server.push=nccl``, GPU nodes): the
learner's weights as a vLLM ``WeightSource``, the servers' weight-sync routes with our shared secret, and the
engine built from them for one server.

Imports vllm at module import: only ``rollout.server`` imports it, and only for ``rollout.server.push=nccl``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator

import torch
from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource


class GatheredSource(WeightSource):
    """``named_tensors()`` (HF names, full tensors; ZeRO-3 gathers one parameter at a time, a collective every
    rank runs in the same order) with metadata read from the module without gathering: a ZeRO-3 partitioned
    parameter keeps its full shape in ``ds_shape``."""

    def __init__(self, module: torch.nn.Module, named_tensors: Callable[[], Iterator[tuple[str, torch.Tensor]]]):
        self.module, self.named_tensors = module, named_tensors
        self._pass: Iterator[tuple[str, torch.Tensor]] | None = None

    def metadata(self) -> list[ParamMeta]:
        return [
            ParamMeta(name, p.dtype, tuple(getattr(p, "ds_shape", p.shape)))
            for name, p in self.module.named_parameters()
        ]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        self._pass = iter(self.named_tensors())
        return self._pass

    def drain(self) -> None:
        """Walk the rest of the current pass: a send that failed half-way still owes the other ranks the
        ZeRO-3 gathers of the parameters it did not reach (they would wait in them forever)."""
        for _ in self._pass or ():
            pass
        self._pass = None


class AuthClient:
    """vLLM's ``HTTPVLLMWeightSyncClient`` routes, through the backend's ``control(url, path, body)`` call (which
    sends the shared secret with every request)."""

    def __init__(self, url: str, control: Callable[[str, str, dict | None], dict]):
        self.url, self.control = url, control

    def _post(self, path: str, body: dict | None = None) -> None:
        self.control(self.url, path, body)

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self._post("init_weight_transfer_engine", {"init_info": init_info})

    def shutdown_weight_transfer_engine(self) -> None:
        self._post("shutdown_weight_transfer_engine")

    def start_weight_update(self) -> None:
        self._post("start_weight_update")

    def update_weights(self, update_info) -> None:
        from vllm.distributed.weight_transfer.clients import _json_safe_update_payload

        self._post("update_weights", {"update_info": _json_safe_update_payload(update_info)})

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._post("finish_weight_update", {"weight_version": weight_version} if weight_version else None)


def trainer_engine(url: str, rank: int, world_size: int, control, module: torch.nn.Module, named_tensors):
    """vLLM's NCCL trainer engine for the server at ``url``: trainer rank 0 (which opens the rendezvous port on
    ``GROUPWISE_NCCL_HOST`` or ``MASTER_ADDR``) plus the server's ``world_size - 1`` workers."""
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

    host = os.environ.get("GROUPWISE_NCCL_HOST") or os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = _free_port(host) if rank == 0 else 0
    info = NCCLTrainerInitInfo(master_address=host, master_port=port, world_size=world_size, rank=rank)
    client, source = AuthClient(url, control), GatheredSource(module, named_tensors)
    return WeightTransferTrainerFactory.trainer_init(info, client=client, source=source)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))  # a free port on the interface the servers reach
        return s.getsockname()[1]
