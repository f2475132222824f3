"""Typed configuration: dataclasses are the single source of fields, defaults and docs.

Load order: defaults -> YAML file -> dotted CLI overrides (``loss.clip_high=0.28``). Unknown keys, wrong
types and invalid values fail at load time with the dotted path of the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A bad configuration; the message names the key and the fix."""


@dataclass
class ModelConfig:
    path: str = "builtin:toy-reasoner"  # HF hub id, local directory, builtin:toy-reasoner or builtin:tiny-random
    dtype: Literal["fp32", "bf16"] = "fp32"  # learner and rollout precision (bf16 needs a GPU to be fast)
    gradient_checkpointing: bool = False  # recompute activations in backward to save memory


@dataclass
class DataConfig:
    source: str = "toy"  # toy (toy-reasoner task), arith (plain sums), a {problem, answer} JSONL, or hub:NAME
    prompts_per_step: int = 16  # B: prompts per optimizer step, over all ranks
    instruction: str = ""  # appended to each problem in the user message (e.g. 'put the answer in \\boxed{}')
    max_prompt_tokens: int = 256  # longer prompts are an error naming the row
    arith_operands: int = 2  # built-in task: numbers per problem
    arith_max_value: int = 20  # built-in task: operands drawn from [0, max]
    arith_size: int = 2000  # built-in task: number of distinct problems generated
    skip_bad_rows: bool = False  # skip (and count) malformed JSONL rows instead of stopping at the first one


@dataclass
class RolloutConfig:
    backend: Literal["hf", "vllm", "server"] = "hf"  # hf: on the learner; vllm: colocated engine; server: vllm serve
    group_size: int = 16  # G: completions sampled per prompt
    max_new_tokens: int = 96  # completion budget; longer ones are truncated (finish_reason=length)
    temperature: float = 1.0  # sampling temperature; the learner's log-probs use the same temperature
    top_p: float = 1.0  # nucleus sampling mass
    tensor_parallel_size: int = 1  # vllm: GPUs per engine (consecutive ranks form one tensor-parallel group)
    gpu_memory_utilization: float = 0.35  # vllm: share of GPU memory for weights + KV cache (the learner has the rest)
    vllm_sleep: bool = True  # vllm: free the KV cache during the learner update (sleep mode; CUDA only)
    vllm_enforce_eager: bool | None = None  # vllm: no torch.compile / CUDA graphs; None: eager on CPU only
    servers: str = ""  # server: comma-separated base URLs of running vllm servers (groupwise launch fills it)
    max_staleness: int = 0  # server: k >= 1 samples step s+k while step s trains (weights k updates old); 0: on-policy
    server_push: Literal["auto", "file", "nccl"] = "auto"  # server: weight push; auto: nccl on CUDA, else file
    push_dir: str = ""  # server, file push: directory the servers can read; "": <run_dir>/weights-push
    request_timeout: float = 600.0  # server: seconds a generation request may take before its server is dropped
    dynamic_sampling: bool = False  # DAPO: drop groups whose correctness ties (all or none) and sample more
    max_sampling_rounds: int = 3  # dynamic sampling: rollout rounds per step at most (then train on what is kept)


@dataclass
class ACOERConfig:
    alpha: float = 0.02  # initial brevity-bonus strength alpha_0
    k: float = 5.0  # curvature of g(x) = ln(1 + k(1 - x)) / ln(1 + k)
    shape: Literal["log", "linear"] = "log"  # g: log (paper) or linear 1 - x
    gamma: float = 0.85  # budget = max(min_budget, gamma * EMA(mean correct length))
    min_budget: float = 512.0  # budget floor in tokens (lower it for toy-scale lengths)
    span: int = 50  # EMA span (decay 2 / (span + 1))
    warmup: int = 200  # steps before the controller may change alpha
    window: int = 100  # compare the accuracy EMA with its value this many steps earlier
    delta: float = 0.02  # accuracy-EMA drop that counts as a decline
    down: float = 0.95  # alpha multiplier after a decline
    up: float = 1.02  # alpha multiplier otherwise
    alpha_min: float = 0.01  # alpha is clipped to [alpha_min, alpha_max]
    alpha_max: float = 0.5  # upper clip of alpha
    initial_budget: float | None = None  # B until the first adaptation; None: max_new_tokens / 2 (authors)
    empty_step: Literal["zero", "skip"] = "zero"  # no correct answer: feed length 0 to the EMA (authors) or skip


