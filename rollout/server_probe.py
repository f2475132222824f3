"""The start-up probe of a rollout server's sampling: its log-probs of completions it samples for a fixed prompt
must equal the learner's log-probs of the same tokens, within the dtype's tolerance.

It catches, before any step, every way a server can sample another distribution than the learner assumes: the
model's ``generation_config.json`` applied as request defaults (``top_k``, ``repetition_penalty``, ``min_p``:
a server started by hand without ``--generation-config vllm``, by a client that leaves fields unset), a server
in ``raw_logprobs`` mode (at a temperature other than 1), other weights, another dtype or model revision.
The probe samples at the run's own temperature and top-p, through the same request path as training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

PROBE_PROMPT = "Probe: 12+30="  # any fixed text; the completion is what the server samples for it
PROBE_SEED = 20250101
PROBE_SAMPLES = 4
PROBE_TOKENS = 16
TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2}  # mean |gap| per token, nats: rounding only (fp32 measured ~1e-7)


def probe_completions(view) -> list:
    """Completions the server of ``view`` (the backend restricted to one server) samples for the fixed prompt,
    at the run's temperature and top-p, through the training request path. HTTP only: no collective."""
    prompt = view.tok(PROBE_PROMPT, add_special_tokens=False)["input_ids"]
    probe = view.with_sampling(min(PROBE_TOKENS, view.max_new_tokens), view.temperature, view.top_p)
    return probe.generate([prompt], PROBE_SAMPLES, seed=PROBE_SEED)


def gap_reason(url: str, comps: list, score: Callable[[list], list[torch.Tensor]], tolerance: float) -> str | None:
    """None when the server's log-probs of ``comps`` equal the learner's (``score``: its log-prob per completion
    token; collective under ZeRO-3) within ``tolerance`` nats mean per token, else why the run is refused."""
    server = torch.cat([torch.tensor(c.logprobs, dtype=torch.float64) for c in comps])  # [tokens]
    learner = torch.cat([s.double().cpu() for s in score(comps)])  # [tokens]
    gap = float((server - learner).abs().mean())
    if gap <= tolerance:
        return None
    return (
        f"rollout server {url} samples another distribution than the learner assumes: its log-probs of "
        f"{len(server)} probe tokens differ from the learner's by {gap:.3g} nats on average (tolerance "
        f"{tolerance:g}, rollout.server.logprob_tolerance). Start it as groupwise launch/serve do: with "
        "--generation-config vllm (the model's generation_config.json must not set top_k, min_p or penalties) "
        "and --logprobs-mode processed_logprobs, the same --dtype as model.dtype and the same model"
    )
