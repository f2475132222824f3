"""The broadcast weight push (``rollout.server.push=broadcast``), the half both sides share: one transfer group
spanning trainer rank 0 and every server's workers, bucketed tensors, and the vLLM worker engine that receives.

The only device-specific part is the communicator (``Communicator``): gloo on CPU, vLLM's ``PyNcclCommunicator``
on CUDA. Rendezvous, bucketing, packing, unpacking, loading and the engine's lifecycle are this one code, so
the CPU tests run what a GPU push runs.

The worker side is a vLLM weight-transfer engine registered in vLLM's own factory under ``groupwise``
(``WeightTransferEngineFactory``, as vLLM registers its ``nccl`` engine). ``rollout.vllm_backend`` imports this
module when a vLLM worker resolves ``--worker-extension-cls rollout.vllm_backend.WeightSyncExtension``, before
the worker builds its engine from ``--weight-transfer-config '{"backend": "groupwise"}'``; the trainer then
drives it through vLLM's routes (``/init_weight_transfer_engine``, ``/start_weight_update``,
``/update_weights``, ``/finish_weight_update``). The trainer side is ``rollout.weight_source``.

Imports vllm at module import: only vLLM workers and the trainer's broadcast push import it.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
from vllm.distributed.weight_transfer.base import WeightTransferEngine, WeightTransferInitInfo, WeightTransferUpdateInfo

BACKEND = "groupwise"  # the key in vLLM's factory, and --weight-transfer-config's backend
RENDEZVOUS_SECONDS = 120  # how long the group's rendezvous waits for every rank (a hang guard)
TRANSFER_SECONDS = 600  # how long one bucket's broadcast may wait (the trainer gathers between buckets)

Meta = tuple[str, str, list[int]]  # (name, dtype name, shape) of one tensor, as sent to the workers


def local_address(peer: str) -> str:
    """This machine's address on the interface that routes to ``peer`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((socket.gethostbyname(peer), 9))
        return s.getsockname()[0]


class Communicator:
    """One transfer group: ``broadcast(tensor, src)`` in place on every rank, ``close()``. ``kind`` is ``gloo``
    (tensors on CPU) or ``nccl`` (on ``device``, CUDA); the rendezvous is vLLM's ``StatelessProcessGroup`` on a
    TCPStore at ``host:port`` (rank 0 serves it on ``listen``, a socket bound to that one interface)."""

    def __init__(
        self, kind: str, host: str, port: int, *, rank: int, world: int, device: torch.device, listen=None
    ) -> None:
        from vllm.distributed.utils import StatelessProcessGroup

        if kind not in ("gloo", "nccl"):
            raise ValueError(f"communicator {kind!r}: choose gloo (CPU) or nccl (CUDA)")
        self.kind = kind
        store = StatelessProcessGroup.create(
            host=host, port=port, rank=rank, world_size=world, store_timeout=RENDEZVOUS_SECONDS, listen_socket=listen
        )
        if kind == "nccl":
            from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
            from vllm.utils.nccl import unpinned_nccl_env

            self.device = device
            with unpinned_nccl_env():
                self.group = PyNcclCommunicator(store, device=device)
        else:
            from torch.distributed import PrefixStore, ProcessGroupGloo

            self.device = torch.device("cpu")
            options = ProcessGroupGloo._Options()
            # gloo listens on the interface this rank reaches the rendezvous through, not on every interface
            me = host if rank == 0 else local_address(host)
            options._devices = [ProcessGroupGloo.create_device(hostname=me)]
            options._timeout = timedelta(seconds=TRANSFER_SECONDS)
            self.group = ProcessGroupGloo(PrefixStore("groupwise-push", store.store), rank, world, options)

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        if self.kind == "nccl":
            self.group.broadcast(tensor, src=src)  # on the current stream; the caller synchronizes
        else:
            self.group.broadcast(tensor, src).wait()

    def close(self) -> None:
        """Release the group; on gloo, peers blocked in a broadcast of it fail instead of waiting."""
        if self.kind == "nccl":
            self.group.destroy()
        else:
            self.group.abort()


def nbytes(meta: Meta) -> int:
    return math.prod(meta[2]) * torch.empty((), dtype=getattr(torch, meta[1])).element_size()


def buckets(metas: list[Meta], limit: int) -> list[list[int]]:
    """Consecutive tensors packed up to ``limit`` bytes per bucket (a larger tensor is a bucket of its own):
    both sides cut the stream here, from the same metadata."""
    out: list[list[int]] = []
    size = 0
    for i, meta in enumerate(metas):
        n = nbytes(meta)
        if out and size + n <= limit:
            out[-1].append(i)
            size += n
        else:
            out.append([i])
            size = n
    return out


def send_buckets(comm: Communicator, pairs: Iterator[tuple[str, torch.Tensor]], metas: list[Meta], limit: int):
    """Rank 0: pack each bucket of ``pairs`` (which must follow ``metas``) into one byte tensor and broadcast
    it. Returns the number of tensors sent."""
    sent = 0
    for bucket in buckets(metas, limit):
        parts = []
        for i in bucket:
            name, tensor = next(pairs)
            want = metas[i]
            if name != want[0] or str(tensor.dtype) != f"torch.{want[1]}" or list(tensor.shape) != want[2]:
                raise ValueError(
                    f"the weight stream disagrees with its metadata at {i}: declared {want}, got {name!r} "
                    f"{tensor.dtype} {list(tensor.shape)}"
                )
            parts.append(tensor.detach().to(comm.device).contiguous().view(-1).view(torch.uint8))
        comm.broadcast(torch.cat(parts), src=0)
        sent += len(parts)
    if comm.kind == "nccl":
        torch.cuda.current_stream().synchronize()
    return sent


