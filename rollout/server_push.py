"""The server backend's weight push (``ServerBackend.sync_weights``), collective over the trainer's ranks.

Every rank takes part in every step in the same order, and every decision is agreed before anyone acts on it,
so a failure on one rank or one server never leaves another rank waiting in a collective:

1. the servers in rotation are agreed (each rank's list, intersected), and rank 0 re-admits the servers that
   left the rotation but answer ``/health`` again (a stopped-then-continued or restarted server);
2. the push, inside ``/pause?mode=wait`` ... ``/resume`` (``mode=keep`` with ``rollout.server.overlap_push``):
   ``file`` (rank 0 writes one safetensors file, each server reloads it) or ``nccl`` (per server: rank 0
   pauses it and opens its transfer group inside the ``try``, all ranks agree go/no-go, every rank walks the
   ZeRO-3 gathers to the end even when rank 0's broadcast failed, all ranks agree on the outcome);
3. the servers that took the push are verified once (the log-prob probe, ``rollout.server_probe``) and rank
   0's list of servers that took it becomes every rank's rotation.

A server that fails leaves the rotation and the run goes on; only when none is left does every rank raise
``RolloutUnavailable`` together.
"""

from __future__ import annotations

import shutil
import uuid

import torch


class RolloutUnavailable(RuntimeError):
    """No rollout server can answer: the run cannot go on until they are back."""


