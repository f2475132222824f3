"""Rollout backends behind one interface (``base.RolloutBackend``): ``hf`` (the in-process sampler),
``vllm_backend`` (a colocated vLLM engine), ``server`` (separate ``vllm serve`` processes, with ``server_push``,
``server_probe``, ``server_auth`` and ``weight_source``); ``data`` loads problems (JSONL, the hub, sums)."""
