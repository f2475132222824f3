"""The parts of ``make bench-async`` that need no server: its length draw, the forced-length logits processor
driven through vLLM's own batch-update records, and the three figures it prints, on hand-computed numbers."""

import math

import pytest
import torch

from scripts.bench_async import async_ratio, occupancy, overlap

EOS = 2


def test_length_from_normal_median_spread_and_clamp():
    from scripts.bench_lengths import length_from_normal

    assert length_from_normal(0.0, 100) == 20  # the median: a fifth of max new tokens
    assert length_from_normal(math.log(2), 100) == 40  # one sigma of log(2) doubles it
    assert length_from_normal(math.log(0.5), 100) == 10
    assert length_from_normal(-5.0, 100) == 4  # 20 * e^-5 = 0.13, clamped up to 4
    assert length_from_normal(5.0, 100) == 100  # 20 * e^5 = 2968, clamped down to max


def test_target_length_is_seeded_and_spreads_tenfold():
    from scripts.bench_lengths import target_length

    assert target_length(7, 128) == target_length(7, 128)
    draws = [target_length(s, 128) for s in range(400)]
    assert min(draws) >= 4 and max(draws) <= 128
    assert 20 <= sorted(draws)[200] <= 32  # median near 128 / 5 = 25.6
    assert max(draws) >= 10 * min(draws)


def params(seed, max_tokens, ignore_eos=False):
    from vllm import SamplingParams

    p = SamplingParams(seed=seed, max_tokens=max_tokens, ignore_eos=ignore_eos)
    p.update_from_generation_config({}, eos_token_id=EOS)
    return p


def test_processor_ends_each_row_at_its_drawn_length(monkeypatch):
    """Three rows decode through the processor (argmax of random logits that favour EOS); the forced rows end
    exactly at their targets, EOS included, and an ignore_eos or short (probe-like) request is left alone."""
    from vllm.v1.sample.logits_processor import BatchUpdate

    from scripts.bench_lengths import LENGTHS_ENV, ForcedLengths, target_length

    monkeypatch.setenv(LENGTHS_ENV, "64")
    proc = ForcedLengths(None, torch.device("cpu"), False)
    outputs = [[], [], [], []]
    reqs = [params(11, 64), params(12, 64), params(13, 64, ignore_eos=True), params(14, 16)]
    added = [(i, p, [1, 5], outputs[i]) for i, p in enumerate(reqs)]
    proc.update_state(BatchUpdate(batch_size=4, removed=[], added=added, moved=[]))
    g = torch.Generator().manual_seed(0)
    done = [False] * 4
    for _ in range(64):
        logits = torch.randn(4, 10, generator=g)  # [B, V]
        logits[:, EOS] += 1.0  # unforced, EOS would win early and often
        tokens = proc.apply(logits).argmax(-1).tolist()
        for i, t in enumerate(tokens):
            if not done[i]:
                outputs[i].append(t)
                done[i] = t == EOS or len(outputs[i]) == 64
        proc.update_state(None)
    assert [len(o) for o in outputs[:2]] == [target_length(11, 64), target_length(12, 64)]
    assert outputs[0][-1] == EOS and EOS not in outputs[0][:-1]
    assert 2 not in proc.rows and 3 not in proc.rows  # left to the model
    proc.update_state(BatchUpdate(batch_size=0, removed=[0, 1], added=[], moved=[]))
    assert proc.rows == {}


def test_processor_is_off_without_the_bench_environment(monkeypatch):
    from vllm.v1.sample.logits_processor import BatchUpdate

    from scripts.bench_lengths import LENGTHS_ENV, ForcedLengths

    monkeypatch.delenv(LENGTHS_ENV, raising=False)
    proc = ForcedLengths(None, torch.device("cpu"), False)
    proc.update_state(BatchUpdate(batch_size=1, removed=[], added=[(0, params(1, 64), None, [])], moved=[]))
    logits = torch.zeros(1, 10)
    assert torch.equal(proc.apply(logits.clone()), logits)


def test_figures_on_hand_computed_numbers():
    # 1000 tokens a step in 2.0 s = 500 tokens/s against 625 at full batch: 80%
    assert occupancy(1000, 2.0, 625) == pytest.approx(0.80)
    # one batch at full rate: 1000 / 500 = 2.0 s > update + push 1.5 s; a 2.2 s step is 1.10x the slower side
    assert overlap(2.2, 1000, 500, 1.5) == pytest.approx(1.10)
    # update-bound: 1000 / 1000 = 1.0 s < 1.6 s; a 2.0 s step is 1.25x
    assert overlap(2.0, 1000, 1000, 1.6) == pytest.approx(1.25)
    # the better of k=1 (1.2 s) and k=2 (1.1 s) against k=0 (2.0 s)
    assert async_ratio({0: 2.0, 1: 1.2, 2: 1.1}) == pytest.approx(0.55)
