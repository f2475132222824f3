"""The config's fields: one dataclass per section, each field with its default, its one-line doc (the comment
on its line, or the comment block just above it) and, for numbers, its valid range (``bounded``).

Names of objectives and reward schemes come from their registries (``losses.OBJECTIVES``,
``rewards.schemes.SCHEMES``), and the ``reward`` section is composed from the schemes' own parameter classes,
so a new scheme or objective needs no edit here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from losses import OBJECTIVES
from rewards.fields import INF, bounded
from rewards.schemes import SCHEMES, scheme_params

ObjectiveName = Literal[tuple(OBJECTIVES)]  # in the registry's order (grpo first)
SchemeName = Literal[tuple(sorted(SCHEMES))]


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
    prompts_per_step: int = bounded(16, 1, INF)  # B: prompts per optimizer step, over all ranks
    instruction: str = ""  # appended to each problem in the user message (e.g. 'put the answer in \\boxed{}')
    max_prompt_tokens: int = bounded(256, 1, INF)  # longer prompts are an error naming the row
    arith_operands: int = bounded(2, 1, INF)  # built-in task: numbers per problem
    arith_max_value: int = bounded(20, 1, INF)  # built-in task: operands drawn from [0, max]
    arith_size: int = bounded(2000, 1, INF)  # built-in task: number of distinct problems generated
    skip_bad_rows: bool = False  # skip (and count) malformed JSONL rows instead of stopping at the first one


@dataclass
class RolloutConfig:
    backend: Literal["hf", "vllm", "server"] = "hf"  # hf: on the learner; vllm: colocated engine; server: vllm serve
    # G: completions sampled per prompt
    group_size: int = bounded(16, 2, INF, "[)", "a group of one has zero advantage under group normalization")
    max_new_tokens: int = bounded(96, 1, INF)  # completion budget; longer ones are truncated (finish_reason=length)
    # sampling temperature; the learner's log-probs use the same temperature
    temperature: float = bounded(1.0, 0, INF, "()")
    top_p: float = bounded(1.0, 0, 1, "(]")  # nucleus sampling mass
    # vllm: GPUs per engine (consecutive ranks form one tensor-parallel group)
    tensor_parallel_size: int = bounded(1, 1, INF)
    # vllm: share of GPU memory for weights + KV cache (the learner has the rest)
    gpu_memory_utilization: float = bounded(0.35, 0, 1, "(]")
    vllm_sleep: bool = True  # vllm: free the KV cache during the learner update (sleep mode; CUDA only)
    vllm_enforce_eager: bool | None = None  # vllm: no torch.compile / CUDA graphs; None: eager on CPU only
    servers: str = ""  # server: comma-separated base URLs of running vllm servers (groupwise launch fills it)
    # server: k >= 1 samples step s+k while step s trains (weights k updates old); 0: on-policy
    max_staleness: int = bounded(0, 0, INF)
    server_push: Literal["auto", "file", "nccl"] = "auto"  # server: weight push; auto: nccl on CUDA, else file
    push_dir: str = ""  # server, file push: directory the servers can read; "": <run_dir>/weights-push
    # server: seconds a generation request may take before its server is probed (alive: kept; dead: dropped)
    request_timeout: float = bounded(600.0, 0, INF, "()")
    # server: start-up probe, mean |server - learner| log-prob per token (nats) a server may show; None: by dtype
    server_logprob_tolerance: float | None = bounded(None, 0, INF, "()")
    dynamic_sampling: bool = False  # DAPO: drop groups whose correctness ties (all or none) and sample more
    # dynamic sampling: rollout rounds per step at most (then train on what is kept)
    max_sampling_rounds: int = bounded(3, 1, INF)


@dataclass
class RewardBase:
    """What every scheme shares; each scheme's own knobs are added from its module (``RewardConfig``)."""

    name: SchemeName = "correct_lp"  # scheme (rewards/schemes/: one module per scheme, its knobs below)
    format_weight: float = bounded(0.0, 0, INF)  # added for any response with an extractable final answer (0 disables)
    overlong_weight: float = bounded(0.0, 0, INF)  # DAPO soft overlong punishment added with this weight (0 disables)
    # DAPO L_cache in tokens; None: a fifth of rollout.max_new_tokens
    overlong_cache: int | None = bounded(None, 1, INF)
    overlong_filter: bool = False  # mask truncated completions out of the loss (DAPO overlong filtering)
    # limit in CPU seconds per equivalence check (machine load does not count)
    grade_timeout: float = bounded(2.0, 0, INF, "()")
    grade_workers: int = bounded(0, 0, INF)  # grading worker processes per rank; 0: min(4, cores)


