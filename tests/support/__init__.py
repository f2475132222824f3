"""What the tests share: config and batch builders, the grader traps, synthetic lab runs, and the
scripts the multi-process tests run (``mp_update.py`` under torchrun, ``fault_cli.py``: the CLI with faults planted)."""
