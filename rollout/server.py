"""The ``server`` backend: rollouts from N separate ``vllm serve`` processes (pinned: vLLM 0.32.0), on this node
or others, sized apart from the learner.

The servers are vLLM's own OpenAI-compatible server started with ``VLLM_SERVER_DEV_MODE=1`` (its RL routes),
``--logprobs-mode processed_logprobs`` (the sampler's log-probs after temperature, the learner's quantity),
``--worker-extension-cls rollout.vllm_backend.WeightSyncExtension`` and ``--middleware
rollout.server_auth.SharedSecretGuard``; ``app.launch`` builds that command line from the typed config.

* **Generation**: prompt ``j`` of a call goes to live server ``(j + rank) mod n`` as one ``/v1/completions``
  request with ``n=G``, token ids in and out (``return_token_ids``), the sampled tokens' log-probs
  (``logprobs=0``) and the colocated backend's per-request seeds, so the same weights give the same samples
  whichever server answers. Requests run concurrently and each has a timeout; a server that fails or times out
  is taken out of rotation and the request is retried on the next one. When none is left the call raises
  ``RolloutUnavailable``.
* **Weight push** (``sync_weights``), collective over the trainer's ranks: every rank walks
  ``named_tensors()`` (ZeRO-3 gathers one parameter at a time), rank 0 sends. ``file``: rank 0 writes one
  safetensors file into ``push_dir`` (a directory the servers can read: local disk on one node, a shared file
  system across nodes) and each server reloads it through ``/collective_rpc`` (``groupwise_reload_path``: vLLM's
  layerwise reload, one tensor at a time). ``nccl`` (GPUs): vLLM's NCCL weight-transfer engine, trainer rank 0
  broadcasting to each server's workers (``vllm/distributed/weight_transfer/nccl_engine.py``).
  Each push runs inside ``/pause?mode=wait`` ... ``/resume``: requests in flight finish on the old weights, so
  every sample comes from one weight version (``abort`` would waste them, ``keep`` would let one sample mix two
  versions). The prefix cache is reset and the servers' weight version is set to the trainer's.
* **Security**: with dev mode on, whoever reaches the port can replace the weights. When
  ``GROUPWISE_SERVER_SECRET`` is set, every request carries it (``Authorization: Bearer``) and the servers'
  guard refuses any request without it on every route but ``/health`` (``rollout/server_auth.py``).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from rollout.base import Completion
from rollout.server_auth import SECRET_ENV
from rollout.vllm_backend import request_seed

CONNECT_TIMEOUT = 10.0  # seconds to open a connection; a dead host fails fast
CONTROL_TIMEOUT = 600.0  # seconds for a control call (a pause waits for the requests in flight)
MAX_IN_FLIGHT = 64  # concurrent generation requests of one call (each is one prompt x G samples)


class RolloutUnavailable(RuntimeError):
    """No rollout server can answer: the run cannot go on until they are back."""


class ServerMismatch(ValueError):
    """A server serves another model or context length than the trainer's config."""


