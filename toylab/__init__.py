"""The toy lab: a reasoner on a laptop, one room beside the trainer.

- ``toylab.task``: the toy task (multi-operand sums), its worked solutions and its tempting shortcut;
- ``toylab.models``: tiny tokenizers and Qwen2 models made locally (no hub);
- ``toylab.reasoner``: the toy reasoners (``builtin:*``): their specs, supervised fine-tuning and cache.

Imports flow one way: ``trainer -> toylab -> rollout`` (``rollout.data.Example``, ``rollout.base.encode_prompt``);
nothing here imports the trainer. The experiments that use the lab are ``configs/toy/`` and
``scripts/collapse_lab.py`` (``make collapse-lab``); their results are in ``docs/toy-lab.md``.
"""
