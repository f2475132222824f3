"""The server backend's routing and the version bookkeeping of generation ahead, without servers: least
outstanding work picks the server, a batch with a sample older than the bound is regenerated (its oldest
version counts when a push overlapped it), k+1 batches are generated at once, and the batches generated ahead
survive a resume."""

import json
import threading

import pytest

from rollout.base import Completion
from rollout.server import RolloutUnavailable, ServerBackend
from trainer.ahead import Ahead


def test_requests_go_to_the_server_with_the_least_outstanding_work():
    backend = ServerBackend(["http://a:1", "http://b:2/", "http://c:3"], "m", None, 8)
    backend.state["outstanding"] = {"http://a:1": 3, "http://b:2": 1, "http://c:3": 2}
    assert backend._pick() == "http://b:2"
    backend._drop("http://b:2")
    assert backend._pick() == "http://c:3" and "http://b:2" in backend.unverified
    backend.live.clear()
    assert backend._pick() is None


def test_the_rotation_is_in_the_metrics_and_a_server_leaves_it_once():
    """``rollout/servers_live`` and ``rollout/server_evictions``: a server that fails in two requests at once
    leaves once; the re-admission probe of servers that do not answer (nothing listens) finds none."""
    import socket

    with socket.socket() as s:  # a port nothing listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    backend = ServerBackend([dead, "http://b:2"], "m", None, 8)
    assert backend.rotation_metrics() == {"rollout/servers_live": 2.0, "rollout/server_evictions": 0.0}
    backend._drop(dead, "refused")
    backend._drop(dead, "refused")
    assert backend.rotation_metrics() == {"rollout/servers_live": 1.0, "rollout/server_evictions": 1.0}
    assert backend._answering([dead]) == [] and backend._answering([]) == []


def test_sampling_fields_leave_nothing_to_the_servers_defaults():
    """Every ``to_sampling_params`` default a generation config can override is sent, at its neutral value."""
    fields = ServerBackend(["http://a:1"], "m", None, 8, temperature=0.7).sampling_fields()
    assert fields["temperature"] == 0.7 and fields["top_p"] == 1.0
    assert fields["top_k"] == 0 and fields["min_p"] == 0.0  # vLLM 0.32: top_k 0 is the full vocabulary
    assert fields["repetition_penalty"] == 1.0 and fields["presence_penalty"] == fields["frequency_penalty"] == 0
    assert fields["stop"] == [] and fields["stop_token_ids"] == [] and fields["min_tokens"] == 0


class Servers:
    """Sampling with a weight version that the test sets, as a server reports it."""

    def __init__(self):
        self.version, self.report, self.calls = 0, None, 0
        self.first = None  # the version read before the request, when a push overlapped it

    def generate(self, prompts, group_size, seed):
        self.calls += 1
        v = self.version if self.report is None else self.report
        first = v if self.first is None else self.first
        return [
            Completion(p, [1], [0.0], "stop", "", weight_version=v, first_weight_version=first)
            for p in prompts
            for _ in range(group_size)
        ]


def test_staleness_is_read_back_and_a_sample_past_the_bound_is_regenerated():
    servers = Servers()
    ahead = Ahead(servers.generate, 1, 2, lambda s: ([[s]], s), 10, 0, version=lambda: servers.version)
    comps, staleness = ahead.take(0)  # batch 0 on the start weights, batch 1 submitted on them too
    assert staleness == 0 and {c.weight_version for c in comps} == {0}
    ahead.settle()
    servers.version, servers.report = 1, 0  # batch 2 comes from a server still on the start weights
    ahead.pushed(1)
    comps, staleness = ahead.take(1)  # generated before the push: one step old, within k=1
    assert staleness == 1 and ahead.regenerated == 0
    ahead.settle()
    servers.version, servers.report = 2, None
    ahead.pushed(2)
    comps, staleness = ahead.take(2)  # its samples are two steps old, past k=1: regenerated, never trained on
    assert ahead.regenerated == 1 and staleness == 0 and {c.weight_version for c in comps} == {2}
    ahead.close()


def test_samples_of_weights_this_run_never_pushed_are_not_trained_on():
    servers = Servers()
    servers.report = 99  # never pushed by this run, before and after the regeneration
    ahead = Ahead(servers.generate, 1, 2, lambda s: ([[s]], s), 10, 0, version=lambda: servers.version)
    with pytest.raises(RolloutUnavailable, match="weights this run did not push"):
        ahead.take(0)
    assert ahead.regenerated == 1
    ahead.close()


