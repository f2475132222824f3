"""What a toy reasoner does, by problem size: how often it takes the shortcut (a bare boxed answer, no line of
work) and how often each kind of answer is right. This is the trade-off the collapse lab is built on, measured
on the model rather than assumed."""

from __future__ import annotations

from collections import defaultdict

import torch

from rewards.math import grade
from rollout.base import encode_prompt
from rollout.hf import HFBackend
from toylab.reasoner import BUILTINS, heldout, resolve_model_path


def is_shortcut(text: str) -> bool:
    """No line of work: the answer alone (the shape of ``toylab.task.shortcut_solution``)."""
    return "=" not in text


def profile(model: str, n: int = 200, samples: int = 4, seed: int = 0, max_new_tokens: int = 96) -> dict:
    """Per operand count: problems, shortcut share, accuracy of shortcut and of worked answers, mean tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(model)
    tok = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    rows = heldout(BUILTINS[model], n)
    backend = HFBackend(lambda: lm, tok, max_new_tokens, 1.0, 1.0, torch.device("cpu"))
    comps = backend.generate([encode_prompt(tok, r.problem) for r in rows], samples, seed=seed)
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


def profile_table(result: dict) -> str:
    lines = [
        "| operands | answers | shortcut share | shortcut accuracy | worked accuracy | accuracy | tokens |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, r in result.items():
        lines.append(
            f"| {k} | {r['answers']} | {100 * r['shortcut_share']:.0f}% | {100 * r['shortcut_accuracy']:.0f}% "
            f"| {100 * r['worked_accuracy']:.0f}% | {100 * r['accuracy']:.0f}% | {r['tokens']:.1f} |"
        )
    return "\n".join(lines)
