"""The server backend's rotation and control plane: which servers are in rotation, the ``/health`` probes that
tell a busy server from a dead one, and the control calls (``/pause``, ``/resume``, the RL routes) a push
makes. A mixin of ``rollout.server.ServerBackend``, which provides ``urls``, ``live``, ``state``, ``session``,
``headers`` and ``unverified``."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from rollout.server_push import RolloutUnavailable

CONNECT_TIMEOUT = 10.0  # seconds to open a connection; a dead host fails fast
HEALTH_TIMEOUT = 10.0  # seconds a /health probe may take: vLLM's API process answers it without the engine
CONTROL_TIMEOUT = 600.0  # seconds for a control call (a reload from disk, a transfer) of a server that answers
PROBE_EVERY = 15.0  # seconds between /health probes of a server a call has been waiting on

T = TypeVar("T")


class ServerGone(ConnectionError):
    """A server stopped answering ``/health`` while a call waited on it: stopped (SIGSTOP) or dead."""


class RotationMixin:
    """The servers in rotation (``live``), leaving and rejoining it, and the control calls."""

    def rotation_metrics(self) -> dict[str, float]:
        """``rollout/servers_live``: servers in rotation now (after the step's push, which re-admits the ones
        that answer again); ``rollout/server_evictions``: how many times a server left the rotation in this
        process (this rank's count)."""
        return {
            "rollout/servers_live": float(len(self.live)),
            "rollout/server_evictions": float(self.state["evictions"]),
        }

    def _healthy(self, url: str) -> bool:
        """``/health`` answers 200 within ``HEALTH_TIMEOUT``: the server is alive (a stopped or dead one is not).
        A connection error is tried once more at once: it may be a pooled keep-alive connection that the server
        closed just then (uvicorn closes one after an error answer); a dead server refuses both."""
        import requests

        for attempt in (1, 2):
            try:
                return self.session.get(f"{url}/health", timeout=(CONNECT_TIMEOUT, HEALTH_TIMEOUT)).status_code == 200
            except requests.exceptions.Timeout:
                return False
            except requests.exceptions.ConnectionError:
                if attempt == 2:
                    return False
            except Exception:
                return False
        return False

    def _watched(self, url: str, call: Callable[[], T], what: str) -> T:
        """``call()``, a blocking request to ``url``, while ``url`` answers ``/health``: a long call (a group
        decoding a long trace, a reload from disk) is a busy server and is waited for up to its own read
        timeout, but a server that fails a probe made every ``PROBE_EVERY`` s of the wait (``_probe``) is
        stopped or dead, and the wait ends with ``ServerGone`` after one probe rather than after the read
        timeout. vLLM's API process answers ``/health`` without calling the engine (it reports a dead engine
        process), so a busy engine passes; a hung engine behind a live API process passes too, and its calls
        end at their read timeout. The call runs on in a daemon thread until its own timeout; its answer, if
        it ever comes, is dropped."""
        box: dict = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["value"] = call()
            except BaseException as e:  # handed to the waiting thread
                box["error"] = e
            finally:
                done.set()

        threading.Thread(target=run, daemon=True, name=f"groupwise-{what}").start()
        while not done.wait(PROBE_EVERY):
            if not self._probe(url) and not done.is_set():
                raise ServerGone(f"{url} stopped answering /health during {what}")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _probe(self, url: str) -> bool:
        """``_healthy(url)``, shared by every call waiting on ``url``: one probe of a server at a time, and a
        result younger than half a probe period is reused, so 64 requests in flight cost one probe per
        period, not 64."""
        with self.state["lock"]:
            entry = self.state.setdefault("probes", {}).setdefault(url, [threading.Lock(), -PROBE_EVERY, True])
        with entry[0]:
            if time.monotonic() - entry[1] >= PROBE_EVERY / 2:
                entry[2] = self._healthy(url)
                entry[1] = time.monotonic()
            return entry[2]

    def _answering(self, urls: list[str]) -> list[str]:
        """Those of ``urls`` that pass a ``/health`` probe, probed at once: however many servers are stopped, a
        push waits one ``HEALTH_TIMEOUT`` for them, not one each."""
        if not urls:
            return []
        with ThreadPoolExecutor(max_workers=len(urls)) as pool:
            ok = list(pool.map(self._healthy, urls))
        return [u for u, good in zip(urls, ok) if good]

    def _on_servers(self, fn: Callable[[str], None]) -> None:
        """``fn(url)`` on every live server at once; a server that fails leaves the rotation."""
        live = list(self.live)
        with ThreadPoolExecutor(max_workers=max(1, len(live))) as pool:
            results = list(pool.map(lambda u: _try(fn, u), live))
        for url, err in zip(live, results):
            if err is not None:
                self._drop(url, err)
        if not self.live:
            raise RolloutUnavailable(
                f"the weight push failed on every rollout server ({'; '.join(e for e in results if e)}); restart "
                "them and resume the run from its last checkpoint with --resume"
            )

    def _drop(self, url: str, reason: str = "") -> None:
        """Take a server out of the rotation until a push finds it healthy again (requests run in threads)."""
        with self.state["lock"]:
            left = url in self.live
            if left:
                self.live.remove(url)
                self.state["evictions"] += 1
        if left:
            print(f"rollout server {url} left the rotation: {reason or 'it failed'}", file=sys.stderr, flush=True)
        self.unverified.add(url)  # it may come back restarted: probe it again when it rejoins

    def _set_live(self, urls: list[str]) -> None:
        with self.state["lock"]:
            self.live[:] = urls

    def _control(self, url: str, path: str, body: dict | None = None, watch: bool = True) -> dict:
        """POST ``url/path``: ``ServerGone`` when the server stops answering ``/health`` meanwhile (a pause
        sent to a stopped server fails in one probe, not in ``CONTROL_TIMEOUT``). ``watch=False``: a call that
        a live server answers at once (``resume``), with the probe's read timeout and no probe."""

        def post(read_timeout: float):
            return self.session.post(
                f"{url}/{path}", json=body, headers=self.headers, timeout=(CONNECT_TIMEOUT, read_timeout)
            )

        if watch:
            r = self._watched(url, lambda: post(CONTROL_TIMEOUT), path.split("?")[0])
        else:
            r = post(HEALTH_TIMEOUT)
        r.raise_for_status()
        return r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else {}

    def _control_quiet(self, url: str, path: str, watch: bool = True) -> None:
        _try(lambda u: self._control(u, path, watch=watch), url)


def _try(fn: Callable[[str], None], url: str) -> str | None:
    try:
        fn(url)
        return None
    except Exception as e:
        return f"{url}: {type(e).__name__}: {e}"
