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


class UsageError(ValueError):
    """A command-line argument out of range or an input that does not exist: exit 2, before any work."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def _need_files(paths: list[str] | None, what: str) -> None:
    for p in paths or []:
        _check(Path(p).is_file(), f"{what} {p!r} does not exist (configs/ holds the shipped ones)")


def _need_runs(paths: list[str]) -> None:
    for p in paths:
        _check(
            (Path(p) / "metrics.jsonl").is_file(),
            f"{p!r} is not a run directory (no metrics.jsonl): give the run_dir of a `groupwise train` run",
        )


# what a newcomer needs next, under each command's --help
NEXT = {
    "train": """A bare `groupwise train` runs the toy CPU demo (builtin:toy-reasoner on its own task, no download).
Keys: `groupwise config` lists every key with its type, default and doc; configs/ holds ready files:
  groupwise train -c configs/smoke.yaml                                      a few steps of a tiny model
  groupwise train -c configs/base_gpu.yaml -c configs/qwen3_0p6b_gsm8k.yaml  a real model on one GPU
Data: data.source=hub:gsm8k (internet), a {problem, answer} JSONL, or files in data.dir / $GROUPWISE_DATA.
Several GPUs or nodes: scripts/train_node.sh, scripts/train_multinode.sh. Afterwards: `groupwise report RUN`.""",
    "eval": """Benchmarks gsm8k and math500 come from --data-dir or $GROUPWISE_DATA (gsm8k_test.jsonl, math500.jsonl),
else from the hub; aime24, aime25 and amc23 need their files there (docs/install.md, Data).
  groupwise eval builtin:toy-reasoner -b toy          the demo's model, no download
  groupwise eval Qwen/Qwen3-0.6B -b gsm8k --limit 50""",
    "launch": """Rollout on separate vllm servers: configs/server_gpu.yaml shows a one-node and a multi-node layout.
Servers off 127.0.0.1 need GROUPWISE_SERVER_SECRET set on servers and trainers. Keys: `groupwise config`.""",
    "report": "RUN: the run_dir of a `groupwise train` run (it holds metrics.jsonl and, with eval.every, eval.jsonl).",
}
NEXT["serve"], NEXT["plot"] = NEXT["launch"], NEXT["report"]


def _sub(sub, name: str, text: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=text, description=text, epilog=NEXT.get(name), formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _add_servers(sub) -> None:
    """``launch`` and ``serve``: the same server flags; ``launch`` adds the trainer's."""
    for name, text in (
        ("launch", "start vllm servers from the config, train against them under torchrun, stop them"),
        ("serve", "start vllm servers from the config and keep them up (an inference node)"),
    ):
        p = _sub(sub, name, text)
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
    p = _sub(sub, "eval", "accuracy and response tokens on benchmarks (table + per-problem JSON)")
    p.add_argument("model", nargs="?", help="model directory, hub id, builtin:toy-reasoner, or a run's checkpoint")
    p.add_argument("--benchmarks", "-b", nargs="+", default=["gsm8k", "math500", "aime24", "aime25", "amc23"])
    p.add_argument("--samples", "-k", type=int, default=4, help="samples per problem (avg@k, pass@k)")
    p.add_argument("--limit", type=int, default=0, help="first N problems of each benchmark (0: all)")
    p.add_argument("--max-new-tokens", type=int, default=4096)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--instruction", default=None, help="appended to each problem (default: reason + \\boxed{})")
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory of benchmark files (gsm8k_test.jsonl, math500.jsonl, ...); default $GROUPWISE_DATA, else "
        "gsm8k and math500 come from the hub",
    )
    p.add_argument("--budget", type=int, nargs="+", default=None, help="L1: evaluate at these token budgets")
    p.add_argument("--budget-phrase", choices=["exact", "max"], default="exact", help="L1: the budget phrase")
    p.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="pick a GPU with CUDA_VISIBLE_DEVICES"
    )
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", "-o", default=None, help="output directory (default evals/<model name>)")
    p.add_argument("--compare", nargs="+", metavar="RESULTS", help="results.json files (or their dirs) side by side")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groupwise",
        description=__doc__,
        epilog="Start with `groupwise train` (the toy CPU demo); `groupwise COMMAND --help` says what each needs.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = _sub(sub, "train", "train with RL (also under torchrun)")
    p.add_argument("--config", "-c", action="append", help="YAML file(s) of overrides; later ones win (configs/)")
    p.add_argument("--resume", action="store_true", help="continue from run_dir's latest checkpoint (resume=auto)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. loss.name=gspo steps=5")
    _add_servers(sub)
    _add_eval(sub)
    p = _sub(sub, "plot", "training curves of one or more runs as a PNG")
    p.add_argument("runs", nargs="+", help="run directories (each has metrics.jsonl)")
    p.add_argument("--out", "-o", default="curves.png")
    p = _sub(sub, "report", "before/after held-out table of runs (and their overlaid curves)")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--plot", "-o", default=None, help="also write the overlaid curves to this PNG")
    p.add_argument("--out", default=None, help="also write the table to this Markdown file")
    p = sub.add_parser("build-tiny", help="build a tiny random Qwen2 model + byte tokenizer")
    p.add_argument("out", help="output directory")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("config", help="list every config key with its type, default, range or choices and doc")
    p.add_argument("--format", choices=["text", "markdown"], default="text", help="markdown: docs/config.md")
    from app.check_gpu.cli import add_arguments

    add_arguments(sub.add_parser("check-gpu", help="GPU node: stack, NCCL, GPU tests, a short vLLM run, one report"))
    return parser