@dataclass
class RewardConfig:
    name: Literal["binary", "kimi_lp", "correct_lp", "grpo_lambda", "arora_zanette", "acoer"] = "correct_lp"  # scheme
    format_weight: float = 0.0  # added for any response with an extractable final answer (0 disables)
    length_weight: float = 1.0  # kimi_lp / correct_lp: weight w of the length term (Kimi gives none)
    length_warmup: int = 0  # kimi_lp / correct_lp: first steps without the length term (Kimi's phase)
    eos_required: bool = True  # arora_zanette / grpo_lambda: truncated gets 0, left out of mean/std (authors)
    incorrect_reward: float = 0.0  # binary: reward of a wrong answer (DAPO's paper: -1, with +1 for a right one)
    lambda_top: float = 0.2  # grpo_lambda: share of groups, by accuracy, that get the length penalty
    efficiency_alpha: float = 0.2  # grpo_lambda / arora_zanette: alpha of 1 - alpha * sigmoid(z)
    overlong_weight: float = 0.0  # DAPO soft overlong punishment added with this weight (0 disables)
    overlong_cache: int | None = None  # DAPO L_cache in tokens; None: a fifth of rollout.max_new_tokens
    overlong_filter: bool = False  # mask truncated completions out of the loss (DAPO overlong filtering)
    grade_timeout: float = 2.0  # limit in CPU seconds per equivalence check (machine load does not count)
    grade_workers: int = 0  # grading worker processes per rank; 0: min(4, cores)
    acoer: ACOERConfig = field(default_factory=ACOERConfig)


@dataclass
class LossConfig:
    name: Literal["grpo", "dr_grpo", "dapo", "gspo", "gspo_token", "luspo"] = "grpo"  # whole objective
    clip_low: float | None = None  # ratio bound 1 - clip_low; None: the objective's paper default
    clip_high: float | None = None  # ratio bound 1 + clip_high; None: the objective's paper default
    beta: float = 0.0  # KL coefficient to the reference model; 0 loads no reference model
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"  # per-token KL estimator
    scale_std: bool | None = None  # divide advantages by group std; None: the objective's default
    adv_eps: float = 1e-6  # added to the group std
    max_tokens: int | None = None  # Dr. GRPO divisor; None: rollout.max_new_tokens
    tis_cap: float | None = None  # truncated IS: cap C of min(pi_train / pi_sampler, C); 0 off; None: 2 if stale
    updates_per_batch: int = 1  # optimizer steps per rollout batch (mini-batches); 1: ratios are exactly 1


@dataclass
class OptimConfig:
    lr: float = 5e-5  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.99  # AdamW second-moment decay
    grad_clip: float = 1.0  # max global grad norm (0 disables)
    warmup_steps: int = 0  # linear warm-up of the learning rate
    micro_batch_size: int = 16  # completions per forward/backward on one rank
    # Rows of an update are sorted by length (prompt + completion) and packed into micro-batches whose padded
    # size (rows x longest row) stays within this budget. None: micro_batch_size x the update's longest row, the
    # fixed path's largest micro-batch, so memory and GEMM sizes stay as with fixed rows while short rows share
    # one pass. 0: the fixed path (micro_batch_size rows in rollout order).
    max_tokens_per_micro_batch: int | None = None  # padded-token budget; None: micro_batch_size x longest row; 0: off


@dataclass
class DeepSpeedConfig:
    zero_stage: Literal[0, 1, 2, 3] = 0  # ZeRO stage
    offload_optimizer: bool = False  # keep optimizer state on CPU (ZeRO 1-3)


@dataclass
class EvalConfig:
    every: int = 20  # evaluate before training, every N steps and at the end; 0: never during training
    benchmark: str = "toy"  # toy (held-out toy problems), gsm8k, math500, aime24, aime25, amc23, or a JSONL path
    problems: int = 100  # first N problems of the benchmark (0: all)
    samples: int = 4  # k samples per problem (avg@k accuracy, pass@k)
    temperature: float = 1.0  # sampling temperature of evaluation
    top_p: float = 1.0  # nucleus mass of evaluation
    max_new_tokens: int = 0  # 0: rollout.max_new_tokens


