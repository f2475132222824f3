"""The ``server`` backend: rollouts from N separate ``vllm serve`` processes (pinned: vLLM 0.32.0), on this node
or others, sized apart from the learner (design, guarantees and limits: docs/rollout-servers.md).

The servers are vLLM's own OpenAI-compatible server started with ``VLLM_SERVER_DEV_MODE=1`` (its RL routes),
``--logprobs-mode processed_logprobs`` (the sampler's log-probs after temperature, the learner's quantity),
``--generation-config vllm`` (the model's ``generation_config.json`` is no default of any request),
``--worker-extension-cls rollout.vllm_backend.WeightSyncExtension`` and ``--middleware
rollout.server_auth.SharedSecretGuard``; ``app.launch`` builds that command line from the typed config.

* **Sampling**: every field the learner's math depends on is sent (``sampling_fields``): vLLM fills a field a
  request leaves unset from the model's generation config (``to_sampling_params``: request, server default,
  OpenAI default), so a hand-started server would otherwise sample with e.g. Qwen's ``top_k: 20``. Each server
  new to the rotation is probed after it took the weights: its log-probs of sampled completions must equal the
  learner's within the dtype's tolerance (``verify``), which also catches a server in another log-probs mode.
* **Generation**: prompt ``j`` of a call goes to the live server with the least outstanding work as one
  ``/v1/completions`` request with ``n=G``, token ids in and out, the sampled tokens' log-probs and the
  colocated backend's per-request seeds, so the same weights give the same samples whichever server answers.
  While a request waits, its server is probed (``/health``) every 15 s: one that fails a probe (stopped or
  dead) leaves the rotation at once, until a later push finds it healthy and gives it the current weights. A
  server that times out (or answers 408/429) but passes the probe is busy, not dead: it stays in rotation and
  the request is retried. Control calls of a push are watched the same way. When none is left the call
  raises ``RolloutUnavailable``.
* **Versions**: each push sets the servers' weight version to ``<run token>:<push count>``; each request reads
  the server's version before and after. By default a push waits for the requests in flight, so the readings
  must both be the run's current version; with ``overlap_push`` it freezes them (``/pause?mode=keep``) and
  they go on with the new weights, so any two of this run's versions in order are accepted. A sample of
  another run's or a restarted server's weights is regenerated elsewhere. Every completion carries both
  readings (``Completion.first_weight_version``, ``weight_version``); ``trainer/ahead.py`` bounds the oldest.
* **Weight push** (``sync_weights``, ``rollout.server.push``): ``rollout/server_push.py``.
* **Security**: with dev mode on, whoever reaches the port can replace the weights. When
  ``GROUPWISE_SERVER_SECRET`` is set (``groupwise launch`` always sets one), every request carries it
  (``Authorization: Bearer``) and the servers' guard refuses any request without it on every route but
  ``/health`` (``rollout/server_auth.py``).
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from rollout.base import Completion
from rollout.server_auth import SECRET_ENV
from rollout.server_probe import gap_reason, probe_completions
from rollout.server_push import PushMixin, RolloutUnavailable, agree_any
from rollout.server_rotation import CONNECT_TIMEOUT, HEALTH_TIMEOUT, RotationMixin
from rollout.vllm_backend import request_seed

__all__ = ["RolloutUnavailable", "ServerBackend", "ServerMismatch"]

MAX_IN_FLIGHT = 64  # concurrent generation requests of one call (each is one prompt x G samples)
BUSY_RETRIES = 3  # retries per request of servers that timed out but are alive, before the call gives up


class ServerMismatch(ValueError):
    """A server serves another model, context length or sampling distribution than the trainer's config."""


