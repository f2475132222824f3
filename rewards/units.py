"""Units of measure and times of day: what normalization would otherwise erase before values are compared.

* **Units** (``units_differ``): ``normalize`` drops a trailing unit, so ``2 \\text{ m}`` and ``2 \\text{ cm}``
  would both read 2. Before that, the unit each side carries is read and spelled one way (``m``, ``meters``,
  ``metre`` are one unit; ``cm^2``, ``cm²``, ``square centimeters`` another). When **both** sides carry a
  unit and the units differ, the answers differ: no conversion is attempted (``100 cm`` is not ``1 m``
  here; the gold's unit is the one asked for). A unit on one side only is dropped (``12 cm`` is ``12``): a
  problem that asks "in centimeters" gets answers with and without the unit. Words that name no dimension
  (``units``, ``square units``, ``ways``) are no unit; a plural noun after a number counts as one against
  another unit or noun (``2 cups`` is not ``2 liters``, ``5 apples`` not ``5 oranges``).
* **Times of day** (``same_time``): ``12:00`` is not the ratio 12:0. An answer shaped ``h:mm`` (two-digit
  minutes below 60, hours up to 24; optionally ``:ss`` and am/pm) is a time: ``9:24``, a MATH gold, is one,
  and no gold ratio in our data sets is written that way (``1:4``, ``3:5``, ``19:60``). Two times compare as
  times; with am/pm on one side only, the other side's hour is read on a 12-hour clock (``1:00`` is
  ``1:00 pm``). A time against another colon form (``9:24`` against the ratio ``3:8``) is wrong, so an
  unreduced ratio written like a time (``6:10`` for ``3:5``) is refused: the rare false negative is the price
  of never paying a ratio that happens to equal a time.
"""

from __future__ import annotations

import re
import unicodedata

_SPELLINGS = {  # one unit, its spellings (lower case; '_' is a space)
    "mm": "mm millimeter millimeters millimetre millimetres", "cm": "cm centimeter centimeters centimetre centimetres",
    "m": "m meter meters metre metres", "km": "km kilometer kilometers kilometre kilometres",
    "in": "in inch inches", "ft": "ft foot feet", "yd": "yd yard yards", "mi": "mi mile miles",
    "mph": "mph miles_per_hour",
    "km/h": "km/h kph kmph kilometers_per_hour kilometres_per_hour", "m/s": "m/s meters_per_second metres_per_second",
    "s": "s sec secs second seconds", "min": "min mins minute minutes", "h": "h hr hrs hour hours",
    "day": "day days", "week": "week weeks", "month": "month months", "year": "year years yr yrs",
    "deg": "° degree degrees", "rad": "rad radian radians", "mg": "mg milligram milligrams",
    "g": "g gm gram grams", "kg": "kg kilogram kilograms kilo kilos", "lb": "lb lbs pound pounds",
    "oz": "oz ounce ounces", "l": "l liter liters litre litres", "ml": "ml milliliter milliliters millilitre",
    "gal": "gal gallon gallons", "dollar": "dollar dollars", "cent": "cent cents",
}  # fmt: skip
_CANONICAL = {word.replace("_", " "): unit for unit, words in _SPELLINGS.items() for word in words.split()}
_WORDS = "|".join(sorted((re.escape(w) for w in _CANONICAL), key=len, reverse=True))
_TEXT = re.compile(r"\\(?:text|textbf|textnormal|textrm|mathrm|mbox|textit|operatorname)\s*\{([^{}]*)\}")
_UNIT = re.compile(
    rf"(?<=[\d}}])\s*(?P<dim>square\s+|sq\.?\s+|cubic\s+)?(?P<unit>{_WORDS})(?![a-zA-Z])"
    r"\s*(?:\^\s*\{?(?P<pow>[23])\}?|(?P<sup>[²³]))?(?:\s*(?:squared|cubed))?\s*\.?$",
    re.I,
)

_NOUN = re.compile(r"-?[\d.,]*\d\s*([a-zA-Z]{3,20}s)\s*\.?")  # one plural noun after a number
_NO_DIMENSION = {"units", "times", "ways", "points"}  # words that name no dimension: never differ


def unit_of(answer: str) -> str | None:
    """The unit an answer ends with, spelled one way (``cm^2``), or None when it names no dimension."""
    s = _TEXT.sub(lambda m: " " + m.group(1) + " ", unicodedata.normalize("NFC", answer[-200:]))
    s = re.sub(r"\\[,;:! ]|~|\$|\\\)|\\\]", " ", s).strip()
    s = re.sub(r"\^\s*\{?\\circ\}?", " °", s)
    m = _UNIT.search(s)
    if m is None:  # '12 cookies': a counted noun is a unit too ('2 cups' is not '2 liters')
        noun = _NOUN.fullmatch(s)
        return f"noun:{noun.group(1).lower()}" if noun and noun.group(1).lower() not in _NO_DIMENSION else None
    unit = _CANONICAL[m.group("unit").lower()]
    power = m.group("pow") or {"²": "2", "³": "3"}.get(m.group("sup") or "", "")
    dim = (m.group("dim") or "").lower()
    if dim or re.search(r"squared|cubed", m.group(0), re.I):
        power = "3" if dim.startswith("cubic") or "cubed" in m.group(0).lower() else "2"
    return f"{unit}^{power}" if power else unit


def units_differ(pred: str, gold: str) -> bool:
    """True when both answers carry a unit and the units differ (see the module docstring)."""
    up, ug = unit_of(pred), unit_of(gold)
    return up is not None and ug is not None and up != ug


_RATIO = re.compile(r"\d{1,30}\s*:\s*\d{1,30}")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(?:([ap])\.?\s*m\.?)?", re.I)


def same_time(p: str, g: str) -> bool | None:
    """Whether two normalized answers are the same time of day; None when they are not times (module
    docstring). With am/pm on one side only, both are read modulo 12 hours."""
    mp, mg = (m if (m := _CLOCK.fullmatch(x.strip())) and _valid(m) else None for x in (p, g))
    if mp is None or mg is None:
        other = g if mp else p
        return False if (mp or mg) and _RATIO.fullmatch(other.strip()) else None  # a time against the ratio 3:8
    one_sided = bool(mp.group(4)) != bool(mg.group(4))
    values = []
    for m in (mp, mg):
        hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if m.group(4):
            hour = hour % 12 + (12 if m.group(4).lower() == "p" else 0)
        day = 12 if one_sided else 24
        values.append(((hour % day) * 60 + minute) * 60 + second)
    return values[0] == values[1]


def _valid(m: re.Match) -> bool:
    hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    max_hour = 12 if m.group(4) else 24
    return hour <= max_hour and minute < 60 and second < 60
