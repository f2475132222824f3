"""GPU-only checks (CUDA, bf16), run by ``make check-gpu`` as two processes: ``pytest -m "gpu and not vllm"``
(the learner: chunked log-probs at the real vocabulary, ZeRO-2 and ZeRO-3 steps) and ``pytest -m "gpu and
vllm"`` (the colocated vLLM engine in bf16 with sleep mode, the weight-sync round trip, the server backend's
broadcast push with NCCL). Without CUDA every test here is collected and skipped with the reason.

Tolerances are bf16 ones, with the margin measured on CPU: the same tiny model's log-probs in bf16 and fp32
differ by 0.0016 on average and 0.0043 at most per token; the perturbation below moves them by 0.39 on
average. A sampler that agrees with the learner to ``GAP_MEAN`` / ``GAP_MAX`` holds the learner's weights.
"""

from __future__ import annotations

import gc
import math
import time

import pytest
import torch
from support.helpers import fixed_batch, make_config

from rollout.base import Completion, RolloutBatch, collate

CUDA = torch.cuda.is_available()
NO_CUDA = f"needs CUDA: torch {torch.__version__} sees no GPU here (on a GPU node: make check-gpu)"
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason=NO_CUDA)]
GAP_MEAN, GAP_MAX = 0.02, 0.1  # bf16: |log p_sampler - log p_learner| per token, mean and max
NEW = 16  # completion budget of the vLLM tests
REAL_VOCAB = 151_936


def vllm_ready() -> tuple[bool, str]:
    """vLLM imports, only asked where CUDA is (so collecting this file on CPU never imports vllm)."""
    if not CUDA:
        return False, NO_CUDA
    from rollout.vllm_backend import vllm_available

    return vllm_available()


VLLM_OK, VLLM_WHY = vllm_ready()


def vllm_test(fn):
    """Marked ``vllm`` (check-gpu runs these in their own process) and skipped where vLLM does not import."""
    return pytest.mark.vllm(pytest.mark.skipif(not VLLM_OK, reason=VLLM_WHY)(fn))


@pytest.fixture(scope="module", autouse=True)
def process_group():
    """A world of one on NCCL, as `groupwise train` makes on a GPU. An earlier CPU test in this process may
    have made a gloo world already; DeepSpeed and vLLM on CUDA need NCCL, so those tests run apart."""
    if not CUDA:
        yield
        return
    import torch.distributed as tdist

    from trainer import dist

    dist.init("cuda")
    backend = tdist.get_backend()
    if backend != "nccl":
        pytest.skip(f"this process already has a {backend} process group; run `pytest -m gpu tests/gpu/test_gpu.py`")
    yield


@pytest.fixture(autouse=True)
def free_memory():
    """After each test (whose locals are gone by then): collect engines and models before the next test
    builds its own. A ZeRO-3 learner keeps transformers' DeepSpeed hook alive, which would partition every
    model loaded after it."""
    yield
    gc.collect()
    if CUDA:
        torch.cuda.empty_cache()


@pytest.fixture(scope="module")
def gpu_model_dir(tmp_path_factory):
    """A tiny random Qwen2 with head_dim 64 (a size every vLLM CUDA attention backend takes), tied embeddings."""
    from toylab.models import save_tiny

    out = tmp_path_factory.mktemp("gpu") / "tiny64"
    return save_tiny(out, seed=0, hidden=256, layers=2, heads=4, kv_heads=2, intermediate=512)


def to_cuda(batch: RolloutBatch) -> RolloutBatch:
    fields = (batch.input_ids, batch.attention_mask, batch.completion_mask, batch.sampler_logp)
    return RolloutBatch(*(t.cuda() for t in fields), batch.prompt_width)


# ----------------------------------------------------------------------------- learner: chunked log-probs


def full_logits_path(model, batch: RolloutBatch, temperature: float):
    """The plain path: the T+1 last positions' logits materialized, log-softmax and entropy from them."""
    t = batch.completion_mask.shape[1]
    pos = (batch.attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=pos,
        logits_to_keep=t + 1,
        use_cache=False,
    )
    logits = out.logits[:, :t, :].float() / temperature  # [n, T, V]
    logp_all = logits.log_softmax(dim=-1)
    targets = batch.input_ids[:, batch.prompt_width :]
    logp = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    return logp, -(logp_all.exp() * logp_all).sum(dim=-1).detach()


