"""Value checks that types cannot express, with the fix in each message: every number against the range
declared on its field (``rewards.fields.bounded``), a section's own ``check()`` (ACOER's relations between
knobs), relations between sections, and what depends on the ranks. Then ``resolve`` fills the fields whose
None means "the objective's default". Nothing here imports a rollout backend: what needs one is checked where
the backend is built (``trainer.backends.check_backend``), still before any model is built."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rewards.fields import field_range
from trainer.config.fields import Config, ConfigError


def bounded_fields(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, dataclasses.Field]]:
    """(dotted key, section, field) for every field of ``obj``'s sections that declares a range."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from bounded_fields(value, f"{prefix}{f.name}.")
        elif field_range(f) is not None:
            yield f"{prefix}{f.name}", obj, f


# Every numeric key and its meaningful range: (low, high, brackets), read from the fields (tests walk it).
RANGES: dict[str, tuple[float, float, str]] = {key: field_range(f) for key, _, f in bounded_fields(Config())}


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _check_ranges(cfg: Config) -> None:
    for key, section, f in bounded_fields(cfg):
        lo, hi, brackets = field_range(f)
        v = getattr(section, f.name)
        if v is None:
            continue
        below = v < lo if brackets[0] == "[" else v <= lo
        above = v > hi if brackets[1] == "]" else v >= hi
        if v != v or below or above or (isinstance(v, float) and math.isinf(v)):
            interval = f"{brackets[0]}{lo:g}, {hi:g}{brackets[1]}".replace("inf", "∞")
            why = f" ({f.metadata['why']})" if "why" in f.metadata else ""
            raise ConfigError(f"{key}={v!r} is out of range: it must be a finite number in {interval}{why}")
    _check_finite(cfg)
    _check_sections(cfg)


def _check_finite(obj: Any) -> None:
    """Any float the ranges leave out: NaN and infinities are never valid."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            _check_finite(v)
        elif isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{f.name}={v!r}: NaN and infinity are not valid values")


def _check_sections(cfg: Config) -> None:
    """Relations between fields: a section's own ``check()`` (a scheme's knobs), then across sections."""
    for section in _sections(cfg):
        if hasattr(section, "check"):
            try:
                section.check()
            except ValueError as e:
                raise ConfigError(str(e)) from None
    if cfg.guard.min_history > cfg.guard.window:
        raise ConfigError(
            f"guard.min_history={cfg.guard.min_history} exceeds guard.window={cfg.guard.window}: the baseline "
            "needs the history it is taken over"
        )
    if cfg.loss.tis_cap is not None and 0 < cfg.loss.tis_cap < 1:
        raise ConfigError(f"loss.tis_cap={cfg.loss.tis_cap}: use 0 (off) or a cap >= 1 (2.0 is common)")
    if cfg.loss.max_tokens is not None and cfg.loss.max_tokens < cfg.rollout.max_new_tokens:
        raise ConfigError(
            f"loss.max_tokens={cfg.loss.max_tokens} is below rollout.max_new_tokens={cfg.rollout.max_new_tokens}: "
            "Dr. GRPO's constant must be at least the longest completion"
        )


def _sections(obj: Any) -> Iterator[Any]:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield value
            yield from _sections(value)


def validate(cfg: Config, world_size: int | None = None) -> None:
    """Value checks that types cannot express, with the fix in each message. ``world_size`` defaults to
    torchrun's WORLD_SIZE, so checks that depend on the ranks run at load time too."""
    world_size = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    _check_ranges(cfg)
    if cfg.rollout.backend == "vllm":
        if cfg.rollout.top_p < 1:
            raise ConfigError(
                f"rollout.top_p={cfg.rollout.top_p} with rollout.backend=vllm: vLLM renormalizes the sampler's "
                "log-probs over the nucleus while the learner's cover the whole vocabulary, so ratios and "
                "logprob_gap would be biased; train with rollout.top_p=1 (eval.top_p may be < 1)"
            )
        if world_size % cfg.rollout.tensor_parallel_size:
            raise ConfigError(
                f"rollout.tensor_parallel_size={cfg.rollout.tensor_parallel_size} must divide the {world_size} ranks"
            )
    _check_server(cfg)
    model = cfg.model.path
    if not model.startswith("builtin:") and (model.startswith((".", "/", "~")) or Path(model).exists()):
        if not (Path(model).expanduser() / "config.json").is_file():
            raise ConfigError(
                f"model.path {model!r} is a local path without a config.json; point it at a save_pretrained "
                "directory, a hub id (org/name), or builtin:toy-reasoner"
            )
    cache = cfg.reward.overlong_cache
    if cache is not None and not 0 < cache <= cfg.rollout.max_new_tokens:
        raise ConfigError(f"reward.overlong_cache={cache} must be in (0, rollout.max_new_tokens]")
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
    """``rollout.servers`` as a list of base URLs."""
    return [u.strip().rstrip("/") for u in cfg.rollout.servers.split(",") if u.strip()]


def _check_server(cfg: Config) -> None:
    """The server backend and bounded asynchrony: combinations that cannot work fail here, with the fix."""
    r = cfg.rollout
    if r.backend == "server":
        for url in server_urls(cfg):
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"rollout.servers: {url!r} is not a base URL; write http://HOST:PORT")
        if r.top_p < 1:
            raise ConfigError(
                f"rollout.top_p={r.top_p} with rollout.backend=server: vLLM renormalizes the sampler's log-probs "
                "over the nucleus while the learner's cover the whole vocabulary; train with rollout.top_p=1"
            )
    if r.max_staleness > 0:
        if r.backend != "server":
            raise ConfigError(
                f"rollout.max_staleness={r.max_staleness} needs rollout.backend=server: the {r.backend} backend "
                "samples on the learner's own weights or device, so generation cannot overlap the update"
            )
        if r.dynamic_sampling:
            raise ConfigError(
                "rollout.dynamic_sampling decides after grading how many more prompts to draw, which a generation "
                "started steps ahead cannot know; use rollout.max_staleness=0 with it"
            )


def resolve(cfg: Config) -> Config:
    """Fill the 'None means the objective's default' fields so the saved config shows what ran."""
    from losses import get_objective

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
