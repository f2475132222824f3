"""The config's sections apart from ``reward`` (``trainer.config.reward``) and the root (``trainer.config.root``):
one pydantic model per section, one declaration per option, checks between a section's own options on the
section (``model_validator``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from trainer.config.base import Section, why

# The objectives' names, in the registry's order (``losses.OBJECTIVES``; tests/trainer/test_config.py checks).
# Listed here so that loading a config imports no torch.
ObjectiveName = Literal["grpo", "dr_grpo", "dapo", "gspo", "gspo_token", "luspo"]


class ModelConfig(Section):
    path: str = Field(
        "builtin:toy-reasoner", description="HF hub id, local directory, builtin:toy-reasoner or builtin:tiny-random"
    )
    dtype: Literal["fp32", "bf16"] = Field("fp32", description="learner and rollout precision (bf16 needs a GPU)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward to save memory")


class DataConfig(Section):
    source: str = Field(
        "toy", description="toy (toy-reasoner task), arith (plain sums), a {problem, answer} JSONL, or hub:NAME"
    )
    dir: str = Field(
        "",
        description="directory of data files: named benchmarks (gsm8k_test.jsonl, ...) and relative JSONL paths are "
        "looked up there; '': $GROUPWISE_DATA, else benchmarks come from the hub",
    )
    prompts_per_step: int = Field(16, ge=1, description="B: prompts per optimizer step, over all ranks")
    instruction: str = Field(
        "", description="appended to each problem in the user message (e.g. 'put the answer in \\boxed{}')"
    )
    max_prompt_tokens: int = Field(256, ge=1, description="longer prompts are an error naming the row")
    arith_operands: int = Field(2, ge=1, description="built-in task: numbers per problem")
    arith_max_value: int = Field(20, ge=1, description="built-in task: operands drawn from [0, max]")
    arith_size: int = Field(2000, ge=1, description="built-in task: number of distinct problems generated")
    skip_bad_rows: bool = Field(
        False, description="skip (and count) malformed JSONL rows instead of stopping at the first one"
    )


class VllmConfig(Section):
    """The vLLM engine: the colocated one (``rollout.backend=vllm``) and those ``groupwise launch`` serves."""

    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs per engine (consecutive ranks form one tensor-parallel group)"
    )
    gpu_memory_utilization: float = Field(
        0.35, gt=0, le=1, description="share of GPU memory for weights + KV cache (the learner has the rest)"
    )
    sleep: bool = Field(True, description="free the KV cache during the learner update (sleep mode; CUDA only)")
    enforce_eager: bool | None = Field(None, description="no torch.compile / CUDA graphs; None: eager on CPU only")


class ServerConfig(Section):
    """Running ``vllm serve`` processes (``rollout.backend=server``)."""

    urls: str = Field("", description="comma-separated base URLs of running vllm servers (groupwise launch fills it)")
    push: Literal["auto", "broadcast", "file"] = Field(
        "auto",
        description="weight push; broadcast: one transfer group spanning every server (NCCL on CUDA, gloo on CPU); "
        "file: a safetensors file each server reloads (no connection from the servers to the trainer); "
        "auto: broadcast on CUDA, file on CPU (faster there: docs/benchmarks.md)",
    )
    push_host: str = Field(
        "",
        description="broadcast push: the trainer address the servers connect to (the rendezvous binds only it); "
        '"": the interface that routes to the servers',
    )
    push_bucket_mb: int = Field(256, ge=1, description="broadcast push: MiB of tensors packed per broadcast")
    push_dir: str = Field("", description='file push: a directory the servers can read; "": <run_dir>/weights-push')
    request_timeout: float = Field(
        600.0,
        gt=0,
        description="seconds a generation request may take before its server is probed (alive: kept; dead: dropped)",
    )
    overlap_push: bool = Field(
        True,
        description="with rollout.max_staleness >= 1, a push freezes the requests in flight (/pause?mode=keep) "
        "and they go on with the new weights: generation never stops for the update or the push, a sample may "
        "come from several weight versions (staleness from the oldest), and runs are not reproducible; false: "
        "the push waits for generation and a run is a pure function of its config",
    )
    logprob_tolerance: float | None = Field(
        None,
        gt=0,
        description="start-up probe, mean |server - learner| log-prob per token (nats) a server may show; "
        "None: by dtype",
    )


class RolloutConfig(Section):
    backend: Literal["hf", "vllm", "server"] = Field(
        "hf", description="hf: on the learner; vllm: colocated engine; server: vllm serve"
    )
    group_size: int = Field(
        16,
        ge=2,
        description="G: completions sampled per prompt",
        json_schema_extra=why("a group of one has zero advantage under group normalization"),
    )
    max_new_tokens: int = Field(
        96, ge=1, description="completion budget; longer ones are truncated (finish_reason=length)"
    )
    temperature: float = Field(
        1.0, gt=0, description="sampling temperature; the learner's log-probs use the same temperature"
    )
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    max_staleness: int = Field(
        0,
        ge=0,
        description="server: k generates steps s+1 .. s+k while step s trains (samples at most k updates old); "
        "0: on-policy; >= 2 needs rollout.server.overlap_push",
    )
    dynamic_sampling: bool = Field(
        False,
        description="DAPO: drop groups whose correctness ties (all or none) and sample more; under "
        "reward.name=dler, groups whose DLER reward ties (DLER's rule)",
    )
    max_sampling_rounds: int = Field(
        3, ge=1, description="dynamic sampling: rollout rounds per step at most (then train on what is kept)"
    )
    vllm: VllmConfig = Field(default_factory=VllmConfig, description="the vLLM engine (backends vllm and server)")
    server: ServerConfig = Field(default_factory=ServerConfig, description="the server backend")

    @model_validator(mode="after")
    def _backend_needs(self) -> RolloutConfig:
        """What a backend cannot do with these options, with the fix (what the machine lacks is checked where
        the backend is built, ``trainer.backends.check_backend``)."""
        if self.backend in ("vllm", "server") and self.top_p < 1:
            raise ValueError(
                f"rollout.top_p={self.top_p} with rollout.backend={self.backend}: vLLM renormalizes the sampler's "
                "log-probs over the nucleus while the learner's cover the whole vocabulary, so ratios and "
                "logprob_gap would be biased; train with rollout.top_p=1 (eval.top_p may be < 1)"
            )
        if self.backend == "server":
            for url in split_urls(self.server.urls):
                if not url.startswith(("http://", "https://")):
                    raise ValueError(f"rollout.server.urls: {url!r} is not a base URL; write http://HOST:PORT")
        if self.max_staleness > 0 and self.backend != "server":
            raise ValueError(
                f"rollout.max_staleness={self.max_staleness} needs rollout.backend=server: the {self.backend} "
                "backend samples on the learner's own weights or device, so generation cannot overlap the update"
            )
        if self.max_staleness > 0 and self.dynamic_sampling:
            raise ValueError(
                "rollout.dynamic_sampling decides after grading how many more prompts to draw, which a generation "
                "started steps ahead cannot know; use rollout.max_staleness=0 with it"
            )
        if self.max_staleness >= 2 and not self.server.overlap_push:  # trainer/ahead.py: settle before each push
            raise ValueError(
                f"rollout.max_staleness={self.max_staleness} buys nothing over 1 with "
                "rollout.server.overlap_push=false: the push waits for every batch in flight, so each step still "
                "generates one batch while the learner updates; k=2 is exactly as fast as k=1 and only staler; "
                "use rollout.max_staleness=1, or overlap_push=true"
            )
        return self


def split_urls(urls: str) -> list[str]:
    """``"http://a:1/, http://b:2"`` -> ``["http://a:1", "http://b:2"]``."""
    return [u.strip().rstrip("/") for u in urls.split(",") if u.strip()]


class LossConfig(Section):
    name: ObjectiveName = Field("grpo", description="whole objective (losses/objectives.py, registered by name)")
    clip_low: float | None = Field(
        None, ge=0, lt=1, description="ratio bound 1 - clip_low; None: the objective's paper default"
    )
    clip_high: float | None = Field(
        None, ge=0, lt=1, description="ratio bound 1 + clip_high; None: the objective's paper default"
    )
    beta: float = Field(0.0, ge=0, description="KL coefficient to the reference model; 0 loads no reference model")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="per-token KL estimator")
    scale_std: bool | None = Field(None, description="divide advantages by group std; None: the objective's default")
    adv_eps: float = Field(1e-6, ge=0, description="added to the group std")
    max_tokens: int | None = Field(None, ge=1, description="Dr. GRPO divisor; None: rollout.max_new_tokens")
    tis_cap: float | None = Field(
        None,
        ge=0,
        description="truncated IS: cap C of min(pi_train / pi_sampler, C); 0 off; None: 2 if stale",
        json_schema_extra=why("0 disables; a cap C applies min(ratio, C)"),
    )
    updates_per_batch: int = Field(
        1, ge=1, description="optimizer steps per rollout batch (mini-batches); 1: ratios are exactly 1"
    )
    adv_norm: Literal["group", "batch"] = Field(
        "group", description="batch: DLER's group mean then batch-wide std (all ranks)"
    )
    gfpo_keep: int = Field(
        0, ge=0, description="GFPO: responses of each group trained on (k < rollout.group_size); 0: off"
    )
    gfpo_metric: Literal["length", "token_efficiency"] = Field(
        "length", description="GFPO: keep the shortest, or top reward/token"
    )
    gfpo_adaptive: bool = Field(
        False, description="Adaptive Difficulty GFPO: k per prompt by its difficulty quartile (gfpo_k_*)"
    )
    gfpo_k_easy: int = Field(4, ge=2, description="adaptive GFPO: k of the easiest quarter (mean reward >= q75)")
    gfpo_k_medium: int = Field(6, ge=2, description="adaptive GFPO: k for q50 <= mean reward < q75")
    gfpo_k_hard: int = Field(8, ge=2, description="adaptive GFPO: k for q25 <= mean reward < q50")
    gfpo_k_very_hard: int = Field(8, ge=2, description="adaptive GFPO: k below q25, and in every warmup step")
    gfpo_warmup_steps: int = Field(
        3, ge=0, description="adaptive GFPO: first steps at gfpo_k_very_hard (paper: 'a few'; count unconfirmed)"
    )
    gfpo_tdigest_compression: float = Field(
        100.0, ge=10, description="adaptive GFPO: t-digest delta of the difficulty quartiles (exact below ~60)"
    )

    @model_validator(mode="after")
    def _cap_is_off_or_at_least_one(self) -> LossConfig:
        if self.tis_cap is not None and 0 < self.tis_cap < 1:
            raise ValueError(f"loss.tis_cap={self.tis_cap}: use 0 (off) or a cap >= 1 (2.0 is common)")
        return self

    @model_validator(mode="after")
    def _gfpo_normalizes_per_group(self) -> LossConfig:
        if self.gfpo_keep and self.gfpo_adaptive:
            raise ValueError(
                f"loss.gfpo_adaptive picks k per prompt (loss.gfpo_k_*), loss.gfpo_keep={self.gfpo_keep} fixes it; "
                "set loss.gfpo_keep=0 for adaptive GFPO, or loss.gfpo_adaptive=false"
            )
        if (self.gfpo_keep or self.gfpo_adaptive) and self.adv_norm == "batch":
            raise ValueError("loss.gfpo_keep (GFPO) normalizes over each group's kept set; set loss.adv_norm=group")
        return self


class OptimConfig(Section):
    lr: float = Field(5e-5, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW first-moment decay")
    beta2: float = Field(0.99, ge=0, lt=1, description="AdamW second-moment decay")
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm (0 disables)")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up of the learning rate")
    micro_batch_size: int = Field(16, ge=1, description="completions per forward/backward on one rank")
    # Rows of an update are sorted by length (prompt + completion) and packed into micro-batches whose padded
    # size (rows x longest row) stays within this budget. None: micro_batch_size x the update's longest row, the
    # fixed path's largest micro-batch, so memory and GEMM sizes stay as with fixed rows while short rows share
    # one pass. 0: the fixed path (micro_batch_size rows in rollout order).
    max_tokens_per_micro_batch: int | None = Field(
        None, ge=0, description="padded-token budget; None: micro_batch_size x longest row; 0: off"
    )


class DeepSpeedConfig(Section):
    zero_stage: Literal[0, 1, 2, 3] = Field(0, description="ZeRO stage")
    offload_optimizer: bool = Field(False, description="keep optimizer state on CPU (ZeRO 1-3)")


class EvalConfig(Section):
    every: int = Field(
        20, ge=0, description="evaluate before training, every N steps and at the end; 0: never during training"
    )
    benchmark: str = Field(
        "toy", description="toy (held-out toy problems), gsm8k, math500, aime24, aime25, amc23, or a JSONL path"
    )
    problems: int = Field(100, ge=0, description="first N problems of the benchmark (0: all)")
    samples: int = Field(4, ge=1, description="k samples per problem (avg@k accuracy, pass@k)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of evaluation")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus mass of evaluation")
    max_new_tokens: int = Field(0, ge=0, description="0: rollout.max_new_tokens")
    budget: int = Field(0, ge=0, description="L1: the token budget in every eval prompt (reward.name l1_*); 0: none")


class LogConfig(Section):
    tensorboard: bool = Field(
        True, description="also write TensorBoard scalars to RUN/tb (metrics.jsonl is always written)"
    )
    wandb: bool = Field(False, description="also log to Weights & Biases (needs `pip install wandb`)")
    wandb_project: str = Field("groupwise", description="W&B project name")
    wandb_mode: Literal["offline", "online"] = Field(
        "offline", description="offline works without network (sync later)"
    )


class CheckpointConfig(Section):
    every: int = Field(50, ge=0, description="save every N steps (and always at the end); 0: only at the end")
    keep: int = Field(2, ge=0, description="complete checkpoints kept (oldest deleted first); 0 keeps all")


class GuardConfig(Section):
    """The non-finite streak and the collapse guard (``trainer.collapse.CollapseGuard``, built from this section)."""

    max_nonfinite_streak: int = Field(
        3, ge=1, description="stop after this many steps in a row with a skipped (non-finite) update"
    )
    collapse_action: Literal["warn", "halt", "rollback", "off"] = Field(
        "warn", description="on a collapse (docs/guard-results.md)"
    )
    window: int = Field(
        20, ge=1, description="collapse guard: steps the median baseline spans (the accuracy CUSUM's reference span)"
    )
    min_history: int = Field(5, ge=1, description="collapse guard: steps recorded before any check")
    patience: int = Field(2, ge=1, description="collapse guard: consecutive out-of-bounds steps that fire it")
    accuracy_drop: float = Field(0.3, gt=0, le=1, description="fire when accuracy < baseline - this, or ...")
    accuracy_ratio: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="... or < baseline x this (0 disables; a drop of 0.3 never fires at 0.3)",
    )
    length_ratio: float = Field(0.3, gt=0, lt=1, description="fire when mean length < baseline x this")
    entropy_ratio: float = Field(0.1, gt=0, lt=1, description="fire when entropy < baseline x this")
    degenerate_rise: float = Field(
        0.5, gt=0, le=1, description="fire when the share of empty/repetitive outputs > baseline + this"
    )
    accuracy_rule: Literal["cusum", "relative"] = Field(
        "cusum", description="relative: the old rule; cusum: guards.AccuracyCusum"
    )
    cusum_k: float = Field(
        1.0, ge=0, description="CUSUM reference, in standard errors: k = delta / 2 targets a drop of 2 k"
    )
    cusum_h: float = Field(4.0, gt=0, description="CUSUM threshold: fires when the accumulated shortfall exceeds it")
    cusum_tau: float = Field(
        0.08,
        ge=0,
        lt=1,
        description="CUSUM allowance for healthy drift of accuracy between steps (in quadrature; lab seeds: 0.08)",
    )
    max_rollbacks: int = Field(2, ge=0, description="rollbacks per run; the next collapse halts")
    rollback_lr_factor: float = Field(0.5, gt=0, le=1, description="learning rate multiplier applied at each rollback")
    rollback_penalty_factor: float = Field(
        0.5, gt=0, le=1, description="length-penalty strength multiplier applied at each rollback"
    )

    @field_validator("collapse_action", mode="before")
    @classmethod
    def _off_is_a_choice(cls, value: object) -> object:
        """YAML 1.1 reads ``off`` as false: the choice named off is meant."""
        return "off" if value is False else value

    @model_validator(mode="after")
    def _history_fits_the_window(self) -> GuardConfig:
        if self.min_history > self.window:
            raise ValueError(
                f"guard.min_history={self.min_history} exceeds guard.window={self.window}: the baseline needs "
                "the history it is taken over"
            )
        return self
