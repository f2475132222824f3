"""What every config section shares: the error type and the pydantic settings.

Sections are pydantic models: each field is one declaration holding its type, default, bounds (``ge``/``gt``/
``le``/``lt``), choices (``Literal``) and one-line doc (``description``). Unknown keys are refused
(``extra="forbid"``), values are checked strictly (an integer field refuses 1.5 and ``true``; a number field
takes an integer), and NaN or infinity is never a valid number. A field whose bound needs a reason gives it in
``why(...)``, quoted in the error.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A bad configuration; the message names the key and the fix."""


class Section(BaseModel):
    """A config section: strict types, no unknown keys, finite numbers only."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


def why(reason: str) -> dict[str, Any]:
    """``Field(..., json_schema_extra=why("..."))``: the reason behind a bound, quoted when a value breaks it."""
    return {"why": reason}
