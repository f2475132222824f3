"""The server backend's weight push (``ServerBackend.sync_weights``), collective over the trainer's ranks.

Every rank takes part in every step in the same order, and every decision is agreed before anyone acts on it,
so a failure on one rank or one server never leaves another rank waiting in a collective:

1. the servers in rotation are agreed (each rank's list, intersected), and rank 0 re-admits the servers that
   left the rotation but answer ``/health`` again (a stopped-then-continued or restarted server);
2. the push, inside ``_pause`` ... ``_resume`` on each server (``/pause?mode=wait``, or ``mode=keep`` with
   ``rollout.server.overlap_push``: requests in flight are frozen, not drained): ``broadcast`` (one transfer group
   spanning trainer rank 0 and every server's workers, gloo on CPU and NCCL on CUDA, ``rollout.weight_transfer``:
   rank 0 pauses the servers and opens the group inside the ``try``, all ranks take rank 0's go/no-go, every rank
   walks the ZeRO-3 gathers once and to the end even when rank 0's broadcast failed, all ranks take rank 0's
   outcome; a round that lost a server is rerun on the others) or ``file`` (rank 0 writes one safetensors file,
   each server reloads it);
3. the servers that took the push are verified once (the log-prob probe, ``rollout.server_probe``) and rank
   0's list of servers that took it becomes every rank's rotation.

A server that fails leaves the rotation and the run goes on; only when none is left does every rank raise
``RolloutUnavailable`` together.
"""

from __future__ import annotations

import json
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


