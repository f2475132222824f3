"""The toy lab: a reasoner on a laptop and the experiments run on it, one room beside the trainer.

The toy task and its models (what ``builtin:*`` models resolve to at the application's entry point):

- ``toylab.task``: the toy task (multi-operand sums), its worked solutions and its tempting shortcut;
- ``toylab.models``: tiny tokenizers and Qwen2 models made locally (no hub);
- ``toylab.reasoner``: the toy reasoners (``builtin:*``): their specs, supervised fine-tuning and cache;
- ``toylab.probe``: what a toy reasoner does by problem size (shortcut taken, each kind of answer right);

The lab (``scripts/collapse_lab.py``, ``make collapse-lab``; ``scripts/guard_lab.py``, ``make guard-lab``):

- ``toylab.experiments``: each experiment's configs (``configs/lab/``), starting model, baseline and methods;
- ``toylab.runner``: every (experiment, method, seed) as a ``groupwise train`` process, then the report;
- ``toylab.results``, ``toylab.stats``, ``toylab.figures``: the tables (paired two-stage bootstrap), the figures;
- ``toylab.guard_lab``: the collapse guard's accuracy rule calibrated and validated on the lab's runs;
- ``toylab.ship`` (``make reasoners``): the starting models built, measured and shipped in ``checkpoints/``;
- ``toylab.kernel_diff``: whether AVX2 kernels round differently here (the check behind ``make lab-avx2``).

Imports flow one way: the toy task and models use only ``rollout`` (``rollout.data.Example``,
``rollout.base.encode_prompt``); the lab reads what the trainer wrote and replays its collapse guard
(``trainer.collapse``); the trainer never imports the toy lab. ``configs/toy/`` holds single runs of the lab's
methods (``make exp-<name>``); the results are in ``docs/toy-lab.md``.
"""
