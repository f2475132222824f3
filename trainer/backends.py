"""The rollout backend the config names (``rollout.backend``): what it needs from this machine, checked at
start-up, and building it; the context budget it is built with. The backends themselves are in ``rollout/``
(they know nothing of the trainer's config, so the building lives here, on the trainer's side).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rollout.base import Completion, collate
from rollout.hf import HFBackend
from trainer.config import Config, ConfigError, server_urls
from trainer.learner import Learner


def context_tokens(cfg: Config) -> int:
    """Positions one sequence can need: the longest prompt plus the largest completion budget."""
    return cfg.data.max_prompt_tokens + max(cfg.rollout.max_new_tokens, cfg.eval.max_new_tokens)


def check_context(cfg: Config, limit: int | None) -> None:
    """A prompt + completion budget the model cannot hold (``limit`` positions; None: unknown) fails at
    start-up, not at the first long sample."""
    need = context_tokens(cfg)
    if limit is not None and need > limit:
        raise ConfigError(
            f"data.max_prompt_tokens + max(rollout.max_new_tokens, eval.max_new_tokens) = {need} tokens, but "
            f"{cfg.model.path} holds {limit} positions (max_position_embeddings); lower them so they sum to <= {limit}"
        )


def model_positions(model_path: str) -> int | None:
    """``max_position_embeddings`` of a saved or hub model (None when its config does not say)."""
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)


def check_backend(cfg: Config, device: torch.device) -> None:
    """What the configured backend needs from this machine and the config, checked at start-up before any
    model is built (the config's own checks never import a backend)."""
    r = cfg.rollout
    if r.backend == "vllm":
        from rollout.vllm_backend import vllm_available

        ok, why = vllm_available()
        if not ok:
            raise ConfigError(f"rollout.backend=vllm: {why}")
    if r.backend == "server":
        if not server_urls(cfg):
            raise ConfigError(
                "rollout.backend=server needs rollout.server.urls=http://HOST:PORT[,...] of running vllm servers; "
                "or let `groupwise launch` start them from this config"
            )


def build_backend(cfg: Config, learner: Learner, model_path: str, tok, device: torch.device, lockstep=None):
    """The rollout backend; the only place the trainer looks at ``rollout.backend``."""
    r = cfg.rollout
    if r.backend == "vllm":
        from rollout.vllm_backend import VLLMBackend

        return VLLMBackend(
            model_path,
            tok,
            r.max_new_tokens,
            r.temperature,
            r.top_p,
            dtype=cfg.model.dtype,
            named_tensors=learner.full_parameters,
            tensor_parallel_size=r.vllm.tensor_parallel_size,
            gpu_memory_utilization=r.vllm.gpu_memory_utilization,
            max_model_len=context_tokens(cfg),
            sleep=r.vllm.sleep,
            seed=cfg.seed,
            enforce_eager=r.vllm.enforce_eager,
        )
    if r.backend == "server":
        from rollout.server import ServerBackend
        from rollout.server_probe import TOLERANCE as PROBE_TOLERANCE

        push = r.server.push if r.server.push != "auto" else ("broadcast" if device.type == "cuda" else "file")
        backend = ServerBackend(
            server_urls(cfg),
            model_path,
            tok,
            r.max_new_tokens,
            temperature=r.temperature,
            top_p=r.top_p,
            named_tensors=learner.full_parameters,
            push=push,
            push_dir=r.server.push_dir or str(Path(cfg.run_dir) / "weights-push"),
            push_host=r.server.push_host,
            push_bucket_mb=r.server.push_bucket_mb,
            request_timeout=r.server.request_timeout,
            max_model_len=context_tokens(cfg),
            tensor_parallel_size=r.vllm.tensor_parallel_size,
            module=learner.module,
            # the probe of each server new to the rotation (rollout/server_probe.py): its log-probs against ours
            score=lambda comps: learner_logprobs(learner, comps, tok.pad_token_id),
            logprob_tolerance=r.server.logprob_tolerance or PROBE_TOLERANCE[cfg.model.dtype],
            overlap_push=r.server.overlap_push and r.max_staleness >= 1,  # k=0 has nothing in flight at a push
        )
        backend.check_servers(wait=60.0)  # the model and context length the config asks for, or a clear error
        return backend
    return HFBackend(
        lambda: learner.module, tok, r.max_new_tokens, r.temperature, r.top_p, device, all_ranks_done=lockstep
    )


def learner_logprobs(learner: Learner, completions: list[Completion], pad_id: int) -> list[torch.Tensor]:
    """The learner's log-prob of each completion token (collective under ZeRO-3: every rank calls it)."""
    logp = learner.frozen_logprobs(learner.module, collate(completions, pad_id))  # [N, T]
    return [logp[i, : len(c.token_ids)] for i, c in enumerate(completions)]
