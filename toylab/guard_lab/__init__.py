"""The collapse guard's accuracy rule, calibrated on some lab seeds and validated on others (issue #26).

    python scripts/guard_lab.py --runs runs/lab/length runs/lab/collapse --calibrate 0 1 --validate 2 3 4
    python scripts/guard_lab.py --runs runs/lab/length --out /tmp/guard.md      # one directory, default seeds

Modules: ``rules`` (every definition, fixed in advance), ``runs`` (the lab's runs read and simulated at a
larger batch), ``replay`` (the rules replayed, calibrated, the default action decided), ``report`` (the
Markdown), ``cli`` (the command).

Reads the lab's run directories (``<runs>/<method>-s<seed>/``: ``groups.jsonl``, the per-prompt outcomes of each
step written by ``trainer.lifecycle.write_groups``, from which the step's accuracy and its per-prompt spread are
computed; ``events.jsonl`` for rollbacks; ``lab.json``, written when a run finished) and
replays accuracy rules offline, step by step, through ``trainer.collapse.CollapseGuard`` itself (the code the trainer
runs; in ``warn`` mode, so a run goes on after an alarm):

- ``relative p2``: the rule before issue #26 with the config's defaults (accuracy below max(median - 0.3, median x
  0.5) of the last 20 steps, 2 steps in a row); ``relative p3``: the same with patience 3 (configs/lab/guard.yaml);
- ``cusum default``: ``AccuracyCusum`` with GuardConfig's k, h, tau; ``cusum calibrated``: k, h, tau chosen on the
  calibration seeds by the rule in ``choose`` below.

Each at the lab's batch (the logged per-prompt outcomes as they are: 8 prompts x 16 samples) and at B = 128 prompts,
simulated: for each step t, 128 prompt outcomes drawn with replacement from the logged prompts of steps t-W..t+W of
the same run (W = ``SIM_W`` = 8: the pool, 8 x 17 = 136 prompts, is at least as large as the batch, so its own
noise does not dominate; seeded, ``--replicates`` draws). Every figure in the output is computed
here; the markdown section (``--out``) and its JSON (``--json``) are written by this package only.

Everything the verdict depends on is stated below, in code, before any lab result was looked at: which runs are
healthy, the collapse onset, what counts as a false alarm and a detection, the calibration target and choice, and
when a rollback (rather than a warning) is the justified default action.
"""
