"""The guard lab (``toylab.guard_lab``, ``scripts/guard_lab.py``) on synthetic lab runs (tests/support/guard_synth.py):
the stated onset, delays and false alarms, the exact Poisson interval, which runs are left out and why, and the
generated report."""

import json
from pathlib import Path

import pytest
from support.guard_synth import write_run

from toylab.guard_lab.cli import main
from toylab.guard_lab.replay import cusum, evaluate, relative
from toylab.guard_lab.rules import onset, poisson_ci
from toylab.guard_lab.runs import build_series, load_runs
from trainer.collapse import CollapseGuard

ROOT = Path(__file__).resolve().parents[2]


def write_steps(run: Path, correct: list[list[int]], G: int = 16, events: list[dict] | None = None) -> None:
    run.mkdir(parents=True)
    rows = [{"step": t, "G": G, "correct": c, "tokens": [30.0] * len(c)} for t, c in enumerate(correct)]
    (run / "groups.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events or []))
    (run / "lab.json").write_text('{"status": 0}')


def test_onset_is_the_stated_definition():
    """0.3 for 60 steps, then 0: the centred 9-step mean first stays below half the first 20 steps' mean
    (0.15) at step 60 (steps 56-64: four of 0.3 -> 0.133); a healthy run has no onset."""
    assert onset([0.3] * 60 + [0.0] * 40) == 60
    assert onset([0.3] * 100) is None
    assert onset([0.3] * 60 + [0.0] * 20 + [0.3] * 20) is None  # it came back: no collapse
    assert onset([0.3] * 10) is None


def test_exact_poisson_interval():
    lo, hi = poisson_ci(0)
    assert lo == 0 and hi == pytest.approx(3.689, abs=1e-3)
    lo, hi = poisson_ci(1)
    assert lo == pytest.approx(0.0253, abs=1e-4) and hi == pytest.approx(5.572, abs=1e-3)
    lo, hi = poisson_ci(10)
    assert lo == pytest.approx(4.795, abs=1e-3) and hi == pytest.approx(18.39, abs=1e-2)


def test_replay_gives_the_known_onset_and_delay(tmp_path):
    """A deterministic collapse: the same 8 prompt outcomes (accuracy 0.297) for 60 steps, then all wrong. The
    script finds onset 60 and the delay of the guard the trainer runs, replayed by hand here."""
    healthy = [0, 1, 3, 4, 6, 7, 8, 9]
    write_steps(tmp_path / "kimi_lp-s2", [healthy] * 60 + [[0] * 8] * 40)
    runs, notes = load_runs(tmp_path, {2}, partial=False)
    assert not notes and [(r.name, r.kind, r.onset) for r in runs] == [("kimi_lp-s2", "collapse", 60)]
    build_series(runs[0], 1)
    fig = evaluate(runs, cusum(1.0, 4.0, 0.04), "lab")
    guard = CollapseGuard(cusum_k=1.0, cusum_h=4.0, cusum_tau=0.04)
    by_hand = [t for t, row in enumerate(runs[0].series["lab"][0]) if guard.observe(row)]
    assert fig.delays == {"kimi_lp-s2": by_hand[0] - 60} and 1 <= by_hand[0] - 60 <= 3
    assert fig.false_alarms == 0 and fig.healthy_steps == 0  # a collapse run contributes no healthy steps
    sim = evaluate(runs, cusum(1.0, 4.0, 0.04), "B=128")
    assert sim.detected == 1


def test_the_old_rules_false_alarms_are_reproduced_and_the_cusum_has_none(tmp_path):
    """Noisy healthy synthetic runs at the lab's batch: the relative rule at patience 2 fires, as it did in 8 of
    16 healthy lab runs; the CUSUM at its defaults does not."""
    for seed in range(8):
        write_run(tmp_path / f"grpo-s{seed}", seed=seed)
    runs, _ = load_runs(tmp_path, set(range(8)), partial=False)
    for run in runs:
        build_series(run, 1)
    old = evaluate(runs, relative(2), "lab")
    new = evaluate(runs, {}, "lab")
    assert old.healthy_steps == new.healthy_steps == 1200
    assert old.false_alarms >= 2 and new.false_alarms == 0


def test_runs_left_out_and_the_report(tmp_path):
    """End to end: unfinished runs and runs whose guard rolled back are left out with the reason; the report
    and its JSON are written; with a few hundred validation steps rollback cannot be shown safe, so warn."""
    runs = tmp_path / "runs"
    for seed in range(3):
        for method in ("grpo", "correct_lp"):
            write_run(runs / f"{method}-s{seed}", seed=10 * seed + len(method))
        write_run(runs / f"kimi_lp-s{seed}", seed=100 + seed, onset=50)
    write_run(runs / "acoer-s2", seed=7)
    (runs / "acoer-s2" / "lab.json").unlink()  # still running
    write_run(runs / "guard-s1", seed=8, onset=50)
    write_run(runs / "grpo_lambda-s2", seed=9, onset=50)  # a healthy method that collapsed: neither kind
    (runs / "guard-s1" / "events.jsonl").write_text('{"event": "rollback", "step": 25}\n')
    out = tmp_path / "docs" / "guard-results.md"
    assert main(["--runs", str(runs), "--calibrate", "0", "--validate", "1", "2", "--out", str(out)]) == 0
    text = out.read_text()
    figures = json.loads(out.with_suffix(".json").read_text())
    assert "acoer-s2: not finished" in text and "guard-s1: its own guard rolled back" in text
    assert "grpo_lambda-s2: collapsed by the onset definition" in text
    assert figures["default_action"]["action"] == "warn" and "**Default action: `warn`.**" in text
    assert set(figures["runs"]) == {f"{m}-s{s}" for m in ("grpo", "correct_lp", "kimi_lp") for s in range(3)}
    cusum_default = next(v for k, v in figures["validation"].items() if k.startswith("cusum default"))
    assert cusum_default["lab"]["collapses"] == 2 and cusum_default["lab"]["detected"] == 2
    onsets = [figures["runs"][f"kimi_lp-s{s}"]["onset"] for s in (1, 2)]
    assert all(50 <= t <= 65 for t in onsets)  # the generator's mean starts falling at 50
    assert cusum_default["lab"]["healthy_steps"] == 4 * 150  # healthy runs only
    assert "**Prediction 7 of docs/toy-lab.md**" in text
    assert "do not edit by hand" in text and "| relative p2 (old default) | lab |" in text
    with pytest.raises(SystemExit):
        main(["--runs", str(runs), "--calibrate", "0", "--validate", "0", "1"])


def test_several_run_directories_are_pooled_with_their_names(tmp_path):
    for exp in ("length", "offpolicy"):
        for seed in (0, 1):
            write_run(tmp_path / exp / f"grpo-s{seed}", seed=seed, steps=40)
    out = tmp_path / "r.md"
    args = ["--runs", str(tmp_path / "length"), str(tmp_path / "offpolicy"), "--calibrate", "0", "--validate", "1"]
    assert main([*args, "--out", str(out)]) == 0
    figures = json.loads(out.with_suffix(".json").read_text())
    assert set(figures["runs"]) == {f"{e}/grpo-s{s}" for e in ("length", "offpolicy") for s in (0, 1)}
    assert "Not judged: no validation collapse." in out.read_text()


def test_a_missing_runs_directory_is_noted_not_fatal(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path / "length" / f"grpo-s{seed}", seed=seed, steps=40)
    out = tmp_path / "r.md"
    args = ["--runs", str(tmp_path / "length"), str(tmp_path / "collapse"), "--calibrate", "0", "--validate", "1"]
    assert main([*args, "--out", str(out)]) == 0
    assert f"{tmp_path / 'collapse'}: no such directory" in out.read_text()


def test_the_onset_fraction_is_an_argument_not_a_leftover(tmp_path):
    """A post-hoc fraction moves the onset and is labelled in that report only: the next report in the same
    process is back on the pre-registered definition (0.3 -> 0.2 at step 60: below 0.75 x from the
    centred mean at step 62, never below 0.5 x)."""
    assert onset([0.3] * 60 + [0.2] * 40) is None
    assert onset([0.3] * 60 + [0.2] * 40, fraction=0.75) == 62
    for seed in (0, 1):
        write_steps(tmp_path / f"grpo-s{seed}", [[8, 8, 8, 8, 8, 8, 8, 8]] * 40)
    args = ["--runs", str(tmp_path), "--calibrate", "0", "--validate", "1"]
    posthoc, plain = tmp_path / "posthoc.md", tmp_path / "plain.md"
    assert main([*args, "--onset-fraction", "0.75", "--out", str(posthoc)]) == 0
    assert main([*args, "--out", str(plain)]) == 0
    assert "**post hoc**: 0.75" in posthoc.read_text() and "post hoc" not in plain.read_text()
    assert json.loads(plain.with_suffix(".json").read_text())["definitions"]["onset"]["fraction"] == 0.5
    # each report names the command that wrote it, flags and output included: re-run as printed, it rewrites
    # that report and not the other one
    assert f"--calibrate 0 --validate 1 --onset-fraction 0.75 --out {posthoc}`" in posthoc.read_text()
    assert f"--calibrate 0 --validate 1 --out {plain}`" in plain.read_text()