def _reward_config() -> type:
    """``RewardBase`` plus every registered scheme's knobs: flat ones as ``reward.<knob>``, a scheme with a
    ``section`` as ``reward.<section>.<knob>`` (ACOER's ``reward.acoer``)."""
    flat = [p for p, section in scheme_params() if section is None]
    sections = [(p, section) for p, section in scheme_params() if section is not None]
    seen = {f.name for f in dataclasses.fields(RewardBase)} | {section for _, section in sections}
    for p in flat:
        for f in dataclasses.fields(p):
            if f.name in seen:
                raise TypeError(f"reward.{f.name} is declared twice ({p.__qualname__}); rename one")
            seen.add(f.name)
    namespace = {
        "__module__": __name__,
        "__qualname__": "RewardConfig",
        "__doc__": "The reward section: shared knobs (RewardBase) and each scheme's own (rewards/schemes/).",
        "__annotations__": {section: p for p, section in sections},
        **{section: field(default_factory=p) for p, section in sections},
    }
    return dataclass(type("RewardConfig", (*reversed(flat), RewardBase), namespace))


RewardConfig = _reward_config()


@dataclass
class LossConfig:
    name: ObjectiveName = "grpo"  # whole objective (losses/__init__.py OBJECTIVES)
    clip_low: float | None = bounded(None, 0, 1)  # ratio bound 1 - clip_low; None: the objective's paper default
    clip_high: float | None = bounded(None, 0, 1)  # ratio bound 1 + clip_high; None: the objective's paper default
    beta: float = bounded(0.0, 0, INF)  # KL coefficient to the reference model; 0 loads no reference model
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"  # per-token KL estimator
    scale_std: bool | None = None  # divide advantages by group std; None: the objective's default
    adv_eps: float = bounded(1e-6, 0, INF)  # added to the group std
    max_tokens: int | None = bounded(None, 1, INF)  # Dr. GRPO divisor; None: rollout.max_new_tokens
    # truncated IS: cap C of min(pi_train / pi_sampler, C); 0 off; None: 2 if stale
    tis_cap: float | None = bounded(None, 0, INF, "[)", "0 disables; a cap C applies min(ratio, C)")
    # optimizer steps per rollout batch (mini-batches); 1: ratios are exactly 1
    updates_per_batch: int = bounded(1, 1, INF)


@dataclass
class OptimConfig:
    lr: float = bounded(5e-5, 0, INF, "()")  # AdamW learning rate
    weight_decay: float = bounded(0.0, 0, INF)  # AdamW decoupled weight decay
    beta1: float = bounded(0.9, 0, 1)  # AdamW first-moment decay
    beta2: float = bounded(0.99, 0, 1)  # AdamW second-moment decay
    grad_clip: float = bounded(1.0, 0, INF)  # max global grad norm (0 disables)
    warmup_steps: int = bounded(0, 0, INF)  # linear warm-up of the learning rate
    micro_batch_size: int = bounded(16, 1, INF)  # completions per forward/backward on one rank
    # Rows of an update are sorted by length (prompt + completion) and packed into micro-batches whose padded
    # size (rows x longest row) stays within this budget. None: micro_batch_size x the update's longest row, the
    # fixed path's largest micro-batch, so memory and GEMM sizes stay as with fixed rows while short rows share
    # one pass. 0: the fixed path (micro_batch_size rows in rollout order).
    # padded-token budget; None: micro_batch_size x longest row; 0: off
    max_tokens_per_micro_batch: int | None = bounded(None, 0, INF)


@dataclass
class DeepSpeedConfig:
    zero_stage: Literal[0, 1, 2, 3] = 0  # ZeRO stage
    offload_optimizer: bool = False  # keep optimizer state on CPU (ZeRO 1-3)


