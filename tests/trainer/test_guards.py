"""Guards and bad-input handling that need no subprocess: degenerate outputs, the collapse guard's rules,
the metrics history on resume, data rows, config checks, the reward penalty scale."""

import json

import pytest
import torch

from rewards.schemes import RewardBatch, build_scheme
from rollout.data import DataError, PromptSampler, arithmetic_task, load_jsonl
from trainer.collapse import CollapseGuard, is_degenerate
from trainer.config import ConfigError, load_config
from trainer.lifecycle import truncate_metrics


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("", True),
        ("   \n", True),
        ("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!", True),
        ("the the the the the the the the the the the the", True),
        ("12+30=42\n42+7=49\n\\boxed{49}", False),
        ("short", False),
    ],
)
def test_degenerate_outputs(text, bad):
    assert is_degenerate(text) is bad


def healthy(i: int) -> dict:
    return {"accuracy": 0.6 + 0.01 * (i % 3), "length/mean": 40.0 + i % 5, "entropy": 0.5, "degenerate_share": 0.0}


def test_collapse_guard_fires_after_patience_and_names_the_evidence():
    guard = CollapseGuard(window=10, min_history=5, patience=2, length_ratio=0.3)
    for i in range(8):
        assert guard.observe(healthy(i)) is None
    crash = {**healthy(0), "length/mean": 5.0}  # history 40..44,40..42: median 41.5; 5 < 0.3 x 41.5
    assert guard.observe(crash) is None  # one bad step is noise
    fired = guard.observe(crash)
    assert [t.signal for t in fired] == ["length/mean"]
    assert fired[0].value == 5.0 and fired[0].baseline == 41.5


def test_collapse_guard_each_rule_and_no_false_alarms():
    """The median rules, with the relative accuracy rule (the rule before issue #26; the CUSUM's own tests
    are below)."""

    def fire(metrics):
        g = CollapseGuard(min_history=3, patience=1, accuracy_rule="relative")
        for i in range(5):
            assert g.observe(healthy(i)) is None
        out = g.observe(metrics)
        return [t.signal for t in out] if out else []

    assert fire({**healthy(0), "accuracy": 0.2}) == ["accuracy"]  # 0.2 < 0.61 - 0.3
    assert fire({**healthy(0), "accuracy": 0.4}) == []  # a drop of 0.21 is within bounds
    assert fire({**healthy(0), "entropy": 0.01}) == ["entropy"]
    assert fire({**healthy(0), "degenerate_share": 0.75}) == ["degenerate_share"]
    assert fire({**healthy(0), "length/mean": 30.0}) == []  # shorter is the goal, not a collapse
    assert fire({**healthy(0), "accuracy": float("nan")}) == []  # NaN belongs to the NaN guard


def test_collapse_guard_needs_history_and_keeps_bad_steps_out_of_it():
    g = CollapseGuard(min_history=5, patience=1)
    assert g.observe({**healthy(0), "length/mean": 1.0}) is None  # no history yet: no verdict
    g2 = CollapseGuard(min_history=2, patience=3)
    for i in range(3):
        g2.observe(healthy(i))
    g2.observe({**healthy(0), "length/mean": 1.0})
    assert 1.0 not in g2.history["length/mean"]
    state = g2.state_dict()
    g3 = CollapseGuard(min_history=2, patience=3)
    g3.load_state_dict(json.loads(json.dumps(state)))
    assert g3.state_dict() == state


def test_truncate_metrics_moves_replayed_rows_aside(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s}) + "\n" for s in range(5)) + '{"step": 5, "lo')
    assert truncate_metrics(tmp_path, 3) == 3  # steps 3, 4 and the line cut by a kill
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [0, 1, 2]
    assert len((tmp_path / "metrics.discarded.jsonl").read_text().splitlines()) == 3


def test_bad_rows_name_file_and_line_or_are_skipped_and_counted(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"problem": "1+1", "answer": "2"}\nnot json\n{"problem": "x"}\n{"problem": "y", "answer": " "}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: not valid JSON.*skip_bad_rows"):
        load_jsonl(p)
    skipped: list[str] = []
    rows = load_jsonl(p, skip_bad=True, skipped=skipped)
    assert [r.problem for r in rows] == ["1+1"]
    assert (
        len(skipped) == 3 and "d.jsonl:3: missing field 'answer'" in skipped[1] and ":4: field 'answer'" in skipped[2]
    )
    empty = tmp_path / "e.jsonl"
    empty.write_text("not json\n")
    with pytest.raises(DataError, match="no usable rows"):
        load_jsonl(empty, skip_bad=True)


