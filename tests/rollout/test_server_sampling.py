"""The server backend samples exactly what the learner assumes, whatever the model's ``generation_config.json``
says (real ``vllm serve`` processes on localhost).

The model here ships ``top_k: 3, repetition_penalty: 1.3`` (Qwen2.5 and Qwen3 ship ``top_k: 20``): vLLM's
OpenAI server applies such defaults to every field a request leaves unset, and its processed log-probs then come
from a truncated, penalised distribution while the learner's cover the whole vocabulary at temperature T.
"""

import json

import pytest
from conftest import bin_path
from support.helpers import rows, run_cli
from support.servers import NEW, free_ports, server_config, tiny32, train_args

from rollout.server_auth import SECRET_ENV
from rollout.vllm_backend import vllm_available

OK, WHY = vllm_available()
pytestmark = [pytest.mark.vllm_server, pytest.mark.skipif(not OK, reason=WHY)]
FLOOR = 1e-3  # fp32 on CPU: the server and the learner agree to rounding (the colocated engine logs ~2e-7)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random Qwen2 (head_dim 32: vLLM's CPU attention refuses 16) whose generation config truncates and
    penalises sampling."""
    path = tiny32(tmp_path_factory.mktemp("m") / "tiny32gc")
    gen = path / "generation_config.json"
    config = json.loads(gen.read_text()) if gen.exists() else {}
    gen.write_text(json.dumps({**config, "do_sample": True, "top_k": 3, "repetition_penalty": 1.3}))
    return path


TRAIN = train_args(prompts=2)


@pytest.mark.slow
def test_launch_samples_the_learners_distribution_despite_the_generation_config(model_dir, cli_env, tmp_path):
    """Two steps through ``groupwise launch --servers 1``: the log-prob gap stays at the fp32 floor (before the
    fix it was ~3 nats per step: top-k 3 and the repetition penalty were applied to every request)."""

    run = tmp_path / "run"
    env = {**cli_env, "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop(SECRET_ENV, None)
    cmd = [bin_path("groupwise"), "launch", "--servers", "1", "--port", str(free_ports(1))]
    run_cli([*cmd, f"model.path={model_dir}", f"run_dir={run}", *TRAIN, "steps=2"], env)
    history = rows(run)
    assert len(history) == 2
    assert all(r["logprob_gap"] < FLOOR for r in history), [r["logprob_gap"] for r in history]
    assert (run / "servers" / "secret").stat().st_mode & 0o777 == 0o600  # no secret given: launch made one


class FieldsLeftUnset:
    """Today's requests before this fix: only temperature and top-p, every other field left to the server."""

    def sampling_fields(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p}


def test_a_server_that_samples_another_distribution_is_refused_at_start_up(model_dir, tmp_path, monkeypatch):
    """A server started by hand without ``--generation-config vllm``: the explicit fields alone make it sample
    the learner's distribution (the probe passes, log-probs at the floor); a client that leaves them unset gets
    top-k 3 and the penalty, and the probe refuses the run with the reason before any step."""
    import torch
    from transformers import AutoTokenizer

    from app import launch
    from rollout.server import ServerBackend, ServerMismatch
    from trainer import dist
    from trainer.backends import learner_logprobs
    from trainer.learner import Learner

    def by_hand(*args, **kwargs):  # the project's command line less the flag a user might not know
        cmd = command(*args, **kwargs)
        i = cmd.index("--generation-config")
        return cmd[:i] + cmd[i + 2 :]

    command = launch.server_command
    monkeypatch.setattr(launch, "server_command", by_hand)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.delenv(SECRET_ENV, raising=False)
    cfg = server_config(model_dir, tmp_path / "run")
    started = launch.start_servers(cfg, str(model_dir), 1, port=free_ports(1))
    try:
        dist.init("cpu")
        learner = Learner(cfg, str(model_dir), torch.device("cpu"))
        tok = AutoTokenizer.from_pretrained(model_dir)
        kw = dict(
            named_tensors=learner.full_parameters,
            push_dir=str(tmp_path / "push"),
            score=lambda comps: learner_logprobs(learner, comps, tok.pad_token_id),
        )
        explicit = ServerBackend([started[0].url], str(model_dir), tok, NEW, **kw)
        explicit.sync_weights()  # pushes, then probes the server: passes
        assert explicit.unverified == set() and explicit.live == [started[0].url]

        class Unset(FieldsLeftUnset, ServerBackend):
            pass

        with pytest.raises(ServerMismatch, match=r"another distribution.*--generation-config vllm"):
            Unset([started[0].url], str(model_dir), tok, NEW, **kw).sync_weights()
    finally:
        launch.stop_servers(started)
