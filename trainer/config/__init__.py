"""Typed configuration: pydantic models, one declaration per option (type, default, bounds or choices, doc).

``sections`` and ``reward`` hold the sections, ``root`` the whole ``Config``, ``load`` reads YAML files and
dotted overrides into it, ``errors`` words pydantic's errors as ``ConfigError`` (dotted key, value, fix),
``checks`` holds what depends on the ranks and resolves objective defaults, ``describe`` lists every key
(``groupwise config``, docs/config.md). Loading a config imports no torch.
"""

from trainer.config.base import ConfigError
from trainer.config.checks import resolve, server_urls, validate
from trainer.config.describe import FieldRow, as_markdown, as_text, describe_fields
from trainer.config.errors import RENAMED
from trainer.config.load import load_config, parse_overrides, save_config, to_dict
from trainer.config.reward import (
    ACOERParams,
    BinaryParams,
    EfficiencyParams,
    L1Params,
    LengthPenaltyParams,
    RewardConfig,
    ShorterBetterParams,
    ThinkPruneParams,
)
from trainer.config.root import Config
from trainer.config.sections import (
    CheckpointConfig,
    DataConfig,
    DeepSpeedConfig,
    EvalConfig,
    GuardConfig,
    LogConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RolloutConfig,
    ServerConfig,
    VllmConfig,
)

__all__ = [
    "RENAMED",
    "ACOERParams",
    "BinaryParams",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DeepSpeedConfig",
    "EfficiencyParams",
    "EvalConfig",
    "FieldRow",
    "GuardConfig",
    "L1Params",
    "LengthPenaltyParams",
    "LogConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RewardConfig",
    "RolloutConfig",
    "ServerConfig",
    "ShorterBetterParams",
    "ThinkPruneParams",
    "VllmConfig",
    "as_markdown",
    "as_text",
    "describe_fields",
    "load_config",
    "parse_overrides",
    "resolve",
    "save_config",
    "server_urls",
    "to_dict",
    "validate",
]