def test_extra_prompt_streams_are_pure_and_distinct():
    s = PromptSampler(arithmetic_task(50), 4, seed=1)
    assert s.batch(3, stream=1) == PromptSampler(arithmetic_task(50), 4, seed=1).batch(3, stream=1)
    assert s.batch(3, stream=1) != s.batch(3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["loss.clip_low=1.2"], "loss.clip_low=1.2 is out of range"),
        (["model.path=/no/such/model"], "model.path '/no/such/model' is a local path without a config.json"),
        (["guard.collapse_action=explode"], "guard.collapse_action"),
        (["checkpoint.evry=3"], "did you mean 'checkpoint.every'"),
        (["resume=always"], "resume: 'always' is not valid"),
        (["guard.rollback_lr_factor=0"], "guard.rollback_lr_factor=0.0 is out of range"),
    ],
)
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, override)


def test_run_dir_with_a_run_needs_resume(tmp_path):
    from trainer.session import _check_run_dir

    cfg = load_config(None, [f"run_dir={tmp_path}"])
    _check_run_dir(cfg, tmp_path)  # empty: fine
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(ConfigError, match="--resume"):
        _check_run_dir(cfg, tmp_path)
    cfg.resume = "auto"
    _check_run_dir(cfg, tmp_path)


def test_penalty_scale_scales_only_the_length_term():
    b = RewardBatch(
        correct=torch.tensor([1.0, 1.0, 0.0, 0.0]),
        has_answer=torch.ones(4),
        lengths=torch.tensor([10.0, 30.0, 10.0, 30.0]),
        truncated=torch.zeros(4),
        group_size=4,
        max_new_tokens=64,
    )
    s = build_scheme("kimi_lp")
    full, _ = s(b)  # Kimi: lam = 0.5, -0.5, 0.5, -0.5; incorrect keep min(0, lam)
    assert full.tolist() == [1.5, 0.5, 0.0, -0.5]
    s.penalty_scale = 0.5
    half, metrics = s(b)
    assert half.tolist() == [1.25, 0.75, 0.0, -0.25]
    assert metrics["reward/penalty_scale"] == 0.5
    restored = build_scheme("kimi_lp")
    restored.load_state_dict(s.state_dict())
    assert restored.penalty_scale == 0.5


def test_at_a_low_baseline_only_the_relative_accuracy_rule_can_fire():
    """Baseline 0.3 (the collapse lab's kimi_lp runs start there): an absolute drop of 0.3 would need accuracy
    below 0, so a fall to 0.1 went unseen; half the baseline (0.15) catches it and 0.2 stays within bounds."""

    def fire(value: float, ratio: float) -> bool:
        g = CollapseGuard(min_history=3, patience=1, accuracy_ratio=ratio, accuracy_rule="relative")
        for i in range(5):
            g.observe({**healthy(i), "accuracy": 0.3})
        return bool(g.observe({**healthy(0), "accuracy": value}))

    assert fire(0.1, 0.5) and not fire(0.1, 0.0)
    assert not fire(0.2, 0.5)
    high = CollapseGuard(min_history=3, patience=1, accuracy_ratio=0.5, accuracy_rule="relative")
    for i in range(5):
        high.observe(healthy(i))  # baseline 0.61: the absolute rule (0.31) is the stricter one and decides
    assert high.observe({**healthy(0), "accuracy": 0.3})[0].rule == "< max(baseline - 0.3, baseline x 0.5)"


def test_the_guards_constructor_and_the_config_agree_on_every_default():
    import inspect

    from trainer.collapse import CollapseGuard
    from trainer.config import GuardConfig

    config = {name: f.default for name, f in GuardConfig.model_fields.items()}
    for name, p in inspect.signature(CollapseGuard.__init__).parameters.items():
        if name != "self":
            assert p.default == config[name], name


# ----------------------------------------------------------------------------- the accuracy CUSUM (issue #26)