def _train(args) -> int:
    from trainer.config import load_config

    _need_files(args.config, "config file (-c)")
    # the config is checked before torch, DeepSpeed and transformers load: a bad key answers at once, alone
    cfg = load_config(args.config, args.overrides + (["resume=auto"] if args.resume else []))
    _quiet_libraries()
    from app.inputs import run_inputs
    from trainer import dist
    from trainer.loop import train

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
    _need_files(args.config, "config file (-c)")
    _check(args.servers >= 1, f"--servers {args.servers}: start at least one server")
    _check(0 < args.port and args.port + args.servers - 1 < 65536, f"--port {args.port}: not a TCP port")
    _check(args.timeout > 0, f"--timeout {args.timeout}: give the seconds a server may take, > 0")
    gpus = args.server_gpus.split(";") if args.server_gpus else None
    _check(
        gpus is None or len(gpus) == args.servers,
        f"--server-gpus {args.server_gpus!r} names {len(gpus or [])} GPU sets for {args.servers} servers; "
        "give one per server: 0;1;2",
    )
    _check(args.cmd == "serve" or args.nproc >= 1, f"--nproc {getattr(args, 'nproc', 0)}: at least one rank")
    _quiet_libraries()
    from app.launch import launch

    return launch(args)


def _eval(args) -> int:
    if not args.compare:
        _check(bool(args.model), "groupwise eval needs a MODEL (or --compare RESULTS...)")
        _check(args.samples >= 1, f"--samples {args.samples}: at least 1")
        _check(args.limit >= 0, f"--limit {args.limit}: 0 (all) or more")
        _check(args.max_new_tokens >= 1, f"--max-new-tokens {args.max_new_tokens}: at least 1")
        # both samplers divide by it, as does the config's eval.temperature (0, inf)
        _check(args.temperature > 0, f"--temperature must be > 0, got {args.temperature}: greedy is not supported")
        _check(0 < args.top_p <= 1, f"--top-p {args.top_p}: must be in (0, 1]")
        for n in args.budget or []:
            _check(n >= 1, f"--budget {n}: a token budget must be a positive number of tokens")
    _quiet_libraries()
    from app.eval_cli import compare, run_eval

    print(compare(args.compare) if args.compare else run_eval(args))
    return 0


def _plot(args) -> int:
    _need_runs(args.runs)
    from app.plots import plot_runs

    print(plot_runs([Path(r) for r in args.runs], args.out))
    return 0


def _report(args) -> int:
    _need_runs(args.runs)
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
    from trainer.config import as_markdown, as_text

    print(as_markdown() if args.format == "markdown" else as_text(), end="" if args.format == "markdown" else "\n")
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
    try:
        return COMMANDS[args.cmd](args)
    except BrokenPipeError:  # `groupwise config | head`: the reader left early, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        kind = _user_error_kind(e)
        if kind is None:
            raise
        if kind == "preempted":
            print(f"groupwise: {e}", file=sys.stderr)
            return e.exit_code
        print(f"groupwise: {kind}: {e}", file=sys.stderr)
        return 2 if kind == "error" else 3


# The errors a user can fix, by (module, class name): "error" exits 2 (bad input), "halted" 3. They are looked
# up in sys.modules, not imported: an exception's class is loaded once it is raised, and importing these modules
# up front would load torch before a config error could be reported.
USER_ERRORS = {
    ("trainer.config", "ConfigError"): "error",
    ("rollout.data", "DataError"): "error",
    ("rollout.server", "ServerMismatch"): "error",
    ("app.launch", "ServerStartError"): "error",
    ("trainer.lifecycle", "Preempted"): "preempted",
    ("trainer.lifecycle", "TrainingHalted"): "halted",
    ("rollout.server", "RolloutUnavailable"): "halted",
}


def _user_error_kind(e: Exception) -> str | None:
    if isinstance(e, (UsageError, FileNotFoundError)):
        return "error"
    for (module, name), kind in USER_ERRORS.items():
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(e, cls):
            return kind
    return None


if __name__ == "__main__":
    sys.exit(main())
