"""``groupwise`` command line: ``train``, ``launch``, ``serve``, ``eval``, ``plot``, ``report``, ``build-tiny``,
``config``, ``check-gpu``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _quiet_libraries() -> None:
    import logging

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    logging.getLogger("torch.distributed").setLevel(logging.ERROR)


def _add_servers(sub) -> None:
    """``launch`` and ``serve``: the same server flags; ``launch`` adds the trainer's."""
    for name, text in (
        ("launch", "start vllm servers from the config, train against them under torchrun, stop them"),
        ("serve", "start vllm servers from the config and keep them up (an inference node)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", "-c", action="append", help="YAML file(s) of overrides, as for train")
        p.add_argument("--servers", type=int, default=1, help="vllm servers to start on this node")
        p.add_argument("--host", default="127.0.0.1", help="bind address (not loopback: needs the shared secret)")
        p.add_argument("--port", type=int, default=8100, help="first port; server i listens on port + i")
        p.add_argument("--server-cpus", default=None, help="CPU list the servers are pinned to (taskset), e.g. 0")
        p.add_argument("--server-gpus", default=None, help="CUDA_VISIBLE_DEVICES per server, ';'-separated: 0;1")
        p.add_argument("--timeout", type=float, default=900.0, help="seconds a server may take to become healthy")
        if name == "launch":
            p.add_argument("--nproc", type=int, default=1, help="trainer ranks (torchrun --nproc_per_node)")
            p.add_argument("--trainer-cpus", default=None, help="CPU list the trainer is pinned to, e.g. 1")
            p.add_argument("--trainer-gpus", default=None, help="CUDA_VISIBLE_DEVICES of the trainer, e.g. 2,3")
        p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.max_staleness=1")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="accuracy and response tokens on benchmarks (table + per-problem JSON)")
    p.add_argument("model", nargs="?", help="model directory, hub id, builtin:toy-reasoner, or a run's checkpoint")
    p.add_argument("--benchmarks", "-b", nargs="+", default=["gsm8k", "math500", "aime24", "aime25", "amc23"])
    p.add_argument("--samples", "-k", type=int, default=4, help="samples per problem (avg@k, pass@k)")
    p.add_argument("--limit", type=int, default=0, help="first N problems of each benchmark (0: all)")
    p.add_argument("--max-new-tokens", type=int, default=4096)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--instruction", default=None, help="appended to each problem (default: reason + \\boxed{})")
    p.add_argument(
        "--data-dir", default=None, help="benchmark JSONL directory (default $GROUPWISE_DATA or ../shared/data)"
    )
    p.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="pick a GPU with CUDA_VISIBLE_DEVICES"
    )
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", "-o", default=None, help="output directory (default evals/<model name>)")
    p.add_argument("--compare", nargs="+", metavar="RESULTS", help="results.json files (or their dirs) side by side")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="groupwise", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train", help="train with RL (also under torchrun)")
    p.add_argument("--config", "-c", action="append", help="YAML file(s) of overrides; later ones win (configs/)")
    p.add_argument("--resume", action="store_true", help="continue from run_dir's latest checkpoint (resume=auto)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. loss.name=gspo steps=5")
    _add_servers(sub)
    _add_eval(sub)
    p = sub.add_parser("plot", help="training curves of one or more runs as a PNG")
    p.add_argument("runs", nargs="+", help="run directories (each has metrics.jsonl)")
    p.add_argument("--out", "-o", default="curves.png")
    p = sub.add_parser("report", help="before/after held-out table of runs (and their overlaid curves)")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--plot", "-o", default=None, help="also write the overlaid curves to this PNG")
    p.add_argument("--out", default=None, help="also write the table to this Markdown file")
    p = sub.add_parser("build-tiny", help="build a tiny random Qwen2 model + byte tokenizer")
    p.add_argument("out", help="output directory")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    sub.add_parser("config", help="list every config key with its default and doc")
    from app.check_gpu.cli import add_arguments

    add_arguments(sub.add_parser("check-gpu", help="GPU node: stack, NCCL, GPU tests, a short vLLM run, one report"))
    return parser


def _train(args) -> int:
    _quiet_libraries()
    from app.inputs import run_inputs
    from trainer import dist
    from trainer.config import load_config
    from trainer.loop import train

    cfg = load_config(args.config, args.overrides + (["resume=auto"] if args.resume else []))
    run_dir = train(cfg, run_inputs(cfg))
    if not dist.is_main():
        return 0
    from app.plots import plot_runs
    from app.report import before_after_table

    plot_runs([run_dir], run_dir / "curves.png")
    if (run_dir / "eval.jsonl").exists():
        print(before_after_table([run_dir]))
    print(f"run finished: {run_dir}/metrics.jsonl, {run_dir}/curves.png")
    return 0


def _servers(args) -> int:
    _quiet_libraries()
    from app.launch import launch

    return launch(args)


def _eval(args) -> int:
    _quiet_libraries()
    from app.eval_cli import compare, run_eval

    print(compare(args.compare) if args.compare else run_eval(args))
    return 0


def _plot(args) -> int:
    from app.plots import plot_runs

    print(plot_runs([Path(r) for r in args.runs], args.out))
    return 0


def _report(args) -> int:
    from app.report import before_after_table

    table = before_after_table(args.runs)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    if args.plot:
        from app.plots import plot_runs

        print(plot_runs([Path(r) for r in args.runs], args.plot))
    return 0


def _build_tiny(args) -> int:
    _quiet_libraries()
    from toylab.models import save_tiny

    print(save_tiny(args.out, seed=args.seed, hidden=args.hidden, layers=args.layers))
    return 0


def _config(args) -> int:
    from trainer.config import describe_fields

    for key, default, doc in describe_fields():
        print(f"{key:<32} {default:<24} {doc}")
    return 0


def _check_gpu(args) -> int:
    from app.check_gpu.cli import run

    return run(args)


COMMANDS = {"train": _train, "launch": _servers, "serve": _servers, "eval": _eval, "plot": _plot}
COMMANDS.update({"report": _report, "build-tiny": _build_tiny, "config": _config, "check-gpu": _check_gpu})


def main(argv: list[str] | None = None) -> int:
    """Parse, run one command, and turn the errors a user can fix into exit codes: 2 bad input, 3 halted,
    the preemption's own code when stopped by a signal."""
    parser = _parser()
    # overrides may come before or after flags (`train --resume steps=9`): argparse leaves later ones unknown
    args, unknown = parser.parse_known_args(argv)
    takes_overrides = args.cmd in ("train", "launch", "serve")
    if unknown and (not takes_overrides or any(u.startswith("-") or "=" not in u for u in unknown)):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if unknown:
        args.overrides += unknown
    from app.launch import ServerStartError
    from rollout.data import DataError
    from rollout.server import RolloutUnavailable, ServerMismatch
    from trainer.config import ConfigError
    from trainer.lifecycle import Preempted, TrainingHalted

    try:
        return COMMANDS[args.cmd](args)
    except (ConfigError, FileNotFoundError, DataError, ServerMismatch, ServerStartError) as e:
        print(f"groupwise: error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"groupwise: {e}", file=sys.stderr)
        return e.exit_code
    except (TrainingHalted, RolloutUnavailable) as e:
        print(f"groupwise: halted: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
