"""Bootstrap intervals of the compression report: paired over the same resampled rows."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.report import add_intervals
from lmforge_core.stats import bootstrap_indices, interval
from trainer.repository.quantize import Scored


def test_interval_holds_the_middle_of_the_replicates() -> None:
    low, high = interval(range(1001), level=0.9)
    assert low == pytest.approx(50.0) and high == pytest.approx(950.0)


def test_indices_are_seeded_and_in_range() -> None:
    one, two = bootstrap_indices(20, 50, seed=3), bootstrap_indices(20, 50, seed=3)
    assert one.shape == (50, 20) and (one == two).all() and one.max() < 20


def test_a_model_identical_to_the_baseline_has_a_ratio_interval_of_exactly_one() -> None:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 400)
    teacher = np.where(rng.random(400) < 0.9, gold, 1 - gold)  # about 90 % right
    student = np.where(rng.random(400) < 0.8, gold, 1 - gold)  # about 80 % right
    rows: list[dict[str, object]] = [{"model": "t"}, {"model": "copy"}, {"model": "s"}]
    scores = [Scored("accuracy", p, gold) for p in (teacher, teacher.copy(), student)]
    add_intervals(rows, scores, baseline=0, samples=300)  # type: ignore[arg-type]
    assert rows[1]["vs_baseline_ci95"] == [1.0, 1.0]  # paired: the same rows for both
    low, high = rows[2]["metric_ci95"]  # type: ignore[misc]
    assert low < scores[2].value < high and high - low < 0.1
    ratio_low, ratio_high = rows[2]["vs_baseline_ci95"]  # type: ignore[misc]
    assert ratio_low < scores[2].value / scores[0].value < ratio_high < 1.0