@dataclass
class EvalConfig:
    every: int = bounded(20, 0, INF)  # evaluate before training, every N steps and at the end; 0: never during training
    benchmark: str = "toy"  # toy (held-out toy problems), gsm8k, math500, aime24, aime25, amc23, or a JSONL path
    problems: int = bounded(100, 0, INF)  # first N problems of the benchmark (0: all)
    samples: int = bounded(4, 1, INF)  # k samples per problem (avg@k accuracy, pass@k)
    temperature: float = bounded(1.0, 0, INF, "()")  # sampling temperature of evaluation
    top_p: float = bounded(1.0, 0, 1, "(]")  # nucleus mass of evaluation
    max_new_tokens: int = bounded(0, 0, INF)  # 0: rollout.max_new_tokens


@dataclass
class LogConfig:
    tensorboard: bool = True  # also write TensorBoard scalars to RUN/tb (metrics.jsonl is always written)
    wandb: bool = False  # also log to Weights & Biases (needs `pip install wandb`)
    wandb_project: str = "groupwise"  # W&B project name
    wandb_mode: Literal["offline", "online"] = "offline"  # offline works without network (sync later)


@dataclass
class CheckpointConfig:
    every: int = bounded(50, 0, INF)  # save every N steps (and always at the end); 0: only at the end
    keep: int = bounded(2, 0, INF)  # complete checkpoints kept (oldest deleted first); 0 keeps all


@dataclass
class GuardConfig:
    # stop after this many steps in a row with a skipped (non-finite) update
    max_nonfinite_streak: int = bounded(3, 1, INF)
    collapse_action: Literal["warn", "halt", "rollback", "off"] = "warn"  # on a collapse (docs/guard-results.md)
    # collapse guard: steps the median baseline spans (the accuracy CUSUM: its reference's span and lag)
    window: int = bounded(20, 1, INF)
    min_history: int = bounded(5, 1, INF)  # collapse guard: steps recorded before any check
    patience: int = bounded(2, 1, INF)  # collapse guard: consecutive out-of-bounds steps that fire it
    accuracy_drop: float = bounded(0.3, 0, 1, "(]")  # fire when accuracy < baseline - this, or
    # ... when accuracy < baseline x this (0 disables; a drop of 0.3 never fires at 0.3)
    accuracy_ratio: float = bounded(0.5, 0, 1)
    length_ratio: float = bounded(0.3, 0, 1, "()")  # fire when mean length < baseline x this
    entropy_ratio: float = bounded(0.1, 0, 1, "()")  # fire when entropy < baseline x this
    # fire when the share of empty/repetitive outputs > baseline + this
    degenerate_rise: float = bounded(0.5, 0, 1, "(]")
    accuracy_rule: Literal["cusum", "relative"] = "cusum"  # relative: the old rule; cusum: guards.AccuracyCusum
    cusum_k: float = bounded(1.0, 0, INF)  # CUSUM reference, in standard errors: k = delta / 2 targets a drop of 2 k
    cusum_h: float = bounded(4.0, 0, INF, "()")  # CUSUM threshold: fires when the accumulated shortfall exceeds it
    # CUSUM allowance for healthy drift of accuracy between steps (in quadrature; lab calibration seeds: 0.08)
    cusum_tau: float = bounded(0.08, 0, 1)
    max_rollbacks: int = bounded(2, 0, INF)  # rollbacks per run; the next collapse halts
    rollback_lr_factor: float = bounded(0.5, 0, 1, "(]")  # learning rate multiplier applied at each rollback
    # length-penalty strength multiplier applied at each rollback
    rollback_penalty_factor: float = bounded(0.5, 0, 1, "(]")


@dataclass
class Config:
    run_dir: str = "runs/default"  # metrics.jsonl, config.yaml, checkpoints and plots go here
    seed: int = bounded(0, 0, INF)  # seeds prompt order, sampling and initialization; a run is a function of its config
    # training steps; each is one rollout batch and loss.updates_per_batch optimizer steps
    steps: int = bounded(100, 1, INF)
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