class ServerBackend(RotationMixin, PushMixin):
    """G completions per prompt from N ``vllm serve`` processes; ``sync_weights`` pushes the learner's weights."""

    def __init__(
        self,
        urls: list[str],
        model: str,
        tokenizer,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        named_tensors: Callable[[], Iterator[tuple[str, torch.Tensor]]] | None = None,
        push: str = "file",  # or "broadcast" (rollout/server_push.py)
        push_dir: str | None = None,
        push_host: str = "",
        push_bucket_mb: int = 256,
        request_timeout: float = 600.0,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        module: torch.nn.Module | None = None,
        score: Callable[[list[Completion]], list[torch.Tensor]] | None = None,
        logprob_tolerance: float = 1e-3,
        overlap_push: bool = False,
    ):
        import requests

        if not urls:
            raise ValueError("rollout.server.urls is empty: give one or more http://host:port of running vllm servers")
        self.urls = [u.rstrip("/") for u in urls]
        self.live = list(self.urls)  # servers in rotation; one that fails leaves it until a push re-admits it
        self.model, self.tok, self.named_tensors = model, tokenizer, named_tensors
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.timeout, self.max_model_len = request_timeout, max_model_len
        self.push_kind, self.push_dir = push, Path(push_dir) if push_dir else None
        self.tp, self.module = tensor_parallel_size, module
        self.score, self.tolerance = score, logprob_tolerance  # score(completions): the learner's log-probs
        self.unverified = set(self.urls)  # servers whose sampling the probe has not yet checked
        # a push freezes the requests in flight (/pause?mode=keep) and they go on with the new weights, instead of
        # waiting for them (mode=wait): generation continues through the push (rollout.server.overlap_push)
        self.overlap_push = overlap_push
        self.pause_mode = "keep" if overlap_push else "wait"
        secret = os.environ.get(SECRET_ENV, "")
        self.headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self.session = requests.Session()  # urllib3's pools are thread-safe; one connection per request in flight
        adapter = requests.adapters.HTTPAdapter(pool_connections=len(self.urls), pool_maxsize=MAX_IN_FLIGHT)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # shared by with_sampling() views: pushes so far, this run's version token, work in flight per server
        self.state = {"version": 0, "token": None, "lock": threading.Lock(), "outstanding": {}, "evictions": 0}
        self.push_host, self.bucket_bytes = push_host, push_bucket_mb << 20  # the broadcast push
        self._group = None  # its transfer group (rank 0), reopened when the servers in rotation change
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

    def verify(self) -> None:
        """The servers new to the rotation sample what the learner assumes: their log-probs of completions they
        sample for a fixed prompt equal the learner's (``rollout.server_probe``), else ``ServerMismatch`` on
        every rank. Collective: every rank calls it after the same push, samples every probe first (HTTP only),
        all agree that every probe came back, then every rank runs the learner's forward on every probe."""
        if self.score is None:
            return
        fresh = [u for u in self.urls if u in self.live and u in self.unverified]
        samples, lost = {}, None
        for url in fresh:
            try:
                samples[url] = probe_completions(self._only(url))
            except Exception as e:
                lost = lost or RolloutUnavailable(f"the start-up probe of rollout server {url} failed: {e}")
        if agree_any(lost is not None):
            raise lost or RolloutUnavailable("another rank's start-up probe of a rollout server failed")
        reasons = [gap_reason(url, samples[url], self.score, self.tolerance) for url in fresh]
        error = next((r for r in reasons if r), None)
        if agree_any(error is not None):
            raise ServerMismatch(error or "another rank's rollout server failed the log-prob probe")
        self.unverified.difference_update(fresh)
        if fresh and self.version > 1:  # not the run's first push: a server that had left is back
            print(
                f"rollout server(s) {', '.join(fresh)} rejoined the rotation at weight version {self.version}",
                file=sys.stderr,
                flush=True,
            )

    def _only(self, url: str) -> ServerBackend:
        view = copy.copy(self)
        view.live = [url]
        return view

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
        view = copy.copy(self)
        view.max_new_tokens, view.temperature, view.top_p = max_new_tokens, temperature, top_p
        return view

    def sampling_fields(self) -> dict:
        """Every field of vLLM's ``to_sampling_params`` the learner's math depends on, set explicitly: an unset
        one takes the model's ``generation_config.json`` value on a server started without
        ``--generation-config vllm``. Full vocabulary (no top-k, no min-p), no penalties, no stop strings or
        extra stop tokens, no bias: the distribution is softmax(logits / T), the learner's."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": 0,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "stop": [],
            "stop_token_ids": [],
            "min_tokens": 0,
            "ignore_eos": False,
            "logit_bias": None,
            "bad_words": [],
            "allowed_token_ids": None,
        }

    def generate(self, prompts: list[list[int]], group_size: int, seed: int = 0) -> list[Completion]:
        """``len(prompts) * group_size`` completions, the G samples of prompt j at rows j*G .. j*G+G-1."""
        jobs = [(j, p, request_seed(seed, j)) for j, p in enumerate(prompts)]
        with ThreadPoolExecutor(max_workers=max(1, min(MAX_IN_FLIGHT, len(jobs)))) as pool:
            groups = list(pool.map(lambda job: self._request(job, group_size), jobs))
        return [c for group in groups for c in group]

    def _request(self, job: tuple[int, list[int], int], group_size: int) -> list[Completion]:
        _, prompt, seed = job
        body = {"model": self.model, "prompt": prompt, "n": group_size, "seed": seed, **self.sampling_fields()}
        body |= {"max_tokens": self.max_new_tokens, "logprobs": 0, "return_token_ids": True}
        errors, busy = [], 0
        while True:
            url = self._pick()
            if url is None:
                raise RolloutUnavailable(
                    f"every rollout server failed ({'; '.join(errors[-len(self.urls) :]) or 'none in rotation'}); "
                    "restart them and resume the run from its last checkpoint with --resume"
                )
            try:
                return self._post_generation(url, prompt, body)
            except Exception as e:
                status = getattr(getattr(e, "response", None), "status_code", None)
                if status is not None and 400 <= status < 500 and status not in (408, 429):
                    detail = e.response.text[:500]  # the request is wrong, not the server: no retry elsewhere
                    raise RolloutUnavailable(f"rollout server {url} refused a request ({status}): {detail}") from e
                errors.append(f"{url}: {type(e).__name__}: {e}")
                if not _busy(e) or not self._healthy(url):
                    self._drop(url, errors[-1])  # dead, or holding other weights: out until a push re-admits it
                    continue
                busy += 1  # alive and busy: it stays in rotation; the request goes to the least loaded server
                if busy > BUSY_RETRIES * len(self.urls):
                    raise RolloutUnavailable(
                        f"rollout servers are alive but no request finished within rollout.server.request_timeout="
                        f"{self.timeout:g} s ({errors[-1]}); raise rollout.server.request_timeout or add servers"
                    ) from e

    def _post_generation(self, url: str, prompt: list[int], body: dict) -> list[Completion]:
        with self.state["lock"]:
            self.state["outstanding"][url] = self.state["outstanding"].get(url, 0) + 1
        try:
            before = self._read_version(url)
            r = self._watched(  # a server stopped or dead mid-request is found in one /health probe
                url,
                lambda: self.session.post(
                    f"{url}/v1/completions", json=body, headers=self.headers, timeout=(CONNECT_TIMEOUT, self.timeout)
                ),
                "generation",
            )
            r.raise_for_status()
            after = self._read_version(url)
        finally:
            with self.state["lock"]:
                self.state["outstanding"][url] -= 1
        first, last = self._versions(url, before, after)
        choices = sorted(r.json()["choices"], key=lambda c: c["index"])
        return [self._completion(prompt, c, first, last) for c in choices]

    def _versions(self, url: str, before: str | None, after: str | None) -> tuple[int | None, int | None]:
        """The push counts of the readings around a request, or ``StaleServer`` when they are not this run's:
        the current version at both ends, or with ``overlap_push`` any two of this run's versions in order (a
        push paused the request with ``mode=keep`` and it went on with the new weights)."""
        if not self.state["token"]:
            return None, None  # no push yet: nothing to compare
        first, last = self._push_count(before), self._push_count(after)
        if self.overlap_push:
            ok = first is not None and last is not None and first <= last
        else:
            ok = first == last == self.version
        if not ok:
            expected = self.version_tag(self.version)
            raise StaleServer(f"{url} served weight version {before!r} -> {after!r}, this run holds {expected!r}")
        return first, last

    def _push_count(self, tag: str | None) -> int | None:
        """``<run token>:<n>`` -> n when the token is this run's, else None."""
        token, _, n = (tag or "").rpartition(":")
        return int(n) if token == self.state["token"] and n.isdigit() else None

    def _pick(self) -> str | None:
        """The live server with the least outstanding work (requests in flight from this process)."""
        with self.state["lock"]:
            live, load = list(self.live), self.state["outstanding"]
            return min(live, key=lambda u: load.get(u, 0)) if live else None

    def _read_version(self, url: str) -> str | None:
        if not self.state["token"]:
            return None  # no push yet: the servers' weights are whatever they started with
        r = self.session.get(f"{url}/weight_info", headers=self.headers, timeout=(CONNECT_TIMEOUT, HEALTH_TIMEOUT))
        r.raise_for_status()
        return r.json().get("weight_version")

    @staticmethod
    def _completion(prompt: list[int], choice: dict, first: int | None, last: int | None) -> Completion:
        ids = list(choice["token_ids"])
        logps = [float(x) for x in (choice.get("logprobs") or {}).get("token_logprobs") or []]
        if len(logps) != len(ids):
            raise ValueError(f"server returned {len(logps)} log-probs for {len(ids)} tokens")
        reason, text = str(choice.get("finish_reason")), choice.get("text") or ""
        return Completion(list(prompt), ids, logps, reason, text, weight_version=last, first_weight_version=first)

    def close(self) -> None:
        self._close_group()
        self.session.close()


class StaleServer(RuntimeError):
    """A server answered from other weights than this run's current ones (restarted, or pushed by another run)."""


def _busy(e: Exception) -> bool:
    """A read timeout, 408 or 429: the server may be alive and only busy (queueing, or decoding a long group)."""
    import requests

    status = getattr(getattr(e, "response", None), "status_code", None)
    return isinstance(e, requests.exceptions.ReadTimeout) or status in (408, 429)
