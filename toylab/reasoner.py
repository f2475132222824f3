"""The toy reasoners: ~1M-parameter Qwen2 models supervised-fine-tuned on the toy task on CPU.

``builtin:toy-reasoner`` is the starting point of the CPU demo; ``builtin:toy-shortcut5`` (the collapse lab's)
and ``builtin:toy-shortcut`` (its first design) are trained on the shortcut variant of the task;
``builtin:toy-reasoner-test`` is the test suite's small one.
Plain PyTorch on one process: the model is small enough that DeepSpeed would only add start-up time. Each is
built once, saved with ``save_pretrained`` (temporary directory, then rename) and reused by later runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from rollout.base import encode_prompt
from rollout.data import Example
from toylab.models import build_model, build_tokenizer, publish, save_tiny
from toylab.task import sft_pairs, toy_problems


@dataclass
class ToySpec:
    """Everything that determines the toy reasoner; its hash names the cache directory."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 512
    operands: int = 3
    max_value: int = 99
    max_redundant: int = 3  # redundant lines per SFT solution, uniform in [0, max_redundant]
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    shortcut: float = 0.0  # share of SFT solutions that are the bare boxed answer (toylab.task.shortcut_solution)
    min_operands: int = 0  # > 0: problems have min_operands..operands numbers; 0: always ``operands``
    merge: float = 0.0  # probability an SFT addition shares its line with the next (toylab.task.worked_solution)
    init: str = ""  # start the SFT from this builtin reasoner's weights (it already adds), not from random ones

    def key(self) -> str:
        """Cache directory name. Fields at their default are left out after ``seed``, so adding a field keeps
        the names (and caches) of the reasoners built before it."""
        values = asdict(self)
        names = list(values)
        tail = names[names.index("seed") + 1 :]
        kept = [
            str(values[k]).replace("builtin:", "") for k in names if k not in tail or values[k] != getattr(ToySpec, k)
        ]
        return "toy-reasoner-" + "-".join(kept)

    def problems(self, n: int, seed: int = 0, split: str = "train") -> list[Example]:
        """``n`` problems of this reasoner's task (``split`` train or test)."""
        return toy_problems(n, self.operands, self.max_value, seed, split, self.min_operands or None)


DEMO = ToySpec()
POSITIONS = 512  # positions of every toy reasoner (prompt + completion budget must fit)

# The collapse lab's first design: the same model and recipe on the shortcut variant. 2-4 operands make easy and
# hard problems; a quarter of the SFT solutions are the bare answer (short, tempting, mostly wrong when imitated).
# Kimi's penalty did not collapse it: its worked answers are right too often (docs/toy-lab.md).
SHORTCUT = ToySpec(operands=4, min_operands=2, max_redundant=2, shortcut=0.25)
# The lab's reasoner (configs/lab/base.yaml): up to 5 numbers, so a larger share of problems is hard for the
# worked solution too (groups of mostly wrong answers, where a penalty on incorrect answers acts).
# 1500 SFT steps: at 600 the 5-number reasoners learned addition on some machines only (23.6% held-out on one,
# 5.6% and 6.0% on two others); the shipped copy (toylab/checkpoints) is the one every machine uses.
SHORTCUT5 = ToySpec(operands=5, min_operands=2, max_redundant=2, shortcut=0.25, steps=1500)
# The length-pays task (the lab's objectives experiment): up to 4 numbers, continued from the demo's reasoner
# (which adds: trained from random weights for 600 steps on this task, a reasoner reached 11% held-out, its
# single additions mostly wrong), no redundant lines, and SFT solutions
# that skip work: additions merged into one line (merge 0.4) or no line at all (shortcut 0.1). Every token is
# work, and less work is less often right, so accuracy rises with length within a group: an objective's length
# bias has something to act on. Written before its first build (docs/toy-lab.md, predictions).
LENGTHPAYS = ToySpec(operands=4, min_operands=2, max_redundant=0, shortcut=0.1, merge=0.4, steps=400, lr=1e-3,
                     init="builtin:toy-reasoner")  # fmt: skip

# The test suite's toy reasoner: same recipe, smaller model, 2 operands, fewer steps (about 45 s; ~50% sampled).
TEST = ToySpec(hidden=96, layers=3, intermediate=384, operands=2, max_value=49, max_redundant=2, steps=300)
BUILTINS = {
    "builtin:toy-reasoner": DEMO,
    "builtin:toy-shortcut": SHORTCUT,
    "builtin:toy-shortcut5": SHORTCUT5,
    "builtin:toy-lengthpays": LENGTHPAYS,
    "builtin:toy-reasoner-test": TEST,
}


def _encode(tok, problem: str, solution: str) -> tuple[list[int], int]:
    prompt = encode_prompt(tok, problem)
    answer = tok(solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return prompt + answer, len(prompt)


def _batch(examples: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, L] and labels [B, L] with -100 on prompt and padding (loss on the answer only)."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, (seq, p) in enumerate(examples):
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, p : len(seq)] = torch.tensor(seq[p:])
    return ids, labels


