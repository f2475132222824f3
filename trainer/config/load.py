"""Loading: defaults -> YAML file(s) -> dotted CLI overrides (``loss.clip_high=0.28``). Unknown keys and wrong
types fail here with the dotted path of the key and the valid choices; values are then checked by
``trainer.config.checks.validate``. Also saving, and the listing of every key with its doc."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import io
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from trainer.config.checks import validate
from trainer.config.fields import Config, ConfigError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats. Returns the value."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) and not isinstance(choices[0], bool):  # YAML 1.1 reads off/on as false/true
            value = {False: "off", True: "on"}[value] if {False: "off", True: "on"}[value] in choices else value
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise ConfigError(f"{path}: {value!r} is not valid; choose from {list(choices)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError:
                pass
        raise ConfigError(f"{path}: {value!r} is not a {_type_name(tp)}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-5 (no dot) as a string; accept what float() reads
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported field type {tp}")


def _apply(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    """Set fields of the dataclass ``obj`` from a nested dict, checking names and types."""
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{path}';{hint} valid keys here: {names}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a mapping of {_type_name(type(current))} fields, got {value!r}")
            _apply(current, value, prefix=f"{path}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], path))


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["loss.clip_high=0.28", "steps=5"]`` -> nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value (e.g. loss.name=gspo)")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier one")
        node[parts[-1]] = value
    return nested


def load_config(path: str | Path | list | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file(s) at ``path`` (later files override earlier ones), then dotted
    ``overrides``; validated."""
    cfg = Config()
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    for one in paths:
        p = Path(one)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
        try:
            _apply(cfg, data)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None
    _apply(cfg, parse_overrides(overrides or []))
    validate(cfg)
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe_fields(obj: Any = None, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, one-line doc) for every field, the doc read from the comments of the class that
    declares the field (``reward``'s scheme knobs: from the scheme's module)."""
    obj = obj if obj is not None else Config()
    docs = _field_docs(type(obj))
    rows = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe_fields(value, prefix=f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", repr(value), docs.get(f.name, "")))
    return rows


def _field_docs(cls: type) -> dict[str, str]:
    """Field name -> the comment that ends its line, else the comment line just above it; over the classes of
    ``cls``'s MRO that have source (a composed class such as ``RewardConfig`` has none of its own)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        comments = {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}
        for node in ast.parse(source).body[0].body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                above = node.lineno - 1
                if node.end_lineno in comments:
                    docs[node.target.id] = comments[node.end_lineno]
                elif above in comments and lines[above - 1].lstrip().startswith("#"):
                    docs[node.target.id] = comments[above]
    return docs
