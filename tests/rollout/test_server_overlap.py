"""Generation through the weight push (``rollout.server.overlap_push``) on a real ``vllm serve`` process.

A push freezes the requests in flight (``/pause?mode=keep``) and they go on with the new weights: a sample then
carries the versions read before and after it, its log-probs are the behaviour policy's per token (the old
weights' up to the push, the new ones' after), and staleness counts from the oldest version. A batch whose
oldest weights are past the bound is regenerated, never trained on. Through the CLI: k=1 and k=2 runs with the
push overlapping generation stay within the bound; k=0 is on-policy as before.
"""

import copy
import dataclasses
import os
import threading
import time

import pytest
import requests
import torch
from conftest import bin_path
from support.helpers import rows, run_cli
from support.servers import free_ports, tiny32, train_args

from rollout.server_auth import SECRET_ENV
from rollout.vllm_backend import vllm_available

OK, WHY = vllm_available()
pytestmark = [pytest.mark.vllm_server, pytest.mark.skipif(not OK, reason=WHY)]
NEW, PROMPT, SECRET = 32, 64, "overlap-secret-7c2e"
ATOL = 1e-4  # fp32 on CPU: the server and the learner agree to rounding
HANG = 300.0  # seconds: a hang guard only, never a speed check
# the frozen batch: 48 prompts x 4 samples x 32 tokens decode for a few seconds even on a fast idle machine, so
# the push lands mid-decode (16 prompts were seen to finish before the pause arrived, 1 run in 3)
BATCH, ATTEMPTS = 48, 5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny32(tmp_path_factory.mktemp("m") / "tiny32")


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    from support.helpers import make_config

    from app.launch import start_servers, stop_servers

    os.environ[SECRET_ENV] = SECRET
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cfg = make_config(model_dir, prompts=2, group_size=4, max_new_tokens=NEW, mbs=8, lr=3e-3)
    cfg.data.max_prompt_tokens = PROMPT
    cfg.run_dir = str(tmp_path_factory.mktemp("server"))
    cfg.rollout.backend = "server"
    started = start_servers(cfg, str(model_dir), 1, port=free_ports(1))
    yield cfg, started[0]
    stop_servers(started)
    os.environ.pop(SECRET_ENV, None)


@pytest.fixture(scope="module")
def learner(server, model_dir):
    from trainer import dist
    from trainer.learner import Learner

    dist.init("cpu")
    return Learner(server[0], str(model_dir), torch.device("cpu"))


def backend_for(url, model_dir, learner, push_dir, cls=None, **kw):
    from transformers import AutoTokenizer

    from rollout.server import ServerBackend

    tok = AutoTokenizer.from_pretrained(model_dir)
    return (cls or ServerBackend)(
        [url],
        str(model_dir),
        tok,
        NEW,
        named_tensors=learner.full_parameters,
        push_dir=str(push_dir),
        max_model_len=PROMPT + NEW,
        overlap_push=True,
        **kw,
    )


def prompts(model_dir, n: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    from rollout.base import encode_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)
    return [encode_prompt(tok, f"{i}+{2 * i + 1}") for i in range(n)]


def token_logps(module, completions) -> list[torch.Tensor]:
    from rollout.base import collate
    from trainer.learner import token_logprobs

    batch = collate(completions, module.config.pad_token_id)
    with torch.no_grad():
        logp, _ = token_logprobs(module, batch, 1.0)
    return [logp[i, : len(c.token_ids)] for i, c in enumerate(completions)]


def generated_tokens(url: str, headers: dict) -> float:
    """The server's count of generated tokens so far (its Prometheus counter)."""
    text = requests.get(f"{url}/metrics", headers=headers, timeout=10).text
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith("vllm:generation_tokens_total"))


