"""``groupwise`` command line: ``train``, ``plot``, ``build-tiny``, ``config``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _quiet_libraries() -> None:
    import logging
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    logging.getLogger("torch.distributed").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="groupwise", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("train", help="train with RL (also under torchrun)")
    p.add_argument("--config", "-c", help="YAML file of overrides (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. loss.name=gspo steps=5")

    p = sub.add_parser("plot", help="training curves of one or more runs as a PNG")
    p.add_argument("runs", nargs="+", help="run directories (each has metrics.jsonl)")
    p.add_argument("--out", "-o", default="curves.png")

    p = sub.add_parser("build-tiny", help="build a tiny random Qwen2 model + byte tokenizer")
    p.add_argument("out", help="output directory")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)

    sub.add_parser("config", help="list every config key with its default and doc")

    args = parser.parse_args(argv)
    from trainer.config import ConfigError

    try:
        if args.cmd == "train":
            _quiet_libraries()
            from trainer.config import load_config
            from trainer.loop import train

            cfg = load_config(args.config, args.overrides)
            run_dir = train(cfg)
            print(f"run finished: {run_dir}/metrics.jsonl, {run_dir}/curves.png")
        elif args.cmd == "plot":
            from trainer.plots import plot_runs

            print(plot_runs([Path(r) for r in args.runs], args.out))
        elif args.cmd == "build-tiny":
            _quiet_libraries()
            from trainer.tiny import save_tiny

            print(save_tiny(args.out, seed=args.seed, hidden=args.hidden, layers=args.layers))
        elif args.cmd == "config":
            from trainer.config import describe_fields

            for key, default, doc in describe_fields():
                print(f"{key:<32} {default:<24} {doc}")
    except (ConfigError, FileNotFoundError) as e:
        print(f"groupwise: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