def agree_any(flag: bool) -> bool:
    """True on every rank when it is true on any rank."""
    if not torch.distributed.is_initialized():
        return flag
    t = torch.tensor(int(flag))
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def _from_rank0(value):
    if not torch.distributed.is_initialized():
        return value
    box = [value if torch.distributed.get_rank() == 0 else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


class PushMixin:
    """``sync_weights`` and its two routes; ``ServerBackend`` provides the servers, the control calls and the
    rotation (``live``, ``_drop``, ``_control``, ``_healthy``, ``_on_servers``, ``verify``)."""

    def sync_weights(self) -> None:
        """Push the learner's weights to every server in rotation, and re-admit the servers that are back; the
        servers' weight version becomes ``version + 1`` (this run's pushes), tagged with this run's token so a
        sample from another run's or a restarted server's weights is recognised. Every rank has settled its
        own generation before it arrives here, or, with ``overlap_push``, its requests in flight are frozen
        (``pause?mode=keep``) and go on with the new weights; they run in threads that make no collective call."""
        if self.named_tensors is None:
            return
        dist_on = torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if dist_on else 0
        if dist_on:  # the servers every rank still has in rotation, the same list on all ranks
            lists: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(lists, list(self.live))
            agreed = [u for u in self.urls if all(u in other for other in lists)]
        else:
            agreed = list(self.live)
        back = [u for u in self.urls if u not in agreed and self._healthy(u)] if rank == 0 else []
        back = _from_rank0(back)  # an evicted server that answers again gets this push, then rejoins
        self.unverified.update(back)
        self._set_live([u for u in self.urls if u in agreed or u in back])
        self.state["token"] = self.state.get("token") or _from_rank0(uuid.uuid4().hex[:12])
        version, error = self.state["version"] + 1, None
        try:
            if self.push_kind == "nccl":
                self._push_nccl(rank, version)
            else:
                self._push_file(rank, version)
        except Exception as e:
            error = e
        if agree_any(error is not None):
            self._set_live(_from_rank0(list(self.live)))
            if isinstance(error, RolloutUnavailable):
                raise error
            raise RolloutUnavailable(
                f"the weight push failed ({type(error).__name__ if error else 'on another rank'}: {error}); restart "
                "the rollout servers and resume the run from its last checkpoint with --resume"
            ) from error
        self._set_live(_from_rank0(list(self.live)))  # rank 0 saw which servers took the push
        self.state["version"] = version
        self.verify()  # servers new to the rotation sample what the learner assumes, or the run is refused

    def version_tag(self, version: int) -> str:
        return f"{self.state['token']}:{version}"

    def _push_file(self, rank: int, version: int) -> None:
        from safetensors.torch import save_file

        state = {}
        for name, t in self.named_tensors():  # every rank iterates: ZeRO-3 gathers are collective
            if rank == 0:
                state[name] = t.detach().to("cpu", copy=True).contiguous()
        if rank != 0:
            return
        target = self.push_dir / f"v{version:06d}"
        tmp = self.push_dir / f".v{version:06d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(state, str(tmp / "model.safetensors"))
        del state
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        self._on_servers(lambda url: self._reload(url, str(target.resolve()), version))
        for old in self.push_dir.glob("v[0-9][0-9][0-9][0-9][0-9][0-9]"):  # only the newest push is kept
            if old != target:
                shutil.rmtree(old, ignore_errors=True)

    def _reload(self, url: str, path: str, version: int) -> None:
        self._control(url, f"pause?mode={self.pause_mode}")
        try:
            out = self._control(url, "collective_rpc", {"method": "groupwise_reload_path", "args": [path]})
            loaded = [int(x) for x in out.get("results", [])]
            if not loaded or min(loaded) == 0:
                raise RuntimeError(f"{url} reloaded no tensors from {path}: {out}")
            self._reset_cache(url)
            self._control(url, "update_weight_version", {"new_version": self.version_tag(version)})
        finally:
            self._control_quiet(url, "resume")  # on failure the caller drops it; the first error is the news

    def _reset_cache(self, url: str) -> None:
        """Drop the KV entries the old weights computed. Under ``pause?mode=keep`` the requests in flight hold
        some: they are preempted too, and recompute their prefix (prompt and tokens so far) with the new weights
        on resume, so every token after the push is sampled by the new weights alone."""
        if self.pause_mode == "wait":
            self._control(url, "reset_prefix_cache")
            return
        if not self._control(url, "reset_prefix_cache?reset_running_requests=true").get("success"):
            raise RuntimeError(f"{url} could not drop the KV cache of the requests in flight")

    def _push_nccl(self, rank: int, version: int) -> None:
        """vLLM's NCCL engine, one transfer group per server (trainer rank 0 + the server's workers), opened at
        its first push. Per server: rank 0 pauses it and opens its group inside the ``try``; all ranks agree
        go/no-go; every rank runs the gathers of ``send_weights`` to the end (a rank-0 broadcast that fails
        still walks the rest of the parameters, so the other ranks' ZeRO-3 gathers complete); all ranks agree
        on the outcome, and a server that failed leaves the rotation."""
        for url in list(self.live):
            ready = True
            try:
                engine = self._nccl.get(url) or self._nccl_engine(url, rank)
                self._nccl[url] = engine
                if rank == 0:
                    self._control(url, f"pause?mode={self.pause_mode}")
            except Exception:
                ready = False
            if agree_any(not ready):
                self._nccl_failed(url, rank)
                continue
            sent = True
            try:
                engine.send_weights()
            except Exception:
                sent = False
            finally:
                engine.source.drain()  # the gathers this rank still owes the others
            if rank == 0 and sent:
                try:
                    self._reset_cache(url)
                    self._control(url, "update_weight_version", {"new_version": self.version_tag(version)})
                except Exception:
                    sent = False
            if agree_any(not sent):
                self._nccl_failed(url, rank)
            elif rank == 0:
                self._control_quiet(url, "resume")
        if not self.live:
            raise RolloutUnavailable("the NCCL weight push failed on every rollout server")

    def _nccl_failed(self, url: str, rank: int) -> None:
        engine = self._nccl.pop(url, None)
        if engine is not None:
            try:
                engine.shutdown()
            except Exception:
                pass
        if rank == 0:
            self._control_quiet(url, "resume")
        self._drop(url)

    def _nccl_engine(self, url: str, rank: int):
        from rollout.weight_source import trainer_engine  # imports vllm: only for the NCCL push

        return trainer_engine(url, rank, 1 + self.tp, self._control, self.module, self.named_tensors)