@dataclass
class LogConfig:
    tensorboard: bool = True  # also write TensorBoard scalars to RUN/tb (metrics.jsonl is always written)
    wandb: bool = False  # also log to Weights & Biases (needs `pip install wandb`)
    wandb_project: str = "groupwise"  # W&B project name
    wandb_mode: Literal["offline", "online"] = "offline"  # offline works without network (sync later)


@dataclass
class CheckpointConfig:
    every: int = 50  # save every N steps (and always at the end); 0: only at the end
    keep: int = 2  # complete checkpoints kept (oldest deleted first); 0 keeps all


@dataclass
class GuardConfig:
    max_nonfinite_streak: int = 3  # stop after this many steps in a row with a skipped (non-finite) update
    collapse_action: Literal["warn", "halt", "rollback", "off"] = "warn"  # on a collapse (docs/guard-results.md)
    window: int = 20  # collapse guard: steps the median baseline spans (CUSUM: reference span and lag)
    min_history: int = 5  # collapse guard: steps recorded before any check
    patience: int = 2  # collapse guard: consecutive out-of-bounds steps that fire it
    accuracy_drop: float = 0.3  # fire when accuracy < baseline - this, or
    accuracy_ratio: float = 0.5  # ... when accuracy < baseline x this (0 disables; a drop of 0.3 never fires at 0.3)
    length_ratio: float = 0.3  # fire when mean length < baseline x this
    entropy_ratio: float = 0.1  # fire when entropy < baseline x this
    degenerate_rise: float = 0.5  # fire when the share of empty/repetitive outputs > baseline + this
    accuracy_rule: Literal["cusum", "relative"] = "cusum"  # relative: the old rule; cusum: guards.AccuracyCusum
    cusum_k: float = 1.0  # CUSUM reference, in standard errors: k = delta / 2 targets a drop of 2 k of them
    cusum_h: float = 4.0  # CUSUM threshold: fires when the accumulated shortfall exceeds it (ARL0 ~ 15,000)
    cusum_tau: float = 0.04  # CUSUM allowance for healthy drift of accuracy between steps (in quadrature)
    max_rollbacks: int = 2  # rollbacks per run; the next collapse halts
    rollback_lr_factor: float = 0.5  # learning rate multiplier applied at each rollback
    rollback_penalty_factor: float = 0.5  # length-penalty strength multiplier applied at each rollback


@dataclass
class Config:
    run_dir: str = "runs/default"  # metrics.jsonl, config.yaml, checkpoints and plots go here
    seed: int = 0  # seeds prompt order, sampling and initialization; a run is a function of its config
    steps: int = 100  # training steps; each is one rollout batch and loss.updates_per_batch optimizer steps
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    resume: Literal["never", "auto"] = "never"  # auto: continue from the run_dir's latest complete checkpoint
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)