def test_batches_generated_ahead_are_saved_and_taken_back_after_a_resume():
    """What a checkpoint holds of a k=1 run (after the push of step 2: batch 2, sampled by the weights after
    step 1) is what the resumed run trains on at step 2, at staleness 1, without generating it again."""
    servers = Servers()
    ahead = Ahead(servers.generate, 1, 2, lambda s: ([[s]], s), 10, 0, version=lambda: servers.version)
    for step in (0, 1):
        ahead.take(step)
        ahead.settle()
        servers.version = step + 1
        ahead.pushed(step + 1)
    saved = json.loads(json.dumps(ahead.saved()))  # as trainer/checkpoint.py writes and reads it
    ahead.close()
    assert [(b["step"], b["weights_at"]) for b in saved] == [(2, 1)]

    fresh = Servers()  # a new trainer process: the servers count versions anew
    fresh.version = 7
    resumed = Ahead(fresh.generate, 1, 2, lambda s: ([[s]], s), 10, 2, version=lambda: fresh.version)
    resumed.restore(saved)
    comps, staleness = resumed.take(2)
    assert staleness == 1 and [c.prompt_ids for c in comps] == [[2], [2]] and comps[0].token_ids == [1]
    resumed.settle()
    assert fresh.calls == 1 and 3 in resumed.pending  # only batch 3 was generated, on the resumed weights
    resumed.close()

    later = Ahead(fresh.generate, 1, 2, lambda s: ([[s]], s), 10, 3, version=lambda: fresh.version)
    later.restore(saved)  # a batch before the start, or past the bound, is never taken back
    assert later.restored == {}
    later.close()


def test_a_sample_spanning_a_push_is_as_old_as_its_oldest_weights():
    """With the push overlapping generation a sample reads version a before and b after its request: within
    the bound it is trained on at the staleness of a; past it (counted from a, though b is pushed and known)
    the batch is regenerated, never trained on."""
    read = {0: (0, 0), 1: (0, 1), 2: (0, 2)}  # step -> versions read before and after its request
    pushes = {"version": 0}

    def generate(prompts, group_size, seed):
        first, last = read.pop(prompts[0][0], (pushes["version"],) * 2)  # a regeneration: current weights
        return [Completion(p, [1], [0.0], "stop", "", last, first) for p in prompts for _ in range(group_size)]

    ahead = Ahead(generate, 1, 2, lambda s: ([[s]], s), 10, 0, version=lambda: pushes["version"], overlap=True)
    for step in (0, 1, 2):
        comps, staleness = ahead.take(step)
        if step == 1:  # sampled by the start weights, then by those after step 0: one step old, within k=1
            assert staleness == 1 and {(c.first_weight_version, c.weight_version) for c in comps} == {(0, 1)}
        ahead.settle()
        pushes["version"] += 1
        ahead.pushed(step + 1)
    # batch 2 read version 0 before its request (queued behind a push), 2 after: two steps old, past k=1
    assert ahead.regenerated == 1 and staleness == 0 and {c.first_weight_version for c in comps} == {2}
    ahead.close()


def test_the_next_batches_are_generated_while_the_current_one_finishes():
    """k=2: batches s, s+1 and s+2 are in flight at once (three generate calls meet at a barrier, which a
    single-worker pool would never reach), so the servers refill the slots a batch's short completions free."""
    servers, barrier = Servers(), threading.Barrier(3, timeout=60)  # the timeout only guards against a hang

    def generate(prompts, group_size, seed):
        barrier.wait()
        return servers.generate(prompts, group_size, seed)

    ahead = Ahead(generate, 2, 2, lambda s: ([[s]], s), 10, 0, version=lambda: servers.version, overlap=True)
    comps, staleness = ahead.take(0)
    assert staleness == 0 and [c.prompt_ids for c in comps] == [[0], [0]]
    assert sorted(ahead.pending) == [1, 2]
    ahead.close()


def test_a_checkpoint_of_an_overlapped_run_records_the_oldest_weights_of_each_batch():
    read = {0: (0, 0), 1: (0, 1)}  # batch 1 ran through the push of the weights after step 0

    def generate(prompts, group_size, seed):
        first, last = read[prompts[0][0]]
        return [Completion(p, [1], [0.0], "stop", "", last, first) for p in prompts for _ in range(group_size)]

    pushes = iter(range(10))
    ahead = Ahead(generate, 1, 2, lambda s: ([[s]], s), 2, 0, version=lambda: next(pushes), overlap=True)
    ahead.take(0)
    ahead.pushed(1)
    ahead.settle(raise_errors=False)  # as Session.save does: batch 1 may still be in flight
    saved = json.loads(json.dumps(ahead.saved()))
    assert [(b["step"], b["weights_at"]) for b in saved] == [(1, 0)]
    assert {c["first_weight_version"] for c in saved[0]["completions"]} == {None}  # versions are per process
    ahead.close()


