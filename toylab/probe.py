"""What a toy reasoner does, by problem size: how often it takes the shortcut (a bare boxed answer, no line of
work) and how often each kind of answer is right. This is the trade-off the collapse lab is built on, measured
on the model rather than assumed."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

import torch

from rewards.math import grade
from rollout.base import encode_prompt
from rollout.hf import HFBackend
from toylab.reasoner import BUILTINS, ToySpec, heldout, resolve_model_path


def is_shortcut(text: str) -> bool:
    """No line of work: the answer alone (the shape of ``toylab.task.shortcut_solution``)."""
    return "=" not in text


def sample_heldout(path: str, spec: ToySpec, n: int, samples: int, seed: int = 0, max_new_tokens: int = 96):
    """The model at ``path`` on ``n`` held-out problems of its task, ``samples`` each at temperature 1 (one
    CPU thread's HF sampler): the rows and their completions, ``samples`` per row in row order."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    rows = heldout(spec, n)
    backend = HFBackend(lambda: lm, tok, max_new_tokens, 1.0, 1.0, torch.device("cpu"))
    return rows, backend.generate([encode_prompt(tok, r.problem) for r in rows], samples, seed=seed)


def heldout_profile(path: str, spec: ToySpec, n: int = 200, samples: int = 4, seed: int = 0) -> dict:
    """Held-out accuracy and mean tokens, with the accuracy's standard error over problems (samples of one
    problem are correlated, so the problem is the unit: sd of per-problem accuracy / sqrt(n))."""
    rows, comps = sample_heldout(path, spec, n, samples, seed)
    per = [statistics.mean(grade(c.text, r.answer)[0] for c in comps[i * samples : (i + 1) * samples])
           for i, r in enumerate(rows)]  # fmt: skip
    return {
        "problems": n,
        "samples": samples,
        "seed": seed,
        "accuracy": round(statistics.mean(per), 4),
        "accuracy_se": round(statistics.stdev(per) / math.sqrt(n), 4),
        "tokens": round(statistics.mean(len(c.token_ids) for c in comps), 2),
    }


def profile(model: str, n: int = 200, samples: int = 4, seed: int = 0, max_new_tokens: int = 96) -> dict:
    """Per operand count: problems, shortcut share, accuracy of shortcut and of worked answers, mean tokens."""
    rows, comps = sample_heldout(resolve_model_path(model), BUILTINS[model], n, samples, seed, max_new_tokens)
    stats: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for i, c in enumerate(comps):
        row = rows[i // samples]
        s = stats[row.problem.count("+") + 1]
        kind = "shortcut" if is_shortcut(c.text) else "worked"
        s[kind].append(float(grade(c.text, row.answer)[0]))
        s["tokens"].append(float(len(c.token_ids)))
    out = {}
    for k in sorted(stats):
        s = stats[k]
        total = len(s["shortcut"]) + len(s["worked"])
        out[k] = {
            "answers": total,
            "shortcut_share": len(s["shortcut"]) / total,
            "shortcut_accuracy": sum(s["shortcut"]) / len(s["shortcut"]) if s["shortcut"] else float("nan"),
            "worked_accuracy": sum(s["worked"]) / len(s["worked"]) if s["worked"] else float("nan"),
            "accuracy": (sum(s["shortcut"]) + sum(s["worked"])) / total,
            "tokens": sum(s["tokens"]) / total,
        }
    return out


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.0f}%"  # nan: no answer of that kind


def profile_table(result: dict) -> str:
    lines = [
        "| operands | answers | shortcut share | shortcut accuracy | worked accuracy | accuracy | tokens |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, r in result.items():
        lines.append(
            f"| {k} | {r['answers']} | {_pct(r['shortcut_share'])} | {_pct(r['shortcut_accuracy'])} "
            f"| {_pct(r['worked_accuracy'])} | {_pct(r['accuracy'])} | {r['tokens']:.1f} |"
        )
    return "\n".join(lines)
