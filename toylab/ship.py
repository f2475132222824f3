"""Ship the toy reasoners' starting checkpoints in the repository (``toylab/checkpoints/``), with checksums and
their measured held-out profile in ``MANIFEST.json``.

    python scripts/ship_reasoners.py builtin:toy-reasoner builtin:toy-shortcut5 builtin:toy-lengthpays

Each model is built here (SFT on CPU, ``toylab.reasoner.sft``) unless it is already in the cache, copied into
``toylab/checkpoints/<cache key>/``, and measured: held-out accuracy and mean tokens on ``--problems`` problems x
``--samples`` samples at temperature 1 (the figure ``tests/toylab/test_shipped.py`` checks, within its sampling error,
on whatever machine runs the tests). Why ship: the SFT result depends on the CPU's instruction set (the lab's
starting model measured 23.6% on one machine and 6.0% on another), so a user's lab or demo would tell another
story than the docs. A 1M-parameter model is 4 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

from toylab.probe import heldout_profile
from toylab.reasoner import BUILTINS, SHIPPED, resolve_model_path

FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "toy_reasoner.json",
)


def ship(name: str, problems: int, samples: int) -> dict:
    """Copy one built model into ``toylab/checkpoints/``; its checksums and measured held-out profile."""
    src = Path(resolve_model_path(name))
    dst = SHIPPED / src.name
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for f in FILES:
        if (src / f).exists():
            shutil.copy2(src / f, dst / f)
    sums = {f: hashlib.sha256((dst / f).read_bytes()).hexdigest() for f in FILES if (dst / f).exists()}
    measured = heldout_profile(str(dst), BUILTINS[name], problems, samples)
    return {"dir": dst.name, "sha256": sums, "heldout": measured}


def main(argv: list[str] | None = None) -> int:
    """Ship every named model and rewrite ``MANIFEST.json`` (the models not named keep their entries)."""
    os.environ["GROUPWISE_BUILD_REASONERS"] = "1"  # build (or take from the cache), never resolve to the shipped copy
    p = argparse.ArgumentParser(
        prog="scripts/ship_reasoners.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("names", nargs="+", choices=[n for n in BUILTINS if n != "builtin:toy-reasoner-test"])
    p.add_argument("--problems", type=int, default=200)
    p.add_argument("--samples", type=int, default=4)
    args = p.parse_args(argv)
    path = SHIPPED / "MANIFEST.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    for name in args.names:
        manifest[name] = ship(name, args.problems, args.samples)
        print(name, json.dumps(manifest[name]["heldout"]), flush=True)
    path.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    return 0
