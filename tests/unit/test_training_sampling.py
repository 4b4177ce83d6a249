"""Task mixing, class weights and resumable index streams (pure components)."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.errors import ConfigError
from trainer.training.sampling import IndexStream, TaskSampler, class_weights, task_probabilities

SIZES = [67_347, 4_935, 5_749]  # SST-2, TREC, STS-B


def test_temperature_one_equals_proportional_mixing() -> None:
    np.testing.assert_allclose(
        task_probabilities(SIZES, "temperature", 1.0), task_probabilities(SIZES, "proportional")
    )


def test_temperature_follows_n_to_the_one_over_t() -> None:
    probs = task_probabilities(SIZES, "temperature", 2.0)
    expected = np.sqrt(SIZES) / np.sqrt(SIZES).sum()
    np.testing.assert_allclose(probs, expected)
    assert probs[0] < SIZES[0] / sum(SIZES)  # the large task is damped


def test_uniform_mixing_ignores_sizes() -> None:
    np.testing.assert_allclose(task_probabilities(SIZES, "uniform"), [1 / 3] * 3)


def test_high_temperature_approaches_uniform() -> None:
    np.testing.assert_allclose(
        task_probabilities(SIZES, "temperature", 1e6), [1 / 3] * 3, atol=1e-4
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_task_mix_drawn_over_many_steps_matches_the_temperature(temperature: float) -> None:
    probs = task_probabilities(SIZES, "temperature", temperature)
    sampler = TaskSampler(probs, seed=3)
    draws = 20_000
    counts = np.bincount([sampler.next() for _ in range(draws)], minlength=len(SIZES))
    observed = counts / draws
    tolerance = 4 * np.sqrt(probs * (1 - probs) / draws)  # 4 standard errors
    assert np.all(np.abs(observed - probs) < tolerance), (observed, probs)


def test_empty_task_is_rejected() -> None:
    with pytest.raises(ConfigError, match="at least one training row"):
        task_probabilities([10, 0], "proportional")


def test_sampler_resumes_the_same_sequence_from_its_state() -> None:
    sampler = TaskSampler([0.5, 0.3, 0.2], seed=11)
    for _ in range(37):
        sampler.next()
    state = sampler.state_dict()
    expected = [sampler.next() for _ in range(50)]
    restored = TaskSampler([0.5, 0.3, 0.2], seed=11)
    restored.load_state_dict(state)
    assert [restored.next() for _ in range(50)] == expected


def test_class_weights_are_inverse_frequency_with_unit_mean_per_example() -> None:
    labels = [0] * 90 + [1] * 10
    weights = class_weights(labels, 2, power=1.0)
    assert weights[1] / weights[0] == pytest.approx(9.0)
    assert (weights[np.asarray(labels)]).mean() == pytest.approx(1.0)
    sqrt_weights = class_weights(labels, 2, power=0.5)
    assert sqrt_weights[1] / sqrt_weights[0] == pytest.approx(3.0)


def test_class_absent_from_data_gets_zero_weight() -> None:
    assert class_weights([0, 0, 2], 3)[1] == 0.0


def test_ranks_read_disjoint_slices_covering_each_epoch() -> None:
    streams = [IndexStream(40, 4, seed=1, task_index=0, rank=r, world_size=2) for r in range(2)]
    seen: list[int] = []
    for _ in range(5):  # 5 global batches of 8 = one epoch of 40
        batches = [s.next_batch() for s in streams]
        assert not set(batches[0]) & set(batches[1])
        seen += batches[0] + batches[1]
    assert sorted(seen) == list(range(40))
    assert streams[0].state_dict() == {"epoch": 0, "cursor": 40}
    streams[0].next_batch()
    assert streams[0].state_dict()["epoch"] == 1


def test_stream_restored_from_state_continues_identically() -> None:
    stream = IndexStream(30, 4, seed=5, task_index=2, rank=1, world_size=2)
    for _ in range(11):
        stream.next_batch()
    state = stream.state_dict()
    expected = [stream.next_batch() for _ in range(9)]
    restored = IndexStream(30, 4, seed=5, task_index=2, rank=1, world_size=2)
    restored.load_state_dict(state)
    assert [restored.next_batch() for _ in range(9)] == expected


def test_oversampling_balances_a_rare_class() -> None:
    labels = np.array([0] * 95 + [1] * 5)
    weights = class_weights(labels.tolist(), 2)[labels]
    stream = IndexStream(100, 10, seed=0, task_index=0, example_weights=weights)
    drawn = [i for _ in range(200) for i in stream.next_batch()]
    share = float(np.mean(labels[drawn] == 1))
    assert 0.4 < share < 0.6


def test_task_smaller_than_a_global_batch_still_yields_full_batches() -> None:
    stream = IndexStream(3, 4, seed=0, task_index=0, rank=0, world_size=2)
    assert len(stream.next_batch()) == 4


def test_grouping_by_length_keeps_each_epoch_complete_and_batches_homogeneous() -> None:
    lengths = np.random.default_rng(0).integers(1, 200, 960)
    grouped = IndexStream(
        960, 8, seed=0, task_index=0, world_size=2, lengths=lengths, group_size=20
    )
    plain = IndexStream(960, 8, seed=0, task_index=0, world_size=2)
    partner = IndexStream(
        960, 8, seed=0, task_index=0, rank=1, world_size=2, lengths=lengths, group_size=20
    )
    seen: list[int] = []
    spread_grouped, spread_plain = [], []
    for _ in range(60):  # one epoch of 60 global batches of 16
        a, b = grouped.next_batch(), partner.next_batch()
        seen += a + b
        spread_grouped.append(np.ptp(lengths[a + b]))
        spread_plain.append(np.ptp(lengths[plain.next_batch()]))
    assert sorted(seen) == list(range(960))
    assert np.mean(spread_grouped) < 0.2 * np.mean(spread_plain)
    state = grouped.state_dict()
    expected = [grouped.next_batch() for _ in range(5)]
    restored = IndexStream(
        960, 8, seed=0, task_index=0, world_size=2, lengths=lengths, group_size=20
    )
    restored.load_state_dict(state)
    assert [restored.next_batch() for _ in range(5)] == expected
