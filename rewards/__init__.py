"""Grading and rewards, importing only torch, the standard library, sympy and Math-Verify.

``math.grade`` reads a response (``answers``, ``extract``) and decides equivalence (``normalize``, ``numbers``,
``units``, ``forms``, ``parse``, ``verify``), under ``limits`` (size guards) and ``pool`` (killable workers with
CPU-time limits). ``schemes/`` turns a batch's grades and lengths into rewards, one module per scheme family."""