def cusum_alarms(rows: list[dict], **kw) -> list[int]:
    """Steps where the guard fires, fed accuracy and its per-prompt statistics only (warn mode: it goes on)."""
    g = CollapseGuard(**kw)
    keys = ("accuracy", "accuracy/prompt_sd", "prompts")
    return [t for t, r in enumerate(rows) if g.observe({k: r[k] for k in keys if k in r})]


def test_a_long_stationary_stream_at_the_labs_batch_raises_no_more_alarms_than_the_design_allows():
    """20,000 healthy steps of 8 prompts x 16 samples, accuracy 0.3, between-prompt sd ~0.29 (the lab's spread):
    Siegmund's run length for k = 1, h = 4 is ~15,300 steps, so ~1.3 false alarms are expected; <= 6 is the
    Poisson 99.9% bound. The old relative rule (patience 2) on the same stream fires over a hundred times."""
    import numpy as np
    from support.guard_synth import stream

    from trainer.collapse import cusum_arl0

    rows = stream(np.full(20_000, 0.3), seed=1, B=8)
    expected = 20_000 / cusum_arl0(1.0, 4.0)
    assert 1.0 < expected < 1.5
    assert len(cusum_alarms(rows)) <= 6
    assert len(cusum_alarms(rows, accuracy_rule="relative")) > 100  # the false alarms, reproduced
    big = stream(np.full(5_000, 0.3), seed=2, B=128)
    assert len(cusum_alarms(big)) <= 2  # 0.3 expected


def test_an_abrupt_drop_to_zero_is_caught_within_a_few_steps():
    """Accuracy 0.3 -> 0 at step 60: z ~ -3 a step, k = 1, h = 4: the third bad step crosses; at 8 prompts the
    noise of the steps before can delay it by a step or two; at 128 prompts it is the first bad step."""
    import numpy as np
    from support.guard_synth import stream

    for seed in range(10):
        mu = np.r_[np.full(60, 0.3), np.zeros(40)]
        small = cusum_alarms(stream(mu, seed=seed, B=8))
        assert small and 60 <= small[0] <= 65, (seed, small)
        large = cusum_alarms(stream(mu, seed=seed, B=128))
        assert large and 60 <= large[0] <= 61, (seed, large)


def test_a_slow_collapse_is_caught_and_nothing_before_it():
    """Accuracy falling 5% a step from step 60 (0.33 -> 0.12 in 20 steps, the pace of the lab's kimi_lp runs):
    the lagged reference must not follow the slide down. Caught within 40 steps of the slide's start (17-37 in
    simulation; the lab's onset, half the starting level, comes ~14 steps after the start)."""
    from support.guard_synth import mean_curve, stream

    for seed in range(10):
        alarms = cusum_alarms(stream(mean_curve(150, onset=60, fall=0.95), seed=seed, B=8))
        assert alarms and 60 <= alarms[0] <= 100, (seed, alarms)


def test_nan_accuracy_never_trips_and_leaves_the_statistic_alone():
    import numpy as np
    from support.guard_synth import stream

    g = CollapseGuard()
    for row in stream(np.full(40, 0.3), seed=0):
        g.observe(row)
    before = json.dumps(g.cusum.state_dict())
    nan = {"accuracy": float("nan"), "accuracy/prompt_sd": float("nan"), "prompts": 8.0}
    assert all(g.observe(nan) is None for _ in range(100))
    assert json.dumps(g.cusum.state_dict()) == before


def test_guard_state_round_trips_in_the_middle_of_a_rising_statistic():
    """Resume is exact: a guard restored from a JSON round trip of its state, mid-way through a drop (the
    statistic above 0, steps pending for the reference), fires at the same steps as the one never stopped."""
    import numpy as np
    from support.guard_synth import stream

    rows = stream(np.r_[np.full(50, 0.3), np.full(30, 0.12)], seed=3)
    a = CollapseGuard()
    for row in rows[:52]:
        assert a.observe(row) is None
    assert a.cusum.s > 0 and a.cusum.pending
    assert a.suspect == (a.cusum.s > a.cusum.h / 2)
    b = CollapseGuard()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict()
    fired_a = [t for t, row in enumerate(rows[52:], 52) if a.observe(row)]
    fired_b = [t for t, row in enumerate(rows[52:], 52) if b.observe(row)]
    assert fired_a and fired_a == fired_b
    assert json.dumps(a.state_dict()) == json.dumps(b.state_dict())


