"""Loading: defaults -> YAML file(s) -> dotted CLI overrides (``loss.clip_high=0.28``), merged into one nested
dict and validated once by the pydantic models (``trainer.config.errors.validated``), then the checks that
depend on the ranks (``trainer.config.checks.check_ranks``). Also saving."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from trainer.config.base import ConfigError
from trainer.config.checks import check_ranks
from trainer.config.errors import validated
from trainer.config.root import Config


class _Loader(yaml.SafeLoader):
    """YAML 1.1 with YAML 1.2's floats: ``3e-5`` (no dot) is a number, not the string '3e-5'."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["loss.clip_high=0.28", "steps=5"]`` -> nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value (e.g. loss.name=gspo)")
        key, raw = item.split("=", 1)
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier one")
        node[parts[-1]] = value
    return nested


def _merge(into: dict, data: dict, label: str | None, sources: dict[str, str], prefix: str = "") -> None:
    """Lay ``data`` over ``into`` (mappings merge, anything else replaces); record which file set each key."""
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, label, sources, f"{path}.")
            continue
        into[key] = value
        for old in [k for k in sources if k == path or k.startswith(f"{path}.")]:
            del sources[old]
        if label is not None:
            sources[path] = label


def _read(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.load(p.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    return data


def load_config(path: str | Path | list | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file(s) at ``path`` (later files override earlier ones), then dotted
    ``overrides``; validated."""
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for one in paths:
        _merge(merged, _read(one), str(one), sources)
    _merge(merged, parse_overrides(overrides or []), None, sources)
    cfg = validated(merged, sources)
    check_ranks(cfg)
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    return cfg.model_dump()


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
