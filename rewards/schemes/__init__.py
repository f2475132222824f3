"""Reward schemes: small picklable objects that turn the step's grades and lengths into rewards.

One module per scheme family (``binary``, ``length_penalty``, ``efficiency``, ``acoer``, ``l1``, ``shorterbetter``,
``thinkprune``, ``dler``); each registers its schemes and how they are built from the config
(``base.register``). Every module of this package is imported here, so a new scheme file registers itself;
its knobs are declared torch-free with the config (``trainer/config/reward.py``: a section, and its name among
``reward.name``'s choices).
"""

from __future__ import annotations

import importlib
import pkgutil

from rewards.schemes.acoer import ACOER
from rewards.schemes.base import (
    SCHEMES,
    Composite,
    RewardBatch,
    Stateless,
    build_scheme,
    overlong_penalty,
    register,
    scheme_from_config,
)
from rewards.schemes.binary import Binary
from rewards.schemes.efficiency import AroraZanette, GRPOLambda, efficiency_reward
from rewards.schemes.length_penalty import CorrectLengthPenalty, KimiLengthPenalty, kimi_lambda

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")  # registers the schemes of a module not named above


__all__ = [
    "ACOER",
    "SCHEMES",
    "AroraZanette",
    "Binary",
    "Composite",
    "CorrectLengthPenalty",
    "GRPOLambda",
    "KimiLengthPenalty",
    "RewardBatch",
    "Stateless",
    "build_scheme",
    "efficiency_reward",
    "kimi_lambda",
    "overlong_penalty",
    "register",
    "scheme_from_config",
]
