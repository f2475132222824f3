"""The real CLI, recording what adaptive GFPO decided on each rank, for tests/trainer/test_multiprocess.py:
``torchrun ... tests/support/digest_cli.py OUT_DIR train ...``. It wraps the step's advantage call at its
boundary (``trainer.loop.step_advantages``; production code has no hook) and writes, per rank and step, the
difficulty digest in the run state and the rows this rank kept, to ``OUT_DIR/rank{r}.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from app.cli import main
from trainer import dist, loop
from trainer.step_advantages import DIGEST_KEY, step_advantages

OUT = Path(sys.argv.pop(1))
seen: list[dict] = []


def recording(cfg, rewards_all, lengths_all, rank, n_local, run):
    adv, kept, metrics = step_advantages(cfg, rewards_all, lengths_all, rank, n_local, run)
    seen.append({"digest": run[DIGEST_KEY], "kept": kept.tolist(), "keep_mean": metrics["gfpo/keep_mean"]})
    (OUT / f"rank{dist.rank()}.json").write_text(json.dumps(seen))
    return adv, kept, metrics


loop.step_advantages = recording

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
