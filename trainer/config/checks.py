"""What the models cannot check alone: the relations that depend on the number of ranks and on the file
system, run on a whole ``Config`` (at load time, and again at start-up once the ranks are known). Then
``resolve`` fills the fields whose None means "the objective's default". Nothing here imports a rollout
backend: what needs one is checked where the backend is built (``trainer.backends.check_backend``), still
before any model is built."""

from __future__ import annotations

import os
from pathlib import Path

from trainer.config.base import ConfigError
from trainer.config.errors import validated
from trainer.config.root import Config
from trainer.config.sections import split_urls


def validate(cfg: Config, world_size: int | None = None) -> None:
    """Every check, with the fix in each message: the models' own (again: fields may have been set after
    loading), then ``check_ranks``."""
    validated(cfg.model_dump())
    check_ranks(cfg, world_size)


def check_ranks(cfg: Config, world_size: int | None = None) -> None:
    """What depends on the number of ranks (``world_size``, default torchrun's WORLD_SIZE, so these run at load
    time too) and on the file system (a local model path)."""
    world_size = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.rollout.backend == "vllm" and world_size % cfg.rollout.vllm.tensor_parallel_size:
        raise ConfigError(
            f"rollout.vllm.tensor_parallel_size={cfg.rollout.vllm.tensor_parallel_size} must divide the "
            f"{world_size} ranks"
        )
    _check_model_path(cfg.model.path)
    if cfg.data.prompts_per_step % world_size:
        raise ConfigError(
            f"data.prompts_per_step={cfg.data.prompts_per_step} is not divisible by the {world_size} ranks; "
            f"use a multiple of {world_size}"
        )
    rows = cfg.data.prompts_per_step // world_size * cfg.rollout.group_size  # completions per rank
    per_update = rows // cfg.loss.updates_per_batch
    if rows % cfg.loss.updates_per_batch or per_update % cfg.optim.micro_batch_size:
        raise ConfigError(
            f"each rank holds {rows} completions per step (data.prompts_per_step / ranks x rollout.group_size); "
            f"split into loss.updates_per_batch={cfg.loss.updates_per_batch} updates of micro-batches of "
            f"optim.micro_batch_size={cfg.optim.micro_batch_size} they must divide evenly: choose a micro-batch "
            f"size that divides {per_update if rows % cfg.loss.updates_per_batch == 0 else rows}"
        )


def server_urls(cfg: Config) -> list[str]:
    """``rollout.server.urls`` as a list of base URLs."""
    return split_urls(cfg.rollout.server.urls)


def _check_model_path(model: str) -> None:
    if not model.startswith("builtin:") and (model.startswith((".", "/", "~")) or Path(model).exists()):
        if not (Path(model).expanduser() / "config.json").is_file():
            raise ConfigError(
                f"model.path {model!r} is a local path without a config.json; point it at a save_pretrained "
                "directory, a hub id (org/name), or builtin:toy-reasoner"
            )


def resolve(cfg: Config) -> Config:
    """Fill the 'None means the objective's default' fields so the saved config shows what ran."""
    from losses import get_objective  # imports torch: only once a run starts, never to load a config

    obj = get_objective(cfg.loss.name)
    if cfg.loss.clip_low is None:
        cfg.loss.clip_low = obj.clip_low
    if cfg.loss.clip_high is None:
        cfg.loss.clip_high = obj.clip_high
    if cfg.loss.scale_std is None:
        cfg.loss.scale_std = obj.scale_std
    if cfg.loss.max_tokens is None:
        cfg.loss.max_tokens = cfg.rollout.max_new_tokens
    if cfg.reward.overlong_cache is None:
        cfg.reward.overlong_cache = max(1, cfg.rollout.max_new_tokens // 5)
    if cfg.loss.tis_cap is None:  # stale samples are corrected by default; on-policy ones need no correction
        cfg.loss.tis_cap = 2.0 if cfg.rollout.max_staleness > 0 else 0.0
    return cfg