def receive_buckets(
    comm: Communicator, metas: list[Meta], limit: int, load: Callable[[list[tuple[str, torch.Tensor]]], object]
) -> int:
    """A worker: receive each bucket, cut it into the named tensors and ``load`` them. Returns the count."""
    count = 0
    for bucket in buckets(metas, limit):
        sizes = [nbytes(metas[i]) for i in bucket]
        data = torch.empty(sum(sizes), dtype=torch.uint8, device=comm.device)
        comm.broadcast(data, src=0)
        named, offset = [], 0
        for i, part in zip(bucket, data.split(sizes)):
            name, dtype_name, shape = metas[i]
            dtype = getattr(torch, dtype_name)
            itemsize = torch.empty((), dtype=dtype).element_size()
            part = part if offset % itemsize == 0 else part.clone()  # a dtype view needs an aligned offset
            named.append((name, part.view(dtype).view(shape)))
            offset += part.numel()
        load(named)
        count += len(named)
    if comm.kind == "nccl":
        torch.cuda.current_stream().synchronize()
    return count


def refresh_lm_heads(model: torch.nn.Module) -> None:
    """Re-process every ``ParallelLMHead`` from its current parameter: a tied head shares the embedding's
    parameter without being loaded by name, so on CPU its packed GEMM weight would keep the old values (a
    measured 1.7-nat gap). On CUDA the processing is a no-op."""
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

    for module in model.modules():
        if isinstance(module, ParallelLMHead):
            module.quant_method.process_weights_after_loading(module)


@dataclass
class GroupInit(WeightTransferInitInfo):
    """``/init_weight_transfer_engine``'s payload: the rendezvous, the group's size, this server's first rank
    (its workers take ``rank_offset + worker rank``), the communicator and the bucket size."""

    master_address: str
    master_port: int
    rank_offset: int
    world_size: int
    communicator: str
    bucket_bytes: int


@dataclass
class GroupUpdate(WeightTransferUpdateInfo):
    """``/update_weights``'s payload: every tensor of the push, in order (the buckets are cut from it)."""

    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]


class GroupReceiver(WeightTransferEngine[GroupInit, GroupUpdate]):
    """The worker's engine: joins the group at init, receives a push's buckets in ``update_weights`` and loads
    them through vLLM's layerwise reload (``start``/``finish_weight_update``), re-processing tied LM heads."""

    init_info_cls = GroupInit
    update_info_cls = GroupUpdate

    def __init__(self, config, vllm_config, device: torch.device, model: torch.nn.Module) -> None:
        super().__init__(config, vllm_config, device, model)
        self.comm: Communicator | None = None
        self.bucket_bytes = 0

    def init_transfer_engine(self, init_info: GroupInit) -> None:
        self.shutdown()  # a new group (the trainer's servers changed): the old one is gone on its side
        pc = self.parallel_config
        rank = init_info.rank_offset + pc.data_parallel_index * pc.world_size + pc.rank
        device = self.device
        if init_info.communicator == "nccl":
            device = torch.device("cuda", torch.accelerator.current_device_index())
        host, port, world = init_info.master_address, init_info.master_port, init_info.world_size
        self.comm = Communicator(init_info.communicator, host, port, rank=rank, world=world, device=device)
        self.bucket_bytes = init_info.bucket_bytes

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)
        refresh_lm_heads(self.model)

    def update_weights(self, update_info: dict) -> None:
        """vLLM's, without its accelerator synchronize (there is none on CPU; the NCCL receive synchronizes);
        a receive that fails still closes the layerwise reload, so the next push starts clean."""
        try:
            self.receive_weights(self.parse_update_info(update_info))
        except BaseException:
            try:
                self.finish_weight_update()
            finally:
                self.shutdown()  # the group is broken: the trainer opens a new one
            raise

    def receive_weights(self, update_info: GroupUpdate) -> None:
        if self.comm is None:
            raise RuntimeError("no transfer group: /init_weight_transfer_engine must come first")
        metas = [(n, d, list(s)) for n, d, s in zip(update_info.names, update_info.dtype_names, update_info.shapes)]
        receive_buckets(self.comm, metas, self.bucket_bytes, self.model.load_weights)

    def shutdown(self) -> None:
        if self.comm is not None:
            comm, self.comm = self.comm, None
            comm.close()


def register() -> None:
    """``GroupReceiver`` in vLLM's worker-engine factory (idempotent)."""
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    try:
        WeightTransferEngineFactory.register_engine(BACKEND, GroupReceiver)
    except ValueError:  # registered already (this module imported twice under other names)
        pass


register()


def metas_of(params: Iterable[tuple[str, torch.dtype, tuple[int, ...]]]) -> list[Meta]:
    return [(name, str(dtype).removeprefix("torch."), list(shape)) for name, dtype, shape in params]
