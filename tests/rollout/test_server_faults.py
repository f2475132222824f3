"""The fault run, on real ``vllm serve`` processes: two servers under ``groupwise serve`` (whose supervisor
restarts a server that exits) and a k=1 training run of 10 steps against them. Server A is stopped (SIGSTOP,
its whole process group) for two whole steps and then continued; server B is killed (SIGKILL, its whole process
group) and restarted by the supervisor. The run finishes every step, each with its full batch (prompts x G
completions, none aborted), within the staleness bound, and both servers are back in rotation at the end, read
from the run's own metrics (``rollout/servers_live``, ``rollout/server_evictions``).

The faults land between known steps: the trainer runs under tests/support/fault_cli.py with ``hold@2+`` (it
waits before each step from 2 on until the test releases it), and the supervisor is held (SIGSTOP) while B is
dead, so B stays down for two whole steps however fast it restarts. What the run sees is the same on a fast or
a loaded machine; the deadlines are hang guards only. docs/rollout-servers.md ("The fault run") has the result.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from conftest import ROOT, bin_path
from support.helpers import rows
from support.servers import free_ports, healthy, tiny32, train_args

from rollout.server_auth import SECRET_ENV
from rollout.vllm_backend import vllm_available

OK, WHY = vllm_available()
pytestmark = [pytest.mark.vllm_server, pytest.mark.slow, pytest.mark.skipif(not OK, reason=WHY)]
SECRET, STEPS, PROMPTS, G = "fault-secret-7c2e", 10, 4, 4
HANG = 1800  # seconds: a guard against a hung run or server start on a loaded machine, never a speed check
TRAIN = train_args(prompts=PROMPTS)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny32(tmp_path_factory.mktemp("m") / "tiny32")


def test_a_stopped_and_a_killed_server_come_back_and_no_step_loses_a_sample(model_dir, cli_env, tmp_path):
    import psutil

    port, run, gate = free_ports(2), tmp_path / "run", tmp_path / "hold"
    gate.mkdir()
    env = {**cli_env, SECRET_ENV: SECRET, "VLLM_CPU_KVCACHE_SPACE": "1"}
    serve_cmd = [bin_path("groupwise"), "serve", "--servers", "2", "--port", str(port), "--timeout", str(HANG)]
    serve_cmd += [f"model.path={model_dir}", f"run_dir={tmp_path / 'serve'}", *TRAIN]
    serve = subprocess.Popen(serve_cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said: list[str] = []  # the supervisor's output, read in a thread so that the test never blocks on it
    threading.Thread(target=lambda: [said.append(x) for x in iter(serve.stdout.readline, "")], daemon=True).start()
    a, b = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
    stopped, trainer, log = None, None, (tmp_path / "train.log").open("w")

    def server_pid(p: int) -> int:  # the API server of port p: the leader of that server's process group
        kids = psutil.Process(serve.pid).children()
        return next(k.pid for k in kids if f"--port {p} " in " ".join(k.cmdline()) + " ")

    def until(what: str, done) -> None:
        deadline = time.monotonic() + HANG
        while not done():
            if time.monotonic() > deadline or serve.poll() is not None or (trainer and trainer.poll() is not None):
                log.flush()
                tail = (tmp_path / "train.log").read_text()[-4000:]
                raise AssertionError(f"{what}: not reached\nserve: {''.join(said)[-2000:]}\ntrainer: {tail}")
            time.sleep(0.1)

    def logged(n: int) -> bool:
        return (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= n

    def release(*steps: int) -> None:
        for s in steps:
            (gate / f"go-{s}").touch()

    try:
        until("both servers healthy under groupwise serve", lambda: any("serving until" in x for x in said))
        fault = {**env, "GROUPWISE_FAULT": "hold@2+", "GROUPWISE_HOLD_DIR": str(gate)}
        cmd = [sys.executable, str(ROOT / "tests" / "support" / "fault_cli.py"), "train", f"model.path={model_dir}"]
        cmd += [f"run_dir={run}", *TRAIN, f"steps={STEPS}", "rollout.max_staleness=1", "rollout.backend=server"]
        cmd += [f"rollout.server.urls={a},{b}"]
        trainer = subprocess.Popen(cmd, env=fault, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        until("steps 0-1 on both servers", lambda: logged(2))

        stopped = server_pid(port)  # A: stopped for steps 2 and 3, continued before step 4
        os.killpg(stopped, signal.SIGSTOP)
        release(2, 3)
        until("steps 2-3 with server A stopped", lambda: logged(4))
        os.killpg(stopped, signal.SIGCONT)
        stopped = None
        release(4)
        until("step 4, whose push re-admits server A", lambda: logged(5))

        os.kill(serve.pid, signal.SIGSTOP)  # the supervisor waits: B stays dead for steps 5 and 6
        victim = server_pid(port + 1)
        os.killpg(victim, signal.SIGKILL)  # B: API server, engine and workers
        release(5, 6)
        until("steps 5-6 with server B dead", lambda: logged(7))
        os.kill(serve.pid, signal.SIGCONT)
        until("server B restarted by groupwise serve", lambda: healthy(b))
        assert server_pid(port + 1) != victim and any("restarting" in x for x in said)
        release(*range(7, STEPS))
        until("the run's end", lambda: trainer.poll() is not None)
        assert trainer.returncode == 0, (tmp_path / "train.log").read_text()[-6000:]
    finally:
        if stopped is not None:
            os.killpg(stopped, signal.SIGCONT)
        os.kill(serve.pid, signal.SIGCONT)
        if trainer is not None and trainer.poll() is None:
            trainer.kill()
            trainer.wait()
        log.close()
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=300)

    history = rows(run)
    assert [r["step"] for r in history] == list(range(STEPS))
    # in rotation after each step's push: A out for steps 2-3 and back at step 4, B out for 5-6 and back at 7
    assert [r["rollout/servers_live"] for r in history] == [2, 2, 1, 1, 2, 1, 1, 2, 2, 2]
    assert history[-1]["rollout/server_evictions"] == 2  # each server left once, and came back
    for r in history:  # every step trained on its full batch, sampled within the bound, by this run's weights
        assert r["prompts"] == PROMPTS and r["abnormal_finishes"] == 0, r
        assert 0 <= r["staleness"] <= 1 and r["logprob_gap"] < 1.0, r
    groups = [json.loads(x) for x in (run / "groups.jsonl").read_text().splitlines()]
    assert [g["step"] for g in groups] == list(range(STEPS))
    assert all(g["G"] == G and len(g["correct"]) == len(g["tokens"]) == PROMPTS for g in groups)
    text = (tmp_path / "train.log").read_text()
    assert f"rollout server {a} left the rotation" in text and f"rollout server {b} left the rotation" in text
    assert text.count("rejoined the rotation") == 2
    for p in (port, port + 1):  # SIGTERM to serve stopped both servers
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{p}/health", timeout=10)
