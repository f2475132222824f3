"""Typed configuration: dataclasses are the single source of fields, defaults, docs and bounds.

``fields`` holds the sections (each field's default, doc comment and range together), ``load`` reads YAML
files and dotted overrides into them, ``checks`` validates values and resolves objective defaults.
"""

from trainer.config.checks import RANGES, _get, resolve, server_urls, validate
from trainer.config.fields import (
    CheckpointConfig,
    Config,
    ConfigError,
    DataConfig,
    DeepSpeedConfig,
    EvalConfig,
    GuardConfig,
    LogConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RewardConfig,
    RolloutConfig,
)
from trainer.config.load import describe_fields, load_config, parse_overrides, save_config, to_dict

__all__ = [
    "RANGES",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DeepSpeedConfig",
    "EvalConfig",
    "GuardConfig",
    "LogConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RewardConfig",
    "RolloutConfig",
    "_get",
    "describe_fields",
    "load_config",
    "parse_overrides",
    "resolve",
    "save_config",
    "server_urls",
    "to_dict",
    "validate",
]
