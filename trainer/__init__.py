"""The training library. One step, top to bottom: ``loop.run_step`` -> ``sampling.sample_batch`` (prompts,
rollout, grades) -> the reward scheme -> ``step_advantages`` -> ``learner.Learner.update`` (micro-batches from
``micro_batches``, log-probs from ``logprobs``, the loss from ``losses``) -> the weight push -> ``metrics``.

A run's parts are built in ``session`` (the backend in ``backends``), its config is ``config/``, and
``checkpoint``, ``collapse``, ``lifecycle``, ``ahead`` (generation k steps ahead), ``evaluate`` and ``dist``
serve the loop. It never imports the toy lab or the application."""