# ----------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats. Returns the value."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) and not isinstance(choices[0], bool):  # YAML 1.1 reads off/on as false/true
            value = {False: "off", True: "on"}[value] if {False: "off", True: "on"}[value] in choices else value
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise ConfigError(f"{path}: {value!r} is not valid; choose from {list(choices)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError:
                pass
        raise ConfigError(f"{path}: {value!r} is not a {_type_name(tp)}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-5 (no dot) as a string; accept what float() reads
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported field type {tp}")


def _apply(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    """Set fields of the dataclass ``obj`` from a nested dict, checking names and types."""
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{path}';{hint} valid keys here: {names}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a mapping of {_type_name(type(current))} fields, got {value!r}")
            _apply(current, value, prefix=f"{path}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], path))


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["loss.clip_high=0.28", "steps=5"]`` -> nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value (e.g. loss.name=gspo)")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier one")
        node[parts[-1]] = value
    return nested


def load_config(path: str | Path | list | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file(s) at ``path`` (later files override earlier ones), then dotted
    ``overrides``; validated."""
    cfg = Config()
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    for one in paths:
        p = Path(one)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
        try:
            _apply(cfg, data)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None
    _apply(cfg, parse_overrides(overrides or []))
    validate(cfg)
    return cfg


INF = float("inf")
# Every numeric key and its meaningful range: (low, high, brackets), "[" / "]" inclusive, "(" / ")" exclusive.
# validate() also rejects NaN and infinities in every float. tests/test_config.py walks this table.
RANGES: dict[str, tuple[float, float, str]] = {
    "seed": (0, INF, "[)"),
    "steps": (1, INF, "[)"),
    "data.prompts_per_step": (1, INF, "[)"),
    "data.max_prompt_tokens": (1, INF, "[)"),
    "data.arith_operands": (1, INF, "[)"),
    "data.arith_max_value": (1, INF, "[)"),
    "data.arith_size": (1, INF, "[)"),
    "rollout.group_size": (2, INF, "[)"),
    "rollout.max_new_tokens": (1, INF, "[)"),
    "rollout.temperature": (0, INF, "()"),
    "rollout.top_p": (0, 1, "(]"),
    "rollout.tensor_parallel_size": (1, INF, "[)"),
    "rollout.gpu_memory_utilization": (0, 1, "(]"),
    "rollout.max_sampling_rounds": (1, INF, "[)"),
    "rollout.max_staleness": (0, INF, "[)"),
    "rollout.request_timeout": (0, INF, "()"),
    "reward.format_weight": (0, INF, "[)"),
    "reward.length_weight": (0, INF, "[)"),
    "reward.length_warmup": (0, INF, "[)"),
    "reward.incorrect_reward": (-INF, 1, "()"),
    "reward.lambda_top": (0, 1, "(]"),
    "reward.efficiency_alpha": (0, 1, "[]"),
    "reward.overlong_weight": (0, INF, "[)"),
    "reward.overlong_cache": (1, INF, "[)"),
    "reward.grade_timeout": (0, INF, "()"),
    "reward.grade_workers": (0, INF, "[)"),
    "reward.acoer.alpha": (0, INF, "()"),
    "reward.acoer.k": (0, INF, "()"),
    "reward.acoer.gamma": (0, 1, "(]"),
    "reward.acoer.min_budget": (0, INF, "()"),
    "reward.acoer.initial_budget": (0, INF, "()"),
    "reward.acoer.span": (1, INF, "[)"),
    "reward.acoer.warmup": (0, INF, "[)"),
    "reward.acoer.window": (1, INF, "[)"),
    "reward.acoer.delta": (0, 1, "[]"),
    "reward.acoer.down": (0, 1, "(]"),
    "reward.acoer.up": (1, INF, "[)"),
    "reward.acoer.alpha_min": (0, INF, "()"),
    "reward.acoer.alpha_max": (0, INF, "()"),
    "loss.clip_low": (0, 1, "[)"),
    "loss.clip_high": (0, 1, "[)"),
    "loss.beta": (0, INF, "[)"),
    "loss.adv_eps": (0, INF, "[)"),
    "loss.max_tokens": (1, INF, "[)"),
    "loss.tis_cap": (0, INF, "[)"),
    "loss.updates_per_batch": (1, INF, "[)"),
    "optim.lr": (0, INF, "()"),
    "optim.weight_decay": (0, INF, "[)"),
    "optim.beta1": (0, 1, "[)"),
    "optim.beta2": (0, 1, "[)"),
    "optim.grad_clip": (0, INF, "[)"),
    "optim.warmup_steps": (0, INF, "[)"),
    "optim.micro_batch_size": (1, INF, "[)"),
    "optim.max_tokens_per_micro_batch": (0, INF, "[)"),
    "eval.every": (0, INF, "[)"),
    "eval.problems": (0, INF, "[)"),
    "eval.samples": (1, INF, "[)"),
    "eval.temperature": (0, INF, "()"),
    "eval.top_p": (0, 1, "(]"),
    "eval.max_new_tokens": (0, INF, "[)"),
    "checkpoint.every": (0, INF, "[)"),
    "checkpoint.keep": (0, INF, "[)"),
    "guard.max_nonfinite_streak": (1, INF, "[)"),
    "guard.window": (1, INF, "[)"),
    "guard.min_history": (1, INF, "[)"),
    "guard.patience": (1, INF, "[)"),
    "guard.accuracy_drop": (0, 1, "(]"),
    "guard.accuracy_ratio": (0, 1, "[)"),
    "guard.length_ratio": (0, 1, "()"),
    "guard.entropy_ratio": (0, 1, "()"),
    "guard.degenerate_rise": (0, 1, "(]"),
    "guard.cusum_k": (0, INF, "[)"),
    "guard.cusum_h": (0, INF, "()"),
    "guard.cusum_tau": (0, 1, "[)"),
    "guard.max_rollbacks": (0, INF, "[)"),
    "guard.rollback_lr_factor": (0, 1, "(]"),
    "guard.rollback_penalty_factor": (0, 1, "(]"),
}
WHY = {  # the reason behind a bound, where it is not obvious
    "rollout.group_size": "a group of one has zero advantage under group normalization",
    "reward.incorrect_reward": "a wrong answer must earn less than a right one (1)",
    "reward.efficiency_alpha": "1 - alpha * sigmoid(z) must stay >= 0 for a correct answer",
    "reward.acoer.gamma": "the budget is gamma x the mean correct length, a share of it",
    "reward.acoer.down": "the multiplier after an accuracy drop must not raise alpha",
    "reward.acoer.up": "the multiplier after no drop must not lower alpha",
    "loss.tis_cap": "0 disables; a cap C applies min(ratio, C)",
}


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _check_ranges(cfg: Config) -> None:
    for key, (lo, hi, brackets) in RANGES.items():
        v = _get(cfg, key)
        if v is None:
            continue
        below = v < lo if brackets[0] == "[" else v <= lo
        above = v > hi if brackets[1] == "]" else v >= hi
        if v != v or below or above or (isinstance(v, float) and math.isinf(v)):
            interval = f"{brackets[0]}{lo:g}, {hi:g}{brackets[1]}".replace("inf", "∞")
            why = f" ({WHY[key]})" if key in WHY else ""
            raise ConfigError(f"{key}={v!r} is out of range: it must be a finite number in {interval}{why}")
    for section in (cfg, *(getattr(cfg, f.name) for f in dataclasses.fields(cfg))):  # any float left out above
        if dataclasses.is_dataclass(section):
            for f in dataclasses.fields(section):
                v = getattr(section, f.name)
                if isinstance(v, float) and not math.isfinite(v):
                    raise ConfigError(f"{f.name}={v!r}: NaN and infinity are not valid values")
    a = cfg.reward.acoer
    if not a.alpha_min <= a.alpha <= a.alpha_max:
        raise ConfigError(
            f"reward.acoer: alpha_min <= alpha <= alpha_max must hold, got {a.alpha_min} <= {a.alpha} <= "
            f"{a.alpha_max}; raise alpha_max or lower alpha_min"
        )
    if a.initial_budget is not None and a.initial_budget < a.min_budget:
        raise ConfigError(
            f"reward.acoer.initial_budget={a.initial_budget} is below reward.acoer.min_budget={a.min_budget}"
        )
    if cfg.guard.min_history > cfg.guard.window:
        raise ConfigError(
            f"guard.min_history={cfg.guard.min_history} exceeds guard.window={cfg.guard.window}: the baseline "
            "needs the history it is taken over"
        )
    if cfg.loss.tis_cap is not None and 0 < cfg.loss.tis_cap < 1:
        raise ConfigError(f"loss.tis_cap={cfg.loss.tis_cap}: use 0 (off) or a cap >= 1 (2.0 is common)")
    if cfg.loss.max_tokens is not None and cfg.loss.max_tokens < cfg.rollout.max_new_tokens:
        raise ConfigError(
            f"loss.max_tokens={cfg.loss.max_tokens} is below rollout.max_new_tokens={cfg.rollout.max_new_tokens}: "
            "Dr. GRPO's constant must be at least the longest completion"
        )


def validate(cfg: Config, world_size: int | None = None) -> None:
    """Value checks that types cannot express, with the fix in each message. ``world_size`` defaults to
    torchrun's WORLD_SIZE, so checks that depend on the ranks run at load time too."""
    world_size = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    _check_ranges(cfg)
    if cfg.rollout.backend == "vllm":
        from rollout.vllm_backend import vllm_available

        ok, why = vllm_available()
        if not ok:
            raise ConfigError(f"rollout.backend=vllm: {why}")
        if cfg.rollout.top_p < 1:
            raise ConfigError(
                f"rollout.top_p={cfg.rollout.top_p} with rollout.backend=vllm: vLLM renormalizes the sampler's "
                "log-probs over the nucleus while the learner's cover the whole vocabulary, so ratios and "
                "logprob_gap would be biased; train with rollout.top_p=1 (eval.top_p may be < 1)"
            )
        if world_size % cfg.rollout.tensor_parallel_size:
            raise ConfigError(
                f"rollout.tensor_parallel_size={cfg.rollout.tensor_parallel_size} must divide the {world_size} ranks"
            )
    _check_server(cfg)
    model = cfg.model.path
    if not model.startswith("builtin:") and (model.startswith((".", "/", "~")) or Path(model).exists()):
        if not (Path(model).expanduser() / "config.json").is_file():
            raise ConfigError(
                f"model.path {model!r} is a local path without a config.json; point it at a save_pretrained "
                "directory, a hub id (org/name), or builtin:toy-reasoner"
            )
    cache = cfg.reward.overlong_cache
    if cache is not None and not 0 < cache <= cfg.rollout.max_new_tokens:
        raise ConfigError(f"reward.overlong_cache={cache} must be in (0, rollout.max_new_tokens]")
    if cfg.data.prompts_per_step % world_size:
        raise ConfigError(
            f"data.prompts_per_step={cfg.data.prompts_per_step} is not divisible by the {world_size} ranks; "
            f"use a multiple of {world_size}"
        )
    rows = cfg.data.prompts_per_step // world_size * cfg.rollout.group_size  # completions per rank
    per_update = rows // cfg.loss.updates_per_batch
    if rows % cfg.loss.updates_per_batch or per_update % cfg.optim.micro_batch_size:
        raise ConfigError(
            f"each rank holds {rows} completions per step (data.prompts_per_step / ranks x rollout.group_size); "
            f"split into loss.updates_per_batch={cfg.loss.updates_per_batch} updates of micro-batches of "
            f"optim.micro_batch_size={cfg.optim.micro_batch_size} they must divide evenly: choose a micro-batch "
            f"size that divides {per_update if rows % cfg.loss.updates_per_batch == 0 else rows}"
        )


def server_urls(cfg: Config) -> list[str]:
    """``rollout.servers`` as a list of base URLs."""
    return [u.strip().rstrip("/") for u in cfg.rollout.servers.split(",") if u.strip()]


def _check_server(cfg: Config) -> None:
    """The server backend and bounded asynchrony: combinations that cannot work fail here, with the fix."""
    r = cfg.rollout
    if r.backend == "server":
        for url in server_urls(cfg):
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"rollout.servers: {url!r} is not a base URL; write http://HOST:PORT")
        if r.top_p < 1:
            raise ConfigError(
                f"rollout.top_p={r.top_p} with rollout.backend=server: vLLM renormalizes the sampler's log-probs "
                "over the nucleus while the learner's cover the whole vocabulary; train with rollout.top_p=1"
            )
    if r.max_staleness > 0:
        if r.backend != "server":
            raise ConfigError(
                f"rollout.max_staleness={r.max_staleness} needs rollout.backend=server: the {r.backend} backend "
                "samples on the learner's own weights or device, so generation cannot overlap the update"
            )
        if r.dynamic_sampling:
            raise ConfigError(
                "rollout.dynamic_sampling decides after grading how many more prompts to draw, which a generation "
                "started steps ahead cannot know; use rollout.max_staleness=0 with it"
            )


def resolve(cfg: Config) -> Config:
    """Fill the 'None means the objective's default' fields so the saved config shows what ran."""
    from losses import get_objective

    obj = get_objective(cfg.loss.name)
    if cfg.loss.clip_low is None:
        cfg.loss.clip_low = obj.clip_low
    if cfg.loss.clip_high is None:
        cfg.loss.clip_high = obj.clip_high
    if cfg.loss.scale_std is None:
        cfg.loss.scale_std = obj.scale_std
    if cfg.loss.max_tokens is None:
        cfg.loss.max_tokens = cfg.rollout.max_new_tokens
    if cfg.reward.overlong_cache is None:
        cfg.reward.overlong_cache = max(1, cfg.rollout.max_new_tokens // 5)
    if cfg.loss.tis_cap is None:  # stale samples are corrected by default; on-policy ones need no correction
        cfg.loss.tis_cap = 2.0 if cfg.rollout.max_staleness > 0 else 0.0
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe_fields(obj: Any = None, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, one-line doc) for every field, read from this file's comments."""
    import inspect

    obj = obj if obj is not None else Config()
    docs: dict[str, str] = {}
    for line in inspect.getsource(type(obj)).splitlines():
        if ":" in line and "#" in line and not line.strip().startswith("#"):
            docs[line.split(":")[0].strip()] = line.split("#", 1)[1].strip()
    rows = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe_fields(value, prefix=f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", repr(value), docs.get(f.name, "")))
    return rows
