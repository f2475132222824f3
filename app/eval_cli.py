"""``groupwise eval``: load a model, evaluate it on benchmarks, write ``table.md`` and ``results.json``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from app.benchmarks import DEFAULT_INSTRUCTION, load_benchmark
from rewards.schemes import SCHEMES
from rollout.data import with_budgets
from trainer.evaluate import compare_table, evaluate, markdown_table


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
    """Evaluate ``args.model`` on ``args.benchmarks``; returns the Markdown table (also written to disk)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewards.pool import GraderPool
    from toylab.reasoner import resolve_model_path
    from trainer import dist

    if not args.model:
        raise FileNotFoundError("groupwise eval needs a MODEL (or --compare RESULTS...)")
    if not args.temperature > 0:  # both samplers divide by it, as does the config's eval.temperature (0, inf)
        raise ValueError(f"--temperature must be > 0, got {args.temperature}: greedy decoding is not supported")
    path = resolve_model_path(args.model)
    device = dist.pick_device(args.device)
    tok = AutoTokenizer.from_pretrained(path)
    instruction = DEFAULT_INSTRUCTION if args.instruction is None else args.instruction
    if args.model.startswith("builtin:toy") and args.instruction is None:
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
        for name in args.benchmarks:
            bench = "toy:" + args.model if name == "toy" and args.model.startswith("builtin:toy") else name
            rows = load_benchmark(bench, args.data_dir, args.limit or None)
            for label, variant in budget_variants(name, rows, args.budget, args.budget_phrase):
                res = evaluate(backend, tok, variant, args.samples, grader, instruction, seed=args.seed)
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
