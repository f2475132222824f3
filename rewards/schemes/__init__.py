"""Reward schemes: small picklable objects that turn the step's grades and lengths into rewards.

One module per scheme family (``binary``, ``length_penalty``, ``efficiency``, ``acoer``); each registers its
schemes, their knobs and how they are built from the config (``base.register``). Every module of this package
is imported here, so adding a scheme is one new file (plus its tests): the registry, ``reward.name``'s choices
and the ``reward`` config section all follow from it.
"""

from __future__ import annotations

import importlib
import pkgutil

from rewards.schemes.acoer import ACOER, ACOERParams
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


def scheme_params() -> list[tuple[type, str | None]]:
    """Each distinct ``(params dataclass, section)`` of the registered schemes, by scheme name: what the
    ``reward`` config section is composed of."""
    out: list[tuple[type, str | None]] = []
    for name in sorted(SCHEMES):
        cls = SCHEMES[name]
        if cls.params is not None and (cls.params, cls.section) not in out:
            out.append((cls.params, cls.section))
    return out


__all__ = [
    "ACOER",
    "SCHEMES",
    "ACOERParams",
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
    "scheme_params",
]
