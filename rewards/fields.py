"""Config fields that carry their own bounds: ``bounded(default, lo, hi, "[)")`` is a dataclass field whose
valid values are the interval from ``lo`` to ``hi`` ("[" / "]" inclusive, "(" / ")" exclusive).

The trainer's config sections and the reward schemes' parameters declare their fields with it, so a field's
default, doc (the comment that ends its line, or the comment line just above it) and bounds sit together;
the config checks read the bounds from the fields (``field_range``). Standard library only, so the math
modules can use it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

INF = float("inf")


def bounded(default: Any, lo: float, hi: float, brackets: str = "[)", why: str | None = None) -> Any:
    """A dataclass field with the valid interval ``brackets[0] lo, hi brackets[1]``; ``why`` is the reason
    behind the bound where it is not obvious (it is quoted in the error)."""
    meta: dict[str, Any] = {"range": (lo, hi, brackets)}
    if why:
        meta["why"] = why
    return dataclasses.field(default=default, metadata=meta)


def field_range(f: dataclasses.Field) -> tuple[float, float, str] | None:
    """The ``(lo, hi, brackets)`` a field was declared with, or None."""
    return f.metadata.get("range")