def test_without_per_prompt_statistics_the_observed_variance_is_used():
    """Metrics of runs before issue #26 carry no accuracy/prompt_sd: the CUSUM standardizes with the observed
    variance of the step accuracy instead, and still catches a drop without alarming on noise."""
    import numpy as np
    from support.guard_synth import stream

    rows = [{"accuracy": r["accuracy"]} for r in stream(np.r_[np.full(300, 0.3), np.zeros(20)], seed=4)]
    alarms = cusum_alarms(rows)
    assert alarms and 300 <= alarms[0] <= 306 and all(t >= 300 for t in alarms)


def test_the_cusum_trigger_names_its_evidence_and_the_median_rules_still_fire():
    import numpy as np
    from support.guard_synth import stream

    g = CollapseGuard()
    for row in stream(np.full(30, 0.3), seed=5):
        assert g.observe(row) is None
    zero = {"accuracy": 0.0, "accuracy/prompt_sd": 0.0, "prompts": 8.0, "length/mean": 40.0, "entropy": 0.5}
    fired = next(f for f in (g.observe(zero) for _ in range(10)) if f)
    assert fired[0].signal == "accuracy" and fired[0].rule.startswith("CUSUM") and 0.2 < fired[0].baseline < 0.4
    g2 = CollapseGuard(patience=2)
    for row in stream(np.full(10, 0.3), seed=6):
        g2.observe({**row, "length/mean": 40.0})
    short = {"accuracy": 0.3, "length/mean": 2.0}
    assert g2.observe(short) is None and [t.signal for t in g2.observe(short)] == ["length/mean"]


def test_the_config_builds_the_guard_with_every_one_of_its_values():
    """CollapseGuard.from_config passes every guard parameter from the config (none falls back to a constructor
    default)."""
    import inspect

    from trainer.config import GuardConfig

    names = [n for n in inspect.signature(CollapseGuard.__init__).parameters if n != "self"]
    g = GuardConfig(window=7, min_history=3, patience=4, accuracy_drop=0.2, length_ratio=0.2, entropy_ratio=0.2,
                    degenerate_rise=0.4, accuracy_ratio=0.4, accuracy_rule="relative", cusum_k=0.5, cusum_h=7.0,
                    cusum_tau=0.03)  # fmt: skip
    assert set(names) <= set(GuardConfig.model_fields)
    guard = CollapseGuard.from_config(g)
    assert (guard.window, guard.min_history, guard.patience, guard.accuracy_rule) == (7, 3, 4, "relative")
    assert (guard.accuracy_drop, guard.length_ratio, guard.entropy_ratio) == (0.2, 0.2, 0.2)
    assert (guard.degenerate_rise, guard.accuracy_ratio) == (0.4, 0.4)
    assert (guard.cusum.k, guard.cusum.h, guard.cusum.tau, guard.cusum.lag) == (0.5, 7.0, 0.03, 7)


def test_batch_metrics_carry_the_per_prompt_spread():
    from trainer.metrics import Outcomes, batch_metrics

    correct = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # 3 prompts x 4
    n = correct.numel()
    out = Outcomes(correct, torch.ones(n), torch.full((n,), 5.0), *(torch.zeros(n) for _ in range(5)))
    m = batch_metrics(out, correct, 4)
    assert m["prompts"] == 3.0 and m["accuracy"] == pytest.approx(5 / 12)
    assert m["accuracy/prompt_sd"] == pytest.approx(torch.tensor([1.0, 0.25, 0.0]).std().item())


def test_no_periodic_checkpoint_while_the_statistic_is_past_half_its_threshold():
    """guard.suspect (the loop saves no periodic checkpoint then) is true on the way to an alarm and rarely on
    a healthy stream, so rollbacks land before a collapse and healthy runs keep their checkpoints."""
    import numpy as np
    from support.guard_synth import stream

    g = CollapseGuard()
    healthy = [g.observe(row) or g.suspect for row in stream(np.full(2_000, 0.3), seed=7)]
    assert sum(healthy) < 0.05 * len(healthy)
    g = CollapseGuard()
    for row in stream(np.full(40, 0.3), seed=8):
        g.observe(row)
    zero = {"accuracy": 0.0, "accuracy/prompt_sd": 0.0, "prompts": 8.0}
    seen = []
    while not g.observe(zero):
        seen.append(g.suspect)
    assert seen and seen[-1] and not g.suspect  # suspect before the alarm; the alarm resets the statistic
