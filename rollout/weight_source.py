"""The trainer's side of the broadcast weight push (``rollout.server.push=broadcast``): the learner's weights as
a vLLM ``WeightSource`` (metadata without gathering, one ZeRO-3 gather per parameter), the servers' weight-sync
routes with our shared secret, and ``GroupSender``, trainer rank 0's end of the one transfer group spanning
every server (the shared half, communicator included, is ``rollout.weight_transfer``).

Imports vllm at module import: only the broadcast push imports it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import torch
from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

from rollout.weight_transfer import Communicator, GroupInit, GroupUpdate, metas_of, send_buckets


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
        """Walk the rest of the current pass, or a whole pass when none began: a send that failed half-way (or
        before its first tensor) still owes the other ranks the ZeRO-3 gathers it did not reach (they would
        wait in them forever)."""
        for _ in self._pass if self._pass is not None else self.named_tensors():  # none begun: a whole pass
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

    def update_weights_raw(self, update_info: dict) -> None:
        """``update_info`` is JSON already (names, dtype names, shapes)."""
        self._post("update_weights", {"update_info": update_info})

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._post("finish_weight_update", {"weight_version": weight_version} if weight_version else None)


class GroupSender:
    """Trainer rank 0's end of one transfer group: itself (rank 0) and the ``workers`` ranks of each server in
    ``clients`` (server i's workers from rank ``1 + i * workers``). ``open`` and ``send`` return the servers
    whose HTTP side failed (url -> error); a broken broadcast raises. One ``send`` is one walk of the source
    (one ZeRO-3 gather per parameter), whatever the number of servers."""

    def __init__(
        self, clients: dict[str, AuthClient], *, workers: int, host: str, device: torch.device, bucket_bytes: int
    ):
        self.clients, self.workers, self.host = clients, workers, host
        self.device, self.bucket_bytes = device, bucket_bytes
        self.kind = "nccl" if device.type == "cuda" else "gloo"
        self.comm: Communicator | None = None
        self.fresh = True  # opened by this push (the server backend marks it old when a later push reuses it)

    def _each(self, fn: Callable[[str, AuthClient], None]) -> dict[str, str]:
        with ThreadPoolExecutor(max_workers=len(self.clients)) as pool:
            futures = {url: pool.submit(fn, url, c) for url, c in self.clients.items()}
        return {url: _why(f) for url, f in futures.items() if f.exception() is not None}

    def open(self) -> dict[str, str]:
        """The rendezvous (a TCPStore on ``host`` only, on a port the kernel picks there) and the group."""
        listen = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listen.bind((self.host, 0))  # the interface the servers reach, not every interface
        listen.listen()
        port, world = listen.getsockname()[1], 1 + len(self.clients) * self.workers

        def init(url: str, client: AuthClient) -> None:
            offset = 1 + list(self.clients).index(url) * self.workers
            info = GroupInit(self.host, port, offset, world, self.kind, self.bucket_bytes)
            client.init_weight_transfer_engine(asdict(info))

        with ThreadPoolExecutor(max_workers=1) as side:  # the workers block in the rendezvous: join it meanwhile
            joined = side.submit(self._each, init)
            try:
                comm = Communicator(self.kind, self.host, port, rank=0, world=world, device=self.device, listen=listen)
                self.comm = comm
            except Exception as e:
                failed = joined.result() or {url: f"rendezvous: {e}" for url in self.clients}
                return failed
        return joined.result()

    def send(self, source: GatheredSource, version: str) -> dict[str, str]:
        """One push: every server starts its update, receives the buckets while rank 0 broadcasts them from
        one walk of ``source``, and finishes (its layerwise reload; its weight version becomes ``version``).
        A broadcast that breaks raises."""
        if self.comm is None:
            raise RuntimeError("GroupSender.send before open")
        metas = metas_of((m.name, m.dtype, m.shape) for m in source.metadata())
        update = asdict(GroupUpdate([m[0] for m in metas], [m[1] for m in metas], [m[2] for m in metas]))
        failed = self._each(lambda url, c: c.start_weight_update())
        if failed:
            return failed
        pool = ThreadPoolExecutor(max_workers=len(self.clients))
        try:
            receiving = {url: pool.submit(c.update_weights_raw, update) for url, c in self.clients.items()}
            send_buckets(self.comm, iter(source), metas, self.bucket_bytes)
            failed = {url: _why(f) for url, f in receiving.items() if f.exception() is not None}
        except Exception:
            self.close()  # the receivers blocked in the broken group fail instead of waiting for it
            raise
        finally:
            pool.shutdown(wait=False)  # after a broken broadcast a receiver may answer late: never wait on it
        if failed:
            return failed
        return self._each(lambda url, c: c.finish_weight_update(version))

    def close(self) -> None:
        if self.comm is not None:
            comm, self.comm = self.comm, None
            try:
                comm.close()
            except Exception:
                pass


def _why(future) -> str:
    e = future.exception()
    return f"{type(e).__name__}: {e}"