def learner_step(learner, comps, step: int) -> None:
    from rollout.base import collate

    adv = torch.tensor([1.0, -1.0, 0.5, -0.5] * (len(comps) // 4))
    assert learner.update(collate(comps, learner.module.config.pad_token_id), adv, step)["skipped_updates"] == 0


def test_a_push_freezes_the_requests_in_flight_and_they_go_on_with_the_new_weights(
    server, learner, model_dir, tmp_path
):
    """Requests frozen mid-decode by the push (``pause?mode=keep``) are not waited for: they resume with the new
    weights, each sample carries the versions read before and after it, and its log-probs are the old learner's
    up to some token and the new learner's from there (the behaviour policy per token, what the ratios and TIS
    weights need). The test freezes the server itself once it has generated tokens, so that the push finds
    requests mid-decode; an attempt in which every request had already finished is repeated."""
    _, srv = server
    backend = backend_for(srv.url, model_dir, learner, tmp_path / "push")
    backend.sync_weights()
    for attempt in range(ATTEMPTS):
        train_on = backend.generate(prompts(model_dir, 1), 4, seed=100 + attempt)
        old, v = copy.deepcopy(learner.module), backend.version
        before, out = generated_tokens(srv.url, backend.headers), {}
        worker = threading.Thread(target=_generate_into, args=(out, backend, prompts(model_dir, BATCH)))
        worker.start()
        deadline = time.monotonic() + HANG
        while generated_tokens(srv.url, backend.headers) <= before and time.monotonic() < deadline:
            time.sleep(0.005)
        backend._control(srv.url, "pause?mode=keep")  # frozen now: the push below finds them mid-decode
        learner_step(learner, train_on, attempt)
        backend.sync_weights()  # pauses with mode=keep, loads, drops the old KV, resumes: the requests go on
        worker.join(HANG)
        assert not worker.is_alive() and len(out["c"]) == 4 * BATCH
        comps = out["c"]
        read = [(c.first_weight_version, c.weight_version) for c in comps]
        assert set(read) <= {(v, v), (v, v + 1), (v + 1, v + 1)} and backend.version == v + 1
        lp_old, lp_new = token_logps(old, comps), token_logps(learner.module, comps)
        inner = 0
        for (first, last), c, o, n in zip(read, comps, lp_old, lp_new):
            # every token's log-prob is that of the weights that held when it was sampled
            if last == v:
                assert _fits(c.logprobs, o), c.logprobs  # finished before the push: the old weights throughout
            elif first == v + 1:
                assert _fits(c.logprobs, n), c.logprobs  # started after the push: the new weights throughout
            else:
                cut = _cut(c, o, n)
                assert cut is not None, c.logprobs
                inner += 0 < cut < len(c.logprobs)
        if inner:
            return  # samples whose first tokens came from the old weights and their last from the new
    pytest.fail(f"in {ATTEMPTS} attempts the push never found a request mid-decode (the machine may be badly loaded)")


def _generate_into(out: dict, backend, batch: list[list[int]]) -> None:
    out["c"] = backend.generate(batch, 4, seed=11)


def _fits(got: list[float], logp: torch.Tensor) -> bool:
    diff = (torch.tensor(got) - logp).abs()
    return not len(diff) or float(diff.max()) < ATOL


def _cut(c, old: torch.Tensor, new: torch.Tensor) -> int | None:
    """The first token index b such that the tokens before b have the old weights' log-probs and the tokens from
    b the new weights', or None when there is no such b."""
    for b in range(len(c.logprobs) + 1):
        if _fits(c.logprobs[:b], old[:b]) and _fits(c.logprobs[b:], new[b:]):
            return b
    return None


def test_a_batch_from_weights_past_the_bound_is_regenerated_not_trained_on(server, learner, model_dir, tmp_path):
    """k=1 on a real server: batch 2 is submitted while the server holds the start weights (and is frozen, so
    every request reads that version before it runs); two pushes later its samples are two steps old at step
    2, past the bound, so ``take`` regenerates the batch on the current weights instead of training on it."""
    from rollout.server import ServerBackend
    from trainer.ahead import Ahead

    class CountsReadings(ServerBackend):  # the test waits until every request of batch 2 has read its version
        readings = 0

        def _read_version(self, url):
            version = super()._read_version(url)
            CountsReadings.readings += 1
            return version

    _, srv = server
    backend = backend_for(srv.url, model_dir, learner, tmp_path / "push", cls=CountsReadings)
    backend.sync_weights()
    start = backend.version
    batch, generated = prompts(model_dir, 2), []

    def generate(p, g, seed):
        generated.append(backend.generate(p, g, seed))
        return generated[-1]

    done = [dataclasses.asdict(c) for c in backend.generate(batch, 4, seed=1)]
    last_step = 3  # the run ends after step 2: take(2) submits no batch 3
    ahead = Ahead(generate, 1, 4, lambda s: (batch, s), last_step, 0, version=lambda: backend.version, overlap=True)
    ahead.restore([{"step": s, "weights_at": 0, "seconds": 0.0, "completions": done} for s in (0, 1)])
    try:
        backend._control(srv.url, "pause?mode=keep")
        CountsReadings.readings = 0
        ahead.take(0)
        ahead.take(1)  # submits batch 2 on the start weights
        deadline = time.monotonic() + HANG
        while CountsReadings.readings < len(batch) and time.monotonic() < deadline:
            time.sleep(0.01)
        for step in (1, 2):
            backend.sync_weights()  # the first push resumes the server: batch 2 finishes on newer weights
            ahead.pushed(step)
        comps, staleness = ahead.take(2)
    finally:
        backend._control_quiet(srv.url, "resume")
        ahead.close()
    assert {c.first_weight_version for c in generated[0]} == {start}  # read back: the start weights, step 0
    assert ahead.regenerated == 1 and staleness == 0 and len(generated) == 2
    assert {(c.first_weight_version, c.weight_version) for c in comps} == {(backend.version, backend.version)}


def test_runs_with_the_push_overlapping_generation_stay_within_the_bound(server, model_dir, cli_env, tmp_path):
    """Through ``groupwise train``: k=1 and k=2 finish with every step's staleness (from the oldest weights of
    its samples) at most k, the first batch on-policy; k=0 is on-policy at every step, as before."""
    _, srv = server
    env = {**cli_env, SECRET_ENV: SECRET}
    base = [bin_path("groupwise"), "train", f"model.path={model_dir}", *TRAIN, f"rollout.server.urls={srv.url}"]
    for k, steps in ((1, 4), (2, 4), (0, 2)):
        run = tmp_path / f"k{k}"
        run_cli([*base, f"run_dir={run}", f"steps={steps}", f"rollout.max_staleness={k}"], env)
        history = rows(run)
        assert len(history) == steps
        # batch j is submitted on the weights after step j-k: k steps old (the first ones less), whatever the timing
        assert [r["staleness"] for r in history] == [float(min(j, k)) for j in range(steps)]
        assert history[0]["logprob_gap"] < ATOL  # the first batch: the start weights, the learner's
        if k == 0:
            assert all(r["logprob_gap"] < ATOL and r["across_push"] == 0 for r in history)
        print(
            f"k={k}: staleness", [r["staleness"] for r in history], "across_push", [r["across_push"] for r in history]
        )


TRAIN = [*train_args(new=NEW, prompt_tokens=PROMPT), "rollout.backend=server"]