class _Server:
    """A stdlib HTTP server standing in for a vLLM server's control plane: ``/pause`` answers after ``busy``
    seconds, ``/health`` answers while ``alive`` is set and never otherwise (as a SIGSTOPped process: the
    kernel accepts the connection, nothing reads it)."""

    def __init__(self, busy: float, answer: bytes = b'{"paused": true}'):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.alive, self.release = threading.Event(), threading.Event()
        self.alive.set()
        self.probes = 0  # /health requests received
        self.drop_probes = 0  # the next n probes get their connection closed with no answer
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                outer.probes += 1
                if outer.drop_probes > 0:
                    outer.drop_probes -= 1
                    self.close_connection = True  # the client reads "connection closed", as on a stale keep-alive
                    return
                if not outer.alive.is_set():
                    outer.release.wait()  # "stopped": holds the probe until the test ends
                    return
                self._answer(b"{}")

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if outer.release.wait(busy) or not outer.alive.is_set():
                    return  # a stopped server never answers
                self._answer(answer)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def quick_probes(monkeypatch):
    """Probes every 0.2 s that wait up to 5 s: the same logic as the 15 s / 10 s defaults, in test time (a
    live stand-in answers a probe in milliseconds; 5 s leaves a loaded machine room)."""
    import rollout.server_rotation as rotation

    monkeypatch.setattr(rotation, "PROBE_EVERY", 0.2)
    monkeypatch.setattr(rotation, "HEALTH_TIMEOUT", 5.0)


def test_a_control_call_waits_for_a_busy_server_and_gives_up_on_a_stopped_one(quick_probes):
    """A pause that takes many probe periods on a server that answers /health is waited for; the same pause
    sent to a server that stops answering /health ends with ``ServerGone`` (not after ``CONTROL_TIMEOUT``), and
    the push's ``_on_servers`` takes that server out of the rotation and keeps the other."""
    from rollout.server_rotation import ServerGone

    busy, stopped = _Server(busy=1.5), _Server(busy=3600)
    try:
        backend = ServerBackend([busy.url, stopped.url], "m", None, 8)
        assert backend._control(busy.url, "pause?mode=keep") == {"paused": True}  # ~7 probes, all answered
        stopped.alive.clear()
        with pytest.raises(ServerGone, match="stopped answering /health during pause"):
            backend._control(stopped.url, "pause?mode=keep")
        backend._on_servers(lambda url: backend._control(url, "pause?mode=keep"))
        assert backend.live == [busy.url] and backend.rotation_metrics()["rollout/server_evictions"] == 1
    finally:
        busy.close()
        stopped.close()


def test_a_generation_request_to_a_server_that_stops_moves_to_another(quick_probes):
    """A request in flight to a server that stops answering /health is abandoned after one failed probe; the
    server leaves the rotation and the request goes to the other server, which answers it."""
    choice = {"index": 0, "token_ids": [7], "logprobs": {"token_logprobs": [-0.5]}, "finish_reason": "stop"}
    stopped, good = _Server(busy=3600), _Server(busy=0.0, answer=json.dumps({"choices": [choice]}).encode())
    stopped.alive.clear()
    try:
        backend = ServerBackend([stopped.url, good.url], "m", None, 8)  # the stopped one is picked first
        [done] = backend._request((0, [1, 2], 0), 1)
        assert done.token_ids == [7] and done.logprobs == [-0.5]
        assert backend.live == [good.url] and backend.state["outstanding"][stopped.url] == 0
    finally:
        stopped.close()
        good.close()


def test_the_calls_waiting_on_one_server_share_its_probes(quick_probes):
    """20 pauses waiting at once on a busy server are probed together: at most one probe per half period of
    the wait (each probe's answer is reused by the others), not one per call per period."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import rollout.server_rotation as rotation

    busy = _Server(busy=1.5)
    try:
        backend = ServerBackend([busy.url], "m", None, 8)
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(lambda _: backend._control(busy.url, "pause?mode=keep"), range(20)))
        elapsed = time.monotonic() - start
        assert answers == [{"paused": True}] * 20
        assert 1 <= busy.probes <= elapsed / (rotation.PROBE_EVERY / 2) + 1  # unshared: ~20 x elapsed / 0.2
    finally:
        busy.close()


def test_a_probe_whose_connection_was_closed_is_tried_again_and_a_dead_server_still_fails():
    """A probe that meets a closed connection (a pooled keep-alive connection the server had just closed) is
    tried once more before the server is called dead; a port nothing listens on fails both tries."""
    import socket

    server = _Server(busy=0.0)
    try:
        backend = ServerBackend([server.url], "m", None, 8)
        server.drop_probes = 1
        assert backend._healthy(server.url) and server.probes == 2
        server.drop_probes = 2
        assert not backend._healthy(server.url)  # closed twice: not healthy
    finally:
        server.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert not ServerBackend([dead], "m", None, 8)._healthy(dead)