class ServerBackend:
    """G completions per prompt from N ``vllm serve`` processes; ``sync_weights`` pushes the learner's weights."""

    def __init__(
        self,
        urls: list[str],
        model: str,
        tokenizer,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        named_tensors: Callable[[], Iterator[tuple[str, torch.Tensor]]] | None = None,
        push: str = "file",
        push_dir: str | None = None,
        request_timeout: float = 600.0,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        module: torch.nn.Module | None = None,
    ):
        import requests

        if not urls:
            raise ValueError("rollout.server.urls is empty: give one or more http://host:port of running vllm servers")
        self.urls = [u.rstrip("/") for u in urls]
        self.live = list(self.urls)  # servers in rotation; a failed one leaves it for the rest of the run
        self.model, self.tok, self.named_tensors = model, tokenizer, named_tensors
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.timeout, self.max_model_len = request_timeout, max_model_len
        self.push_kind, self.push_dir = push, Path(push_dir) if push_dir else None
        self.tp, self.module = tensor_parallel_size, module
        secret = os.environ.get(SECRET_ENV, "")
        self.headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self.session = requests.Session()  # urllib3's pools are thread-safe; one connection per request in flight
        adapter = requests.adapters.HTTPAdapter(pool_connections=len(self.urls), pool_maxsize=MAX_IN_FLIGHT)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.state = {"version": 0, "drop_lock": threading.Lock()}  # shared by with_sampling() views
        self._nccl: dict[str, object] = {}
        if push == "file" and named_tensors is not None and self.push_dir is None:
            raise ValueError("the file weight push needs push_dir, a directory the servers can read")

    # ------------------------------------------------------------------ checks

    def check_servers(self, wait: float = 0.0) -> None:
        """Every server answers with the configured model and context length, else ``ServerMismatch`` (or
        ``RolloutUnavailable`` when one does not answer within ``wait`` seconds)."""
        for url in self.urls:
            info = self._models(url, wait)
            served = [m.get("id") for m in info]
            if self.model not in served:
                raise ServerMismatch(
                    f"rollout server {url} serves {served}, not model.path {self.model!r}: start it with "
                    f"--model {self.model} (app.launch does), or point rollout.server.urls at the right servers"
                )
            length = next(m.get("max_model_len") for m in info if m.get("id") == self.model)
            if self.max_model_len is not None and length != self.max_model_len:
                raise ServerMismatch(
                    f"rollout server {url} has max_model_len={length}, the config needs {self.max_model_len} "
                    "(data.max_prompt_tokens + max(rollout.max_new_tokens, eval.max_new_tokens)); restart it "
                    f"with --max-model-len {self.max_model_len}"
                )

    def _models(self, url: str, wait: float) -> list[dict]:
        deadline = time.monotonic() + wait
        while True:
            try:
                r = self.session.get(f"{url}/v1/models", headers=self.headers, timeout=CONNECT_TIMEOUT)
                if r.status_code == 401:
                    raise ServerMismatch(
                        f"rollout server {url} refused the request (401): set {SECRET_ENV} to the secret the "
                        "servers were started with"
                    )
                r.raise_for_status()
                return r.json()["data"]
            except ServerMismatch:
                raise
            except Exception as e:
                if time.monotonic() > deadline:
                    raise RolloutUnavailable(
                        f"rollout server {url} does not answer ({e}); start it (groupwise serve, or let groupwise "
                        "launch start them) and resume the run from its last checkpoint with --resume"
                    ) from e
                time.sleep(1.0)

    # ------------------------------------------------------------------ generation

    @property
    def version(self) -> int:
        """How many weight pushes the servers have had: the weight version new samples come from."""
        return self.state["version"]

    def with_sampling(self, max_new_tokens: int, temperature: float, top_p: float) -> ServerBackend:
        """The same servers with other sampling settings (evaluation)."""
        import copy

        view = copy.copy(self)
        view.max_new_tokens, view.temperature, view.top_p = max_new_tokens, temperature, top_p
        return view

    def generate(self, prompts: list[list[int]], group_size: int, seed: int = 0) -> list[Completion]:
        """``len(prompts) * group_size`` completions, the G samples of prompt j at rows j*G .. j*G+G-1."""
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        jobs = [(j, p, request_seed(seed, j)) for j, p in enumerate(prompts)]
        with ThreadPoolExecutor(max_workers=max(1, min(MAX_IN_FLIGHT, len(jobs)))) as pool:
            groups = list(pool.map(lambda job: self._request(job, group_size, rank), jobs))
        return [c for group in groups for c in group]

    def _request(self, job: tuple[int, list[int], int], group_size: int, rank: int) -> list[Completion]:
        j, prompt, seed = job
        body = {
            "model": self.model,
            "prompt": prompt,
            "n": group_size,
            "seed": seed,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_new_tokens,
            "logprobs": 0,  # the sampled token's log-prob only
            "return_token_ids": True,
        }
        attempt, errors = 0, []
        while True:
            live = list(self.live)
            if not live:
                raise RolloutUnavailable(
                    f"every rollout server failed ({'; '.join(errors[-len(self.urls) :]) or 'none in rotation'}); "
                    "restart them and resume the run from its last checkpoint with --resume"
                )
            url = live[(j + rank + attempt) % len(live)]
            try:
                r = self.session.post(
                    f"{url}/v1/completions", json=body, headers=self.headers, timeout=(CONNECT_TIMEOUT, self.timeout)
                )
                r.raise_for_status()
                choices = sorted(r.json()["choices"], key=lambda c: c["index"])
                return [self._completion(prompt, c) for c in choices]
            except Exception as e:  # connection refused, timeout, 5xx: this server leaves the rotation
                status = getattr(getattr(e, "response", None), "status_code", None)
                if status is not None and 400 <= status < 500 and status not in (408, 429):
                    detail = e.response.text[:500]  # the request is wrong, not the server: no retry elsewhere
                    raise RolloutUnavailable(f"rollout server {url} refused a request ({status}): {detail}") from e
                errors.append(f"{url}: {type(e).__name__}: {e}")
                self._drop(url)
                attempt += 1

    @staticmethod
    def _completion(prompt: list[int], choice: dict) -> Completion:
        ids = list(choice["token_ids"])
        logps = [float(x) for x in (choice.get("logprobs") or {}).get("token_logprobs") or []]
        if len(logps) != len(ids):
            raise ValueError(f"server returned {len(logps)} log-probs for {len(ids)} tokens")
        return Completion(list(prompt), ids, logps, str(choice.get("finish_reason")), choice.get("text") or "")

    # ------------------------------------------------------------------ weight push

    def sync_weights(self) -> None:
        """Push the learner's weights to every live server (collective over the trainer's ranks); the servers'
        weight version becomes ``version + 1`` (the pushes of this process). Every rank has settled its own
        generation before it arrives here; the first collective makes sure all have, so no rank's requests
        can run on the servers during the push. A failure on any rank stops every rank with one error."""
        if self.named_tensors is None:
            return
        dist_on = torch.distributed.is_initialized()
        rank = torch.distributed.get_rank() if dist_on else 0
        if dist_on:  # the servers every rank still has in rotation, the same list on all ranks
            lists: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(lists, self.live)
            agreed = [u for u in self.urls if all(u in other for other in lists)]
            self.live[:] = agreed
        version, error = self.state["version"] + 1, None
        try:
            if self.push_kind == "nccl":
                self._push_nccl(rank, version)
            else:
                self._push_file(rank, version)
        except Exception as e:
            error = e
        failed = error is not None
        if dist_on:  # every rank learns of a failure on any of them, instead of waiting for it forever
            flag = torch.tensor(int(failed))
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            failed = bool(flag.item())
            survivors: list = [self.live if rank == 0 else None]
            torch.distributed.broadcast_object_list(survivors, src=0)  # rank 0 saw which servers took the push
            self.live[:] = survivors[0]
        if failed:
            if isinstance(error, RolloutUnavailable):
                raise error
            raise RolloutUnavailable(
                f"the weight push failed ({type(error).__name__ if error else 'on another rank'}: {error}); restart "
                "the rollout servers and resume the run from its last checkpoint with --resume"
            ) from error
        self.state["version"] = version

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
        self._control(url, "pause?mode=wait")
        try:
            out = self._control(url, "collective_rpc", {"method": "groupwise_reload_path", "args": [path]})
            loaded = [int(x) for x in out.get("results", [])]
            if not loaded or min(loaded) == 0:
                raise RuntimeError(f"{url} reloaded no tensors from {path}: {out}")
            self._control(url, "reset_prefix_cache")  # its KV entries were computed by the old weights
            self._control(url, "update_weight_version", {"new_version": str(version)})
        except Exception:
            _try(lambda u: self._control(u, "resume"), url)  # the caller drops it; the first error is the news
            raise
        self._control(url, "resume")

    def _push_nccl(self, rank: int, version: int) -> None:
        """vLLM's NCCL engine: one transfer group per server (trainer rank 0 + the server's workers), opened at
        the first push; rank 0 broadcasts each gathered parameter, other ranks only take part in the gather
        (under ZeRO-3 that is one gather of the model per server). vLLM calls a transfer group unusable after a
        failure: its engine is shut down and the server leaves the rotation. A failure in the middle of a
        ZeRO-3 gather cannot be recovered on the other ranks; a run with the NCCL push should keep
        inference and training on a reliable private network."""
        for url in list(self.live):
            engine = self._nccl.get(url) or self._nccl_engine(url, rank)
            self._nccl[url] = engine
            try:
                if rank == 0:
                    self._control(url, "pause?mode=wait")
                engine.send_weights()
                if rank == 0:
                    self._control(url, "reset_prefix_cache")
                    self._control(url, "update_weight_version", {"new_version": str(version)})
                    self._control(url, "resume")
            except Exception:
                self._nccl.pop(url, None)
                _try(lambda _, e=engine: e.shutdown(), url)
                self._drop(url)
                raise

    def _nccl_engine(self, url: str, rank: int):
        from rollout.weight_source import trainer_engine  # imports vllm: only for the NCCL push

        return trainer_engine(url, rank, 1 + self.tp, self._control, self.module, self.named_tensors)

    # ------------------------------------------------------------------ control plane

    def _on_servers(self, fn: Callable[[str], None]) -> None:
        """``fn(url)`` on every live server at once; a server that fails leaves the rotation."""
        live = list(self.live)
        with ThreadPoolExecutor(max_workers=max(1, len(live))) as pool:
            results = list(pool.map(lambda u: _try(fn, u), live))
        for url, err in zip(live, results):
            if err is not None:
                self._drop(url)
        if not self.live:
            raise RolloutUnavailable(
                f"the weight push failed on every rollout server ({'; '.join(e for e in results if e)}); restart "
                "them and resume the run from its last checkpoint with --resume"
            )

    def _drop(self, url: str) -> None:
        """Take a server out of the rotation for the rest of the run (requests run in many threads)."""
        with self.state["drop_lock"]:
            if url in self.live:
                self.live.remove(url)

    def _control(self, url: str, path: str, body: dict | None = None) -> dict:
        r = self.session.post(
            f"{url}/{path}", json=body, headers=self.headers, timeout=(CONNECT_TIMEOUT, CONTROL_TIMEOUT)
        )
        r.raise_for_status()
        return r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else {}

    def close(self) -> None:
        for url, engine in list(self._nccl.items()):
            _try(lambda _, e=engine: e.shutdown(), url)
        self._nccl.clear()
        self.session.close()


def _try(fn: Callable[[str], None], url: str) -> str | None:
    try:
        fn(url)
        return None
    except Exception as e:
        return f"{url}: {type(e).__name__}: {e}"