def test_chunked_logprobs_in_bf16_match_the_full_path_at_the_real_vocabulary():
    """Values, entropy and every gradient within bf16 rounding of the full-logits path, on a model with
    Qwen's 151,936-token head, and a fraction of its memory (8 x 256 completion tokens: 1.2 GB of fp32
    logits in the full path)."""
    from toylab.models import build_model, build_tokenizer
    from trainer.learner import token_logprobs

    tok = build_tokenizer()
    model = build_model(tok, hidden=256, layers=2, heads=4, kv_heads=2, intermediate=512, vocab=REAL_VOCAB)
    model = model.to("cuda", torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    n, p, t = 8, 16, 256
    ids = torch.randint(0, REAL_VOCAB, (n, p + t), generator=g)
    lengths = torch.randint(t // 2, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()  # [n, T]
    attn = torch.cat([torch.ones(n, p, dtype=torch.long), mask.long()], dim=1)
    batch = to_cuda(RolloutBatch(ids, attn, mask, torch.zeros(n, t), p))
    adv = torch.randn(n, generator=g).cuda()
    results = {}
    for path in ("full", "chunked"):
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        if path == "full":
            logp, ent = full_logits_path(model, batch, temperature=0.7)
        else:
            logp, ent = token_logprobs(model, batch, temperature=0.7, with_entropy=True)
        m = batch.completion_mask
        loss = -((logp * adv[:, None] * m).sum() / m.sum())
        loss.backward()
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base
        grads = {k: v.grad.float().clone() for k, v in model.named_parameters()}
        results[path] = (logp.detach().float() * m, ent.float() * m, grads, extra)
    (lp0, e0, g0, mem0), (lp1, e1, g1, mem1) = results["full"], results["chunked"]
    print(f"extra memory: full {mem0 / 2**20:.0f} MiB, chunked {mem1 / 2**20:.0f} MiB")
    assert (lp1 - lp0).abs().max() < 0.02
    assert (e1 - e0).abs().max() < 0.02
    for name in g0:
        err = float((g1[name] - g0[name]).norm() / g0[name].norm().clamp(min=1e-12))
        assert err < 5e-2, f"{name}: relative gradient error {err:.3g}"
    assert mem1 < 0.5 * mem0, f"chunked path used {mem1 / 2**20:.0f} MiB, full path {mem0 / 2**20:.0f} MiB"


# ----------------------------------------------------------------------------- learner: ZeRO-2 and ZeRO-3


def reference_grad_norm(model_dir, batch: RolloutBatch, adv: torch.Tensor, cfg) -> float:
    """The first step's gradient norm without DeepSpeed: the bf16 checkpoint's weights in fp32, the whole
    batch at once, the learner's loss (global normalization)."""
    from transformers import AutoModelForCausalLM

    from losses import LossParams, count_units, get_objective
    from trainer.learner import token_logprobs

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).float().cuda()
    b = to_cuda(batch)
    logp, _ = token_logprobs(model, b, cfg.rollout.temperature)
    objective = get_objective(cfg.loss.name)
    params = LossParams(
        clip_low=cfg.loss.clip_low,
        clip_high=cfg.loss.clip_high,
        beta=0.0,
        kl_estimator=cfg.loss.kl_estimator,
        max_tokens=cfg.loss.max_tokens,
    )
    terms = objective.fn(logp, logp.detach(), adv.cuda(), b.completion_mask, params, None)
    (terms.per_row.sum() / count_units(b.completion_mask, objective.unit).clamp(min=1)).backward()
    return math.sqrt(sum(float(p.grad.float().pow(2).sum()) for p in model.parameters() if p.grad is not None))


@pytest.mark.parametrize("stage", [2, 3], ids=["zero2", "zero3"])
def test_zero_learner_step_in_bf16(gpu_model_dir, stage):
    """One real DeepSpeed step on CUDA in bf16: finite, not skipped, every parameter moved, and the gradient
    norm that of the plain fp32 computation (4 micro-batches accumulated into one update)."""
    from trainer.learner import Learner

    cfg = make_config(gpu_model_dir, loss="grpo", mbs=4, lr=1e-2, zero=stage, optim__grad_clip=0.0)
    cfg.device, cfg.model.dtype = "cuda", "bf16"
    batch, adv = fixed_batch(gpu_model_dir, 2, 8, seed=3)  # 16 rows
    expect = reference_grad_norm(gpu_model_dir, batch, adv, cfg)  # before the ZeRO-3 hook exists
    learner = Learner(cfg, str(gpu_model_dir), torch.device("cuda"))
    if stage == 3:  # really partitioned: DeepSpeed owns every parameter
        assert all(hasattr(p, "ds_id") for p in learner.module.parameters())
    before = {n: t.float().cpu() for n, t in learner.full_parameters()}
    metrics = learner.update(batch, adv)
    after = {n: t.float().cpu() for n, t in learner.full_parameters()}
    print(f"ZeRO-{stage}: grad_norm {metrics['grad_norm']:.5g} (fp32 reference {expect:.5g})")
    assert metrics["skipped_updates"] == 0
    assert math.isfinite(metrics["loss"])
    assert metrics["grad_norm"] == pytest.approx(expect, rel=0.05)
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged, f"parameters not updated: {unchanged}"


# ----------------------------------------------------------------------------- vLLM: engine, sleep, sync


@pytest.fixture(scope="module")
def engine(gpu_model_dir):
    """A bf16 DeepSpeed learner (ZeRO-0) and a colocated bf16 vLLM engine with sleep mode, from the same
    files. Eager (no torch.compile / CUDA graphs) to start in seconds; the training run of check-gpu
    exercises the compiled engine."""
    from transformers import AutoTokenizer

    from rollout.vllm_backend import VLLMBackend
    from trainer.learner import Learner

    cfg = make_config(gpu_model_dir, prompts=2, group_size=4, max_new_tokens=NEW, mbs=8)
    cfg.device, cfg.model.dtype = "cuda", "bf16"
    learner = Learner(cfg, str(gpu_model_dir), torch.device("cuda"))
    tok = AutoTokenizer.from_pretrained(gpu_model_dir)
    backend = VLLMBackend(
        str(gpu_model_dir),
        tok,
        NEW,
        temperature=1.0,
        dtype="bf16",
        named_tensors=learner.full_parameters,
        gpu_memory_utilization=0.2,
        max_model_len=256,
        sleep=True,
        seed=0,
        enforce_eager=True,
    )
    yield backend, learner, tok
    backend.close()  # the engine's memory now, and the process group kept for the tests after it
    del backend, learner
    gc.collect()


def prompts_of(tok) -> list[list[int]]:
    from rollout.base import encode_prompt

    return [encode_prompt(tok, "12+30"), encode_prompt(tok, "7+5+9")]


def gaps(learner, completions: list[Completion]) -> tuple[float, float]:
    """Mean and max |sampler log-prob - learner log-prob| over the completions' tokens."""
    from trainer.learner import token_logprobs

    batch = to_cuda(collate(completions, learner.module.config.pad_token_id))
    with torch.no_grad():
        logp, _ = token_logprobs(learner.module, batch, 1.0)
    d = (logp.float() - batch.sampler_logp).abs() * batch.completion_mask
    return float(d.sum() / batch.completion_mask.sum()), float(d.max())


@vllm_test
def test_vllm_engine_in_bf16_sleeps_frees_its_cache_and_wakes_with_its_weights(engine):
    backend, learner, tok = engine
    assert backend.sleep_enabled, "sleep mode is off on CUDA: VLLMBackend(sleep=True) should enable it"
    comps = backend.generate(prompts_of(tok), 4, seed=1)  # wakes, samples, sleeps again
    assert len(comps) == 8 and backend.state["asleep"]
    assert {c.finish_reason for c in comps} <= {"stop", "length"}
    assert all(1 <= len(c.token_ids) <= NEW for c in comps)
    torch.cuda.synchronize()
    free_asleep = torch.cuda.mem_get_info()[0]
    backend.wake()
    torch.cuda.synchronize()
    free_awake, total = torch.cuda.mem_get_info()
    freed = free_asleep - free_awake
    print(f"sleep frees {freed / 2**30:.2f} GiB (engine budget {0.2 * total / 2**30:.1f} GiB)")
    assert freed > 0.25 * 0.2 * total, f"sleep freed {freed / 2**30:.2f} GiB of a {0.2 * total / 2**30:.1f} GiB budget"
    backend.sleep()
    again = backend.generate(prompts_of(tok), 4, seed=1)  # after a sleep/wake cycle the weights are intact
    mean, worst = gaps(learner, again)
    print(f"after sleep/wake: logprob gap mean {mean:.4g}, max {worst:.4g}")
    assert mean < GAP_MEAN and worst < GAP_MAX


@vllm_test
def test_weight_sync_round_trip_within_bf16_tolerance(engine):
    """Perturb every learner weight, ``sync_weights()``, and the engine's processed log-probs are the
    learner's again; between the two, they are measurably stale."""
    backend, learner, tok = engine
    backend.sync_weights()
    before = backend.generate(prompts_of(tok), 4, seed=11)
    mean0, max0 = gaps(learner, before)
    assert mean0 < GAP_MEAN and max0 < GAP_MAX, (mean0, max0)
    g = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():
        for p in learner.module.parameters():
            p.add_(torch.randn(p.shape, generator=g, device=p.device, dtype=torch.float32).to(p.dtype) * 0.02)
    stale, _ = gaps(learner, before)
    assert stale > 5 * GAP_MEAN, f"the perturbation moved the learner's log-probs by only {stale:.3g}"
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    backend.sync_weights()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    after = backend.generate(prompts_of(tok), 4, seed=11)
    mean1, max1 = gaps(learner, after)
    print(f"sync {seconds:.3f} s; gap before {mean0:.4g}/{max0:.4g}, stale {stale:.4g}, after {mean1:.4g}/{max1:.4g}")
    assert mean1 < GAP_MEAN and max1 < GAP_MAX, (mean1, max1)


def _server_push_round_trip(gpu_model_dir, tmp_path, push: str, server_gpu: str | None):
    """A real ``vllm serve`` started from the config (``app.launch``), a bf16 learner on GPU 0: perturb,
    ``sync_weights()`` through the server backend, and the server's log-probs are the learner's again."""
    from transformers import AutoTokenizer

    from app.launch import start_servers, stop_servers
    from trainer.backends import build_backend
    from trainer.learner import Learner

    cfg = make_config(gpu_model_dir, prompts=2, group_size=4, max_new_tokens=NEW, mbs=8)
    cfg.device, cfg.model.dtype, cfg.run_dir = "cuda", "bf16", str(tmp_path)
    cfg.rollout.backend, cfg.rollout.server.push, cfg.rollout.vllm.gpu_memory_utilization = "server", push, 0.2
    servers = start_servers(cfg, str(gpu_model_dir), 1, port=8731, gpus=[server_gpu] if server_gpu else None)
    try:
        cfg.rollout.server.urls = servers[0].url
        learner = Learner(cfg, str(gpu_model_dir), torch.device("cuda"))
        tok = AutoTokenizer.from_pretrained(gpu_model_dir)
        backend = build_backend(cfg, learner, str(gpu_model_dir), tok, torch.device("cuda"))
        backend.sync_weights()
        mean0, max0 = gaps(learner, backend.generate(prompts_of(tok), 4, seed=11))
        with torch.no_grad():
            for p in learner.module.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        stale, _ = gaps(learner, backend.generate(prompts_of(tok), 4, seed=11))
        t0 = time.perf_counter()
        backend.sync_weights()
        seconds = time.perf_counter() - t0
        mean, worst = gaps(learner, backend.generate(prompts_of(tok), 4, seed=11))
        print(f"{push} push {seconds:.3f} s; gap {mean0:.4g}/{max0:.4g}, stale {stale:.4g}, now {mean:.4g}/{worst:.4g}")
        assert stale > 5 * GAP_MEAN
        assert mean < GAP_MEAN and worst < GAP_MAX, (mean, worst)
    finally:
        stop_servers(servers)


@vllm_test
def test_server_backend_file_push_on_gpu(gpu_model_dir, tmp_path):
    _server_push_round_trip(gpu_model_dir, tmp_path, "file", None)


@vllm_test
def test_server_backend_broadcast_push(gpu_model_dir, tmp_path):
    """The broadcast push (rollout/weight_transfer.py) with its NCCL communicator, between the trainer (GPU 0)
    and a server on GPU 1: the CPU tests run the same code with gloo. NCCL refuses two ranks on one device,
    so a one-GPU node skips it (and pushes through files)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("the NCCL push needs the server on another GPU than the trainer; this node has one")
    _server_push_round_trip(gpu_model_dir, tmp_path, "broadcast", "1")