def sft(spec: ToySpec, out_dir: str | Path, progress: bool = True) -> Path:
    """Train the toy reasoner described by ``spec`` and save it to ``out_dir``; returns the directory."""
    torch.manual_seed(spec.seed)
    tok = build_tokenizer()
    if spec.init:  # continued SFT: the architecture is the starting reasoner's
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(spec.init), dtype=torch.float32)
    else:
        model = build_model(
            tok,
            hidden=spec.hidden,
            layers=spec.layers,
            heads=spec.heads,
            kv_heads=spec.kv_heads,
            intermediate=spec.intermediate,
            max_positions=POSITIONS,
            seed=spec.seed,
        )
    n_params = sum(p.numel() for p in model.parameters())
    data = [
        _encode(tok, p, s)
        for p, s in sft_pairs(
            20_000,
            spec.operands,
            spec.max_value,
            spec.max_redundant,
            spec.seed,
            shortcut=spec.shortcut,
            min_operands=spec.min_operands or None,
            merge=spec.merge,
        )
    ]
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warm = max(1, spec.steps // 20)

    def lr_at(s: int) -> float:  # linear warm-up, cosine decay to 10%
        if s < warm:
            return (s + 1) / warm
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (s - warm) / max(1, spec.steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = random.Random(spec.seed)
    model.train()
    t0 = time.time()
    bar = tqdm(range(spec.steps), desc=f"sft toy reasoner ({n_params / 1e6:.2f}M params)", disable=not progress)
    for _ in bar:
        ids, labels = _batch(rng.sample(data, spec.batch_size), tok.pad_token_id)
        loss = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    info = {"spec": asdict(spec), "params": n_params, "final_loss": loss.item(), "seconds": round(time.time() - t0, 1)}
    return publish(out_dir, tok, model, {"toy_reasoner.json": json.dumps(info, indent=2)})


def heldout(spec: ToySpec, n: int = 200, seed: int = 0) -> list[Example]:
    """The toy task's held-out problems (disjoint from every SFT and RL training problem)."""
    return spec.problems(n, seed, split="test")


def task_rows(model_path: str, n: int, seed: int, operands: int, max_value: int) -> list[Example]:
    """Training prompts of ``data.source=toy``: a builtin toy reasoner's own task, otherwise the plain task
    with the given operand count and range."""
    if model_path in BUILTINS:
        return BUILTINS[model_path].problems(n, seed)
    return toy_problems(n, operands, max_value, seed)


def cache_dir() -> Path:
    return Path(os.environ.get("GROUPWISE_CACHE", Path.home() / ".cache" / "groupwise"))


SHIPPED = Path(__file__).resolve().parent / "checkpoints"  # starting models in the repository (MANIFEST.json)
_VERIFIED: dict[str, Path] = {}


def shipped(path: str) -> Path | None:
    """The repository's copy of builtin model ``path``, its files checked against MANIFEST.json's SHA-256 (once
    per process); None when it is not shipped. Shipped so that every machine starts from the same weights: an
    SFT run's result differs between instruction sets (AVX2 / AVX-512 kernels sum in other orders)."""
    if path in _VERIFIED:
        return _VERIFIED[path]
    manifest = SHIPPED / "MANIFEST.json"
    entry = json.loads(manifest.read_text()).get(path) if manifest.exists() else None
    if entry is None:
        return None
    root = SHIPPED / entry["dir"]
    for name, digest in entry["sha256"].items():
        f = root / name
        got = hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else "missing"
        if got != digest:
            raise ValueError(
                f"model.path {path!r}: shipped file {f} does not match MANIFEST.json (sha256 {got[:12]}, expected "
                f"{digest[:12]}); restore it with `git checkout -- {f.relative_to(SHIPPED.parents[1])}`, or build "
                "the model locally with GROUPWISE_BUILD_REASONERS=1 (results then differ from the docs)"
            )
    _VERIFIED[path] = root
    return root


def resolve_model_path(path: str) -> str:
    """Map ``builtin:*`` models to directories: the repository's shipped copy when there is one (checked against
    its checksums), else a locally built one (SFT on CPU once, then cached; always with
    ``GROUPWISE_BUILD_REASONERS=1``). Other paths and hub ids pass through."""
    if path == "builtin:tiny-random":
        target = cache_dir() / "tiny-random"
        if not (target / "config.json").exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            save_tiny(target)
        return str(target)
    if path in BUILTINS:
        if os.environ.get("GROUPWISE_BUILD_REASONERS") != "1" and (ship := shipped(path)) is not None:
            return str(ship)
        target = cache_dir() / BUILTINS[path].key()
        if not (target / "config.json").exists():
            print(f"building {path} in {target} (once; later runs reuse it)", flush=True)
            sft(BUILTINS[path], target)
        return str(target)
    if path.startswith("builtin:"):
        choices = ["builtin:tiny-random", *BUILTINS]
        raise ValueError(f"model.path {path!r}: unknown builtin model; choose from {choices}")
    return path
