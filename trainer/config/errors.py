"""pydantic's ``ValidationError`` turned into the project's ``ConfigError``: each message names the full dotted
key, the bad value and the fix (the valid range or choices, "did you mean" for an unknown key, the new name of
a renamed one), and the file that set the key."""

from __future__ import annotations

import difflib
import math
import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from trainer.config.base import ConfigError
from trainer.config.root import Config

# Keys renamed when the backends and the reward schemes got sub-sections (docs/config.md, "Renamed keys").
RENAMED: dict[str, str] = {
    "rollout.tensor_parallel_size": "rollout.vllm.tensor_parallel_size",
    "rollout.gpu_memory_utilization": "rollout.vllm.gpu_memory_utilization",
    "rollout.vllm_sleep": "rollout.vllm.sleep",
    "rollout.vllm_enforce_eager": "rollout.vllm.enforce_eager",
    "rollout.servers": "rollout.server.urls",
    "rollout.server_push": "rollout.server.push",
    "rollout.push_dir": "rollout.server.push_dir",
    "rollout.request_timeout": "rollout.server.request_timeout",
    "reward.incorrect_reward": "reward.binary.incorrect",
    "reward.length_weight": "reward.length_penalty.weight",
    "reward.length_warmup": "reward.length_penalty.warmup",
    "reward.eos_required": "reward.efficiency.eos_required",
    "reward.lambda_top": "reward.efficiency.lambda_top",
    "reward.efficiency_alpha": "reward.efficiency.alpha",
}

_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
}
_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number")


def validated(data: dict[str, Any], sources: dict[str, str] | None = None) -> Config:
    """The ``Config`` of the nested dict ``data``; ``sources`` maps dotted keys to the file that set them."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        raise ConfigError("\n".join(_source(err["loc"], sources or {}) + _message(err) for err in errors)) from None


def _source(loc: tuple, sources: dict[str, str]) -> str:
    key = ".".join(map(str, loc))
    for k, label in sources.items():
        if key and (k == key or k.startswith(key + ".") or key.startswith(k + ".")):
            return f"{label}: "
    return ""


def _message(err: dict) -> str:
    loc, kind, value = err["loc"], err["type"], err.get("input")
    key = ".".join(map(str, loc))
    field = field_at(loc)
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "literal_error" and field is not None:
        return f"{key}: {value!r} is not valid; choose from {list(choices(field.annotation))}"
    if kind in _EXPECTED:
        return f"{key}: expected {_EXPECTED[kind]}, got {value!r}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{key}: expected a mapping of {key} keys, got {value!r}"
    if kind in _BOUND_ERRORS and field is not None:
        is_float = field.annotation is float or float in typing.get_args(field.annotation)
        value = float(value) if is_float and isinstance(value, int) and not isinstance(value, bool) else value
        span = bounds(field)
        if span is None:
            return f"{key}={value!r}: NaN and infinity are not valid values"
        reason = (field.json_schema_extra or {}).get("why") if isinstance(field.json_schema_extra, dict) else None
        return f"{key}={value!r} is out of range: it must be a finite number in {interval(span)}" + (
            f" ({reason})" if reason else ""
        )
    if kind == "value_error":  # our validators' messages name their keys and the fix already
        return err["msg"].removeprefix("Value error, ")
    return f"{key}: {err['msg']} (got {value!r})"


def _unknown_key(loc: tuple) -> str:
    key = ".".join(map(str, loc))
    if key in RENAMED:
        return f"config key '{key}' was renamed to '{RENAMED[key]}' (docs/config.md, Renamed keys)"
    model = model_at(loc[:-1])
    names = list(model.model_fields) if model else []
    prefix = "".join(f"{p}." for p in loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    hint = f" did you mean '{prefix}{close[0]}'?" if close else ""
    return f"unknown config key '{key}';{hint} valid keys here: {names}"


def model_at(loc: tuple) -> type[BaseModel] | None:
    """The section model at the dotted location ``loc`` (``()``: the root)."""
    model: type[BaseModel] = Config
    for part in loc:
        info = model.model_fields.get(str(part))
        if info is None or not section_type(info.annotation):
            return None
        model = info.annotation
    return model


def field_at(loc: tuple) -> FieldInfo | None:
    model = model_at(loc[:-1]) if loc else None
    return model.model_fields.get(str(loc[-1])) if model else None


def section_type(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def choices(tp: Any) -> tuple:
    """The values of a ``Literal`` annotation (also inside ``X | None``); () for other types."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    return next((choices(a) for a in typing.get_args(tp) if choices(a)), ())


def bounds(field: FieldInfo) -> tuple[float, float, str] | None:
    """``(low, high, brackets)`` from a field's ``ge``/``gt``/``le``/``lt``, or None without any."""
    lo, hi, left, right = -math.inf, math.inf, "(", ")"
    for m in field.metadata:
        if getattr(m, "ge", None) is not None:
            lo, left = m.ge, "["
        if getattr(m, "gt", None) is not None:
            lo, left = m.gt, "("
        if getattr(m, "le", None) is not None:
            hi, right = m.le, "]"
        if getattr(m, "lt", None) is not None:
            hi, right = m.lt, ")"
    return None if (lo, hi) == (-math.inf, math.inf) else (lo, hi, left + right)


def interval(span: tuple[float, float, str]) -> str:
    lo, hi, brackets = span
    return f"{brackets[0]}{lo:g}, {hi:g}{brackets[1]}".replace("inf", "∞")
