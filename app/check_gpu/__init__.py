"""``groupwise check-gpu`` (``make check-gpu``): does groupwise's GPU stack work on this node, and how fast is it?

    groupwise check-gpu                 # every step, one report (table + JSON), about 5-8 min on one H200
    groupwise check-gpu --dry-run       # the numbered steps and their commands; runs nothing (any machine)
    groupwise check-gpu --only torch nccl train --deadline 300

Modules: ``plan`` (the checks), ``running`` (one check in its process), ``workers`` (what runs there),
``results`` (reading outputs), ``report`` (figures and table), ``cli`` (the command).

Steps, each in its own process (a hang or a CUDA crash in one is reported and the next one runs):

1. the stack: torch's CUDA build, devices, free memory and a bf16 matmul probe; vLLM; DeepSpeed; an NCCL
   all-reduce over every GPU of the node (one process per GPU);
2. the GPU-marked tests (``tests/gpu/test_gpu.py``): learner side (ZeRO-2 and ZeRO-3 steps in bf16, chunked
   log-probs in bf16 at the real vocabulary) and vLLM side (bf16 engine with sleep mode, weight-sync round
   trip, the server backend's broadcast push with NCCL), as two pytest processes;
3. a short ``groupwise train`` of a Qwen2.5-0.5B-shaped random model at the real vocabulary (151,936) through
   the colocated vLLM engine, bf16, ZeRO-3, gradient checkpointing (``configs/base_gpu.yaml``'s setting);
4. one report: pass/fail per check with the reason, learner tokens/s and MFU, vLLM tokens/s, weight-sync
   seconds, peak GPU memory; printed, and written to ``--out`` (default ``runs/check-gpu/report.json``).

Simplifications, stated: MFU counts 6 x parameters x completion tokens per second of learner time (prompt
tokens, attention FLOPs and the recomputation of gradient checkpointing and of the chunked LM head are not
counted, so it is a lower bound) against a dense-bf16 peak looked up by device name (``PEAK_TFLOPS``; or
``--peak-tflops``; an unknown device falls back to the measured matmul probe, and the report says which).
Peak GPU memory is what ``nvidia-smi`` shows on the busiest GPU while a check runs (all processes on it).
Weight-sync seconds are derived from the run's timers: ``time/learner`` minus the learner's own
(``time/fwd_bwd`` + ``time/optimizer`` + ``time/old_ref_logprobs``), i.e. wake-up, reload, prefix-cache
reset and sleep.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the GPU tests and the training run start there
PINNED = {"torch": "2.13.0", "vllm": "0.32.0"}  # pyproject.toml's `vllm` extra
REAL_VOCAB = 151_936
# Qwen2.5-0.5B's shape (its config.json): 494M parameters with the tied 151,936 x 896 embedding
QWEN05B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    tie_word_embeddings=True,
)
PROMPTS_PER_GPU, GROUP, NEW_TOKENS = 8, 8, 512  # the training run's work per GPU and step