def _each(urls: list[str], fn) -> dict[str, str]:
    """``fn(url)`` on every server at once; the ones that raised, with the error."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(urls))) as pool:
        futures = {url: pool.submit(fn, url) for url in urls}
    return {url: f"{type(f.exception()).__name__}: {f.exception()}" for url, f in futures.items() if f.exception()}


class PushMixin:
    """``sync_weights`` and its two routes; ``ServerBackend`` provides the servers, the control calls and the
    rotation (``live``, ``_drop``, ``_control``, ``_answering``, ``_on_servers``, ``verify``)."""

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
        back = self._answering([u for u in self.urls if u not in agreed]) if rank == 0 else []
        back = _from_rank0(back)  # an evicted server that answers again gets this push, then rejoins
        self.unverified.update(back)
        self._set_live([u for u in self.urls if u in agreed or u in back])
        self.state["token"] = self.state.get("token") or _from_rank0(uuid.uuid4().hex[:12])
        version, error = self.state["version"] + 1, None
        try:
            if self.push_kind == "broadcast":
                self._push_broadcast(rank, version)
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
        self._pause(url)
        try:
            out = self._control(url, "collective_rpc", {"method": "groupwise_reload_path", "args": [path]})
            loaded = [int(x) for x in out.get("results", [])]
            if not loaded or min(loaded) == 0:
                raise RuntimeError(f"{url} reloaded no tensors from {path}: {out}")
            self._reset_cache(url)
            self._control(url, "update_weight_version", {"new_version": self.version_tag(version)})
        finally:
            self._resume(url)  # on failure the caller drops it; the first error is the news

    def _push_broadcast(self, rank: int, version: int) -> None:
        """One transfer group spanning trainer rank 0 and every server's workers; one walk of the ZeRO-3
        gathers per round, whatever the number of servers. Each round: rank 0 pauses the servers and opens
        the group when its servers changed (inside the ``try``), and every rank takes rank 0's list of the
        servers that failed (go/no-go); then every rank walks the gathers while rank 0 broadcasts the buckets
        (a walk that fails is finished, so no rank is left in a gather), and every rank takes rank 0's list
        again (the outcome). After a failed round the group is closed; the servers that no longer answer
        ``/health`` leave the rotation (or, when all answer and the group was an old one, none: a server
        restarted in place lost its end of it) and the round is rerun, so a server dying mid-push costs one
        more walk, not the run."""
        reasons: dict[str, str] = {}
        for _ in range(len(self.urls) + 1):  # each failed round drops a server, or reopens an old group once
            # rank 0's list: generation threads may drop a server from this rank's during the push (overlap)
            servers = _from_rank0(list(self.live))
            if not servers:
                break
            failed = _from_rank0(self._group_ready(servers) if rank == 0 else {})
            if not failed:
                failed = _from_rank0(self._group_send(rank, servers, version))
            if not failed:
                if rank == 0:
                    _each(servers, self._resume)
                return
            reused = self._group is not None and not self._group.fresh if rank == 0 else False
            drop = _from_rank0(self._to_drop(failed, reused) if rank == 0 else {})
            if rank == 0:
                self._close_group()
                for url in drop:
                    self._resume(url)  # alive or not, it is out until a push re-admits it
            for url in drop:
                self._drop(url, f"the broadcast push failed ({drop[url]})")
            reasons.update(failed)
        why = "; ".join(f"{url}: {what}" for url, what in reasons.items())
        flag = json.dumps({"backend": "groupwise"})
        raise RolloutUnavailable(
            f"the broadcast weight push failed on every rollout server ({why}); servers need "
            f"--weight-transfer-config '{flag}' (groupwise launch and serve give it) and must reach "
            "rollout.server.push_host, else use rollout.server.push=file"
        )

    def _reset_cache(self, url: str) -> None:
        """Drop the KV entries the old weights computed. Under ``pause?mode=keep`` the requests in flight hold
        some: they are preempted too, and recompute their prefix (prompt and tokens so far) with the new weights
        on resume, so every token after the push is sampled by the new weights alone."""
        if self.pause_mode == "wait":
            self._control(url, "reset_prefix_cache")
            return
        if not self._control(url, "reset_prefix_cache?reset_running_requests=true").get("success"):
            raise RuntimeError(f"{url} could not drop the KV cache of the requests in flight")

    def _group_ready(self, servers: list[str]) -> dict[str, str]:
        """Rank 0: pause every server, and open the group when its servers changed. Returns the failed ones."""
        failed = _each(servers, self._pause)
        if failed:
            return failed
        if self._group is not None and list(self._group.clients) == servers:
            self._group.fresh = False  # opened by an earlier push
            return {}
        self._close_group()
        try:
            from rollout.weight_source import AuthClient, GroupSender  # imports vllm: only for this push

            sender = GroupSender(
                {url: AuthClient(url, self._control) for url in servers},
                workers=self.tp,
                host=self._push_host(servers),
                device=next(self.module.parameters()).device,
                bucket_bytes=self.bucket_bytes,
            )
            failed = sender.open()
        except Exception as e:
            return {url: f"{type(e).__name__}: {e}" for url in servers}
        if failed:
            sender.close()
            return failed
        self._group = sender
        return {}

    def _group_send(self, rank: int, servers: list[str], version: int) -> dict[str, str]:
        """Every rank: one walk of the gathers; rank 0 broadcasts and finishes each server's update."""
        if rank != 0:
            for _ in self.named_tensors():  # this rank's part of the ZeRO-3 gathers
                pass
            return {}
        from rollout.weight_source import GatheredSource

        source = GatheredSource(self.module, self.named_tensors)
        try:
            failed = self._group.send(source, self.version_tag(version))
            if not failed:  # their KV entries were computed by the old weights
                failed = _each(servers, self._reset_cache)
            return failed
        except Exception as e:  # the broadcast broke: which server caused it is _to_drop's question
            return {url: f"{type(e).__name__}: {e}" for url in servers}
        finally:
            source.drain()  # the gathers rank 0 still owes the other ranks

    def _to_drop(self, failed: dict[str, str], reused: bool) -> dict[str, str]:
        """Rank 0, after a failed round: the failed servers that no longer answer ``/health``; when all
        answer, none if the group was an old one (the rerun opens a new group for all), else all of them."""
        dead = {url: why for url, why in failed.items() if not self._healthy(url)}
        return dead or ({} if reused else dict(failed))

    def _push_host(self, servers: list[str]) -> str:
        """``rollout.server.push_host``, else the address of this node's interface that routes to the servers."""
        if self.push_host:
            return self.push_host
        from urllib.parse import urlparse

        from rollout.weight_transfer import local_address

        hosts = {local_address(urlparse(url).hostname or "127.0.0.1") for url in servers}
        if len(hosts) != 1:
            raise ValueError(
                f"the servers are reached through several interfaces of this node ({sorted(hosts)}): set "
                "rollout.server.push_host to the address of this node that every server can reach"
            )
        return hosts.pop()

    def _close_group(self) -> None:
        if self._group is not None:
            group, self._group = self._group, None
            group.close()

    # the pause around a push: one place, so the pause mode can change without touching the transports
    def _pause(self, url: str) -> None:
        import requests

        try:
            self._control(url, f"pause?mode={self.pause_mode}")
        except requests.exceptions.ConnectionError as e:  # a pooled connection the server had just closed?
            if isinstance(e, requests.exceptions.Timeout) or not self._healthy(url):
                raise
            self._control(url, f"pause?mode={self.pause_mode}")  # a pause is idempotent: once more, anew

    def _resume(self, url: str) -> None:
        """Unwatched, with a short read timeout: a live server resumes at once, and a stopped one (whose pause
        has just failed) must not cost the push another probe period."""
        self._control_quiet(url, "resume", watch=False)
