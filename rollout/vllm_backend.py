"""The ``vllm`` backend: a colocated vLLM engine per torchrun rank (pinned: vllm==0.33.0, see pyproject).

Public vLLM interfaces only:

* ``LLM(distributed_executor_backend="external_launcher")`` joins torchrun's process group instead of
  spawning workers, so each rank's engine shares the rank's GPU with the learner (tensor parallelism over
  consecutive ranks with ``tensor_parallel_size``; engines of different TP groups sample different prompts).
* ``enable_sleep_mode=True``: ``sleep(level=1)`` frees the KV cache (and offloads weights) while the learner
  updates; ``wake_up()`` before the next rollout.
* ``logprobs_mode="processed_logprobs"``: the sampler's log-probs after temperature / top-p, the same
  quantity the learner computes, so ``rollout/logprob_gap`` measures only train/inference mismatch.
* Weight sync through a worker extension class (``worker_extension_cls``) called with ``collective_rpc``;
  with the external launcher the worker lives in this process, so tensors are passed by reference, never
  serialized. No private attribute chains (``llm_engine.model_executor.driver_worker...``), which break on
  every vLLM release.

Everything here imports vllm lazily: the module imports on machines without it, and constructing the
backend there raises an error that says how to install it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch

from rollout.base import Completion

EXTENSION = "rollout.vllm_backend.WeightSyncExtension"


class WeightSyncExtension:
    """Mixed into vLLM's worker class (``worker_extension_cls``); methods are reached by ``collective_rpc``."""

    def groupwise_load_weights(self, named: list[tuple[str, torch.Tensor]]) -> int:
        """Load HF-named tensors into the engine's model (vLLM's own ``load_weights`` handles fused
        q/k/v and gate/up projections and TP sharding). Returns the number of tensors loaded."""
        self.model_runner.model.load_weights(weights=named)
        return len(named)

    def groupwise_checksum(self, name: str) -> float:
        """Sum of one engine parameter, for the sync tests (vLLM names, e.g. fused qkv_proj)."""
        return float(dict(self.model_runner.model.named_parameters())[name].float().sum())


def vllm_available() -> tuple[bool, str]:
    try:
        import vllm  # noqa: F401
    except Exception as e:  # ImportError, or a CUDA/torch mismatch raised at import
        return False, f"vllm does not import here ({type(e).__name__}: {e}); install it with `make setup-gpu`"
    if not torch.cuda.is_available():
        return False, "vllm needs a CUDA GPU; use rollout.backend=hf on CPU"
    return True, ""


class VLLMBackend:
    """G completions per prompt from a colocated vLLM engine; ``sync_weights`` pushes the learner's weights."""

    def __init__(
        self,
        model_path: str,
        tokenizer,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        dtype: str = "bf16",
        named_tensors: Callable[[], Iterator[tuple[str, torch.Tensor]]] | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.35,
        max_model_len: int | None = None,
        sleep: bool = True,
        seed: int = 0,
        bucket_bytes: int = 256 << 20,
    ):
        ok, why = vllm_available()
        if not ok:
            raise RuntimeError(f"rollout.backend=vllm: {why}")
        from vllm import LLM

        self.tok, self.named_tensors = tokenizer, named_tensors
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.sleep_enabled, self.bucket_bytes = sleep, bucket_bytes
        self.llm = LLM(
            model=model_path,
            tokenizer=model_path,
            dtype="bfloat16" if dtype == "bf16" else "float32",
            distributed_executor_backend="external_launcher",
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enable_sleep_mode=sleep,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
            worker_extension_cls=EXTENSION,
            seed=seed,
        )
        self.state = {"asleep": False}  # shared with with_sampling() views of the same engine
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
        requests = [(p, s + j) for ps, s in shares for j, p in enumerate(ps)]  # per-prompt seeds
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
                seed=s,  # per-prompt seeds: reproducible whatever the batching
            )
            for _, s in requests
        ]
        prompts = [TokensPrompt(prompt_token_ids=p) for p, _ in requests]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        completions = []
        for (p, _), out in zip(requests, outs):
            for o in out.outputs:
                ids = list(o.token_ids)
                logps = [lp[t].logprob for t, lp in zip(ids, o.logprobs)]
                reason = "length" if o.finish_reason == "length" else "stop"
                completions.append(Completion(list(p), ids, logps, reason, o.text))
        self.sleep()
        return completions

    def sleep(self) -> None:
        """Free the KV cache and offload weights so the learner has the GPU during the update."""
        if self.sleep_enabled and not self.state["asleep"]:
            self.llm.sleep(level=1)
            self.state["asleep"] = True

    def wake(self) -> None:
        if self.state["asleep"]:
            self.llm.wake_up()
            self.state["asleep"] = False

    def sync_weights(self) -> None:
        """Push the learner's weights (``named_tensors()``: HF names, full tensors, one at a time) into the
        engine in buckets of ``bucket_bytes`` (peak memory: one bucket above the shards), then drop the prefix
        cache, whose KV entries the old weights computed."""
        if self.named_tensors is None:
            return
        self.wake()
        bucket, size = [], 0
        for name, t in self.named_tensors():
            bucket.append((name, t))
            size += t.numel() * t.element_size()
            if size >= self.bucket_bytes:
                self.llm.collective_rpc("groupwise_load_weights", args=(bucket,))
                bucket, size = [], 0
        if bucket:
            self.llm.collective_rpc("groupwise_load_weights", args=(bucket,))
        self.llm.reset_prefix_cache()
        self.sleep()

    def checksum(self, name: str) -> float:
        return self.llm.collective_rpc("groupwise_checksum", args=(name,))[0]


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
