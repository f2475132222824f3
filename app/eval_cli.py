"""``groupwise eval``: load a model, evaluate it on benchmarks, write ``table.md`` and ``results.json``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from app.benchmarks import DEFAULT_INSTRUCTION, load_benchmark
from rewards.schemes import SCHEMES
from rollout.data import with_budgets
from trainer.evaluate import compare_table, evaluate, markdown_table


def model_path(name: str) -> str:
    """The model directory of ``name`` (a builtin toy model is built on first use); a local path that does not
    exist is an error here rather than a hub lookup."""
    from toylab.reasoner import resolve_model_path

    local = name.startswith(("/", ".", "~")) or name.count("/") > 1  # a hub id is owner/name
    if not name.startswith("builtin:") and local and not Path(name).expanduser().exists():
        raise FileNotFoundError(f"model {name!r} does not exist: give a model directory, a hub id or builtin:NAME")
    return resolve_model_path(name)


def budget_variants(name: str, rows: list, budgets: list[int] | None, phrase: str) -> list[tuple[str, list]]:
    """The benchmark's rows as they are, or, with ``--budget``, once per budget n with L1's phrase and n in
    every prompt (L1's evaluation at fixed budgets, arXiv 2503.04697 §4), labelled ``NAME@n``."""
    if not budgets:
        return [(name, rows)]
    if min(budgets) < 1:
        raise ValueError(f"--budget {min(budgets)}: a token budget must be a positive number of tokens")
    text = SCHEMES["l1_max" if phrase == "max" else "l1_exact"].phrase
    return [(f"{name}@{n}", with_budgets(rows, text, n, n, seed=0)) for n in budgets]


def run_eval(args) -> str:
    """Evaluate ``args.model`` on ``args.benchmarks``; returns the Markdown table (also written to disk). Every
    input (benchmarks, then the model) is found before anything is written."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewards.pool import GraderPool
    from trainer import dist

    toy_model = args.model.startswith("builtin:toy")
    benches = {
        name: load_benchmark("toy:" + args.model if name == "toy" and toy_model else name, args.data_dir, args.limit)
        for name in args.benchmarks
    }
    variants = [
        v for name, rows in benches.items() for v in budget_variants(name, rows, args.budget, args.budget_phrase)
    ]
    path = model_path(args.model)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as e:  # not a model directory, or a hub id that does not resolve
        raise FileNotFoundError(f"model {args.model!r}: {e}") from e
    device = dist.pick_device(args.device)
    instruction = DEFAULT_INSTRUCTION if args.instruction is None else args.instruction
    if toy_model and args.instruction is None:
        instruction = ""  # the toy reasoner was trained on bare problems
    if args.backend == "vllm":
        from rollout.vllm_backend import VLLMBackend

        dist.init(device.type)  # vLLM's external launcher joins a process group: a world of one here

        backend = VLLMBackend(path, tok, args.max_new_tokens, args.temperature, args.top_p, dtype=args.dtype)
    else:
        from rollout.hf import HFBackend

        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        backend = HFBackend(lambda: model, tok, args.max_new_tokens, args.temperature, args.top_p, device)
    out = Path(args.out or Path("evals") / Path(args.model.rstrip("/")).name.replace(":", "_"))
    out.mkdir(parents=True, exist_ok=True)
    grader = GraderPool()
    results, problems = {}, {}
    try:
        for label, rows in variants:
            res = evaluate(backend, tok, rows, args.samples, grader, instruction, seed=args.seed)
            results[label], problems[label] = res["summary"], res["problems"]
            s = res["summary"]
            print(f"{label}: acc {100 * s['accuracy']:.1f}%  tokens {s['tokens']:.0f}", flush=True)
    finally:
        grader.close()
    settings = {k: v for k, v in vars(args).items() if k not in ("compare", "func")}
    payload = {"model": args.model, "settings": settings, "summary": results, "problems": problems}
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    table = markdown_table(results)
    (out / "table.md").write_text(table + "\n")
    return f"{table}\n\nwritten: {out}/table.md, {out}/results.json"


def compare(paths: list[str]) -> str:
    """Side-by-side table of several ``results.json`` (files or the directories holding them)."""
    runs = {}
    for p in paths:
        f = Path(p) / "results.json" if Path(p).is_dir() else Path(p)
        if not f.is_file():
            raise FileNotFoundError(f"{p}: no results.json; run `groupwise eval MODEL -o DIR` first")
        runs[f.parent.name] = json.loads(f.read_text())["summary"]
    return compare_table(runs)
