"""Math-Verify (Hugging Face ``math-verify`` 0.9.0, the grader of TRL and open-r1) as the equivalence engine,
inside our safety shell.

What the shell changes, and why:
* Only the library's LaTeX path runs (``LatexExtractionConfig``), on answers we already extracted and
  normalized (``$answer$``). Its plain-expression path calls sympy's ``parse_expr`` (``eval``) on text, so
  it is never configured, and both of the library's ``parse_expr`` names are replaced by a function that
  raises.
* The replacements hold only inside our own ``parse`` / ``verify`` calls (``_patched``) and are undone after,
  so any other caller of Math-Verify in the process sees the library unchanged; ``_library`` checks that
  every replaced name exists, so a library release that renames one fails loudly instead of running unpatched.
* latex2sympy2 builds numbers with ``sympy.Number(text)``, which for a string goes through ``sympify`` (that
  is, ``parse_expr``). The shell swaps in ``safe_number``: a regex-checked digit string becomes ``Integer`` or
  ``Float`` directly. ``tests/rewards/test_grader.py`` records every ``parse_expr``, ``eval`` and ``exec`` call while
  grading hostile text and requires none.
* The library's own time limits (``signal.alarm``, wall clock, main thread only) are off; ``cpu_deadline``
  bounds the whole check by this process's CPU time instead, so a loaded machine never turns a slow but
  correct check into a timeout. Text that could hang in C code (huge powers) never gets here
  (``rewards.limits.hostile``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import re
import signal
import threading

import sympy as sp

_NUMBER = re.compile(r"\d{1,400}(?:\.\d{0,400})?|\.\d{1,400}")


class GradingTimeout(BaseException):
    """A check ran past its CPU-time budget. A BaseException, like KeyboardInterrupt, so that the libraries'
    ``except Exception`` handlers cannot swallow it and carry on past the deadline."""


def safe_number(text) -> sp.Number:
    """``sympy.Number`` for a digit string without ``sympify``: Integer, or Float from the decimal string."""
    if isinstance(text, sp.Number):
        return text
    s = str(text).replace(",", "").strip()
    if not _NUMBER.fullmatch(s):
        raise ValueError(f"not a plain number: {s[:40]!r}")
    if "." in s:
        return sp.Float(s if not s.startswith(".") else "0" + s, max(15, len(s)))
    return sp.Integer(int(s))


def _refuse(*args, **kwargs):
    raise ValueError("parse_expr is disabled in groupwise's grader: model text is never executed")


# (module, attribute) -> our replacement. Each name must exist: a Math-Verify or latex2sympy2 release that renames
# one would otherwise leave its text path silently unpatched, so ``_library`` refuses to run instead.
_PATCHES = (  # (module, class or None, name, replacement name in this module)
    ("latex2sympy2_extended.latex2sympy2", None, "Number", "safe_number"),  # convert_number(): Number(...)
    ("latex2sympy2_extended.latex2sympy2", None, "parse_expr", "_refuse"),
    ("latex2sympy2_extended.latex2sympy2", "_Latex2Sympy", "parse_number", "_parse_number"),
    ("math_verify.parser", None, "parse_expr", "_refuse"),
    ("math_verify.parser", None, "parse_expr_cached", "_refuse"),
)
_patch_lock = threading.RLock()
_patch_depth = 0


def _parse_number(self, text):
    return safe_number(text)


def _owner(module: str, cls: str | None):
    owner = importlib.import_module(module)
    return getattr(owner, cls) if cls else owner


@functools.cache
def _library():
    """Import Math-Verify and check that every name we replace while grading exists (once per process)."""
    import math_verify
    from math_verify import LatexExtractionConfig

    missing = [f"{m}.{c + '.' if c else ''}{n}" for m, c, n, _ in _PATCHES if not hasattr(_owner(m, c), n)]
    if missing:
        raise ImportError(
            f"math-verify / latex2sympy2_extended changed: {missing} no longer exist, so groupwise's grader cannot "
            "close the paths that would execute model text; pin math-verify==0.9.0 or update rewards/verify.py"
        )
    # we pass no timeout on purpose (cpu_deadline and the pool's kill are ours); its warning saying so would
    # land in the middle of progress bars, once per grading process
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(lambda record: not record.getMessage().startswith("Timeout is disabled"))
    config = [LatexExtractionConfig(boxed_match_priority=0)]
    return math_verify, config


@contextlib.contextmanager
def _patched():
    """The library's text-executing names replaced for the duration of our own call only, then restored: other
    callers of Math-Verify in this process see it unchanged. Re-entrant; one grading thread at a time."""
    global _patch_depth
    with _patch_lock:
        saved = []
        if _patch_depth == 0:
            for module, cls, name, replacement in _PATCHES:
                owner = _owner(module, cls)
                saved.append((owner, name, owner.__dict__[name]))
                setattr(owner, name, globals()[replacement])
        _patch_depth += 1
        try:
            yield
        finally:
            _patch_depth -= 1
            for owner, name, original in saved:
                setattr(owner, name, original)


@contextlib.contextmanager
def cpu_deadline(seconds: float | None):
    """Raise ``GradingTimeout`` once this process has used ``seconds`` of CPU inside the block (SIGPROF).
    Only the main thread can take signals; elsewhere the block runs unbounded (the pool's kill still holds)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise GradingTimeout()

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


@functools.lru_cache(maxsize=4096)
def parse(answer: str) -> tuple:
    """Math-Verify's parse of one normalized answer (cached: a gold answer is seen G times a step)."""
    mv, config = _library()
    with _patched():
        return tuple(mv.parse(f"${answer}$", extraction_config=config, parsing_timeout=None))


def verify(pred: str, gold: str) -> tuple[bool, tuple, tuple]:
    """Math-Verify's verdict on two normalized answers, with both parses (empty when unparsable)."""
    mv, _ = _library()
    g, p = parse(gold), parse(pred)
    if not g or not p:
        return False, g, p
    with _patched():
        return bool(mv.verify(list(g), list(p), allow_set_relation_comp=True, timeout_seconds=None)), g, p


_library()  # at import: a library release that renamed a patched name fails here, loudly
