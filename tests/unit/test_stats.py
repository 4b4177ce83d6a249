"""The one percentile definition (``lmforge_core.stats``) and the client's numpy-free copy."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lmforge_client import loadgen
from lmforge_client.loadgen import LoadResult

from lmforge_core.stats import percentile, rounded

SAMPLES = st.lists(
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=60,
)
QS = st.one_of(st.sampled_from([0.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0]), st.floats(0, 100))


def test_percentile_interpolates_linearly_between_neighbouring_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.5
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 100.0
    assert percentile([500.0, 1000.0], 99) == pytest.approx(995.0)
    assert percentile([7.0], 99) == 7.0


def test_percentile_of_no_values_is_none() -> None:
    assert percentile([], 50) is None
    assert rounded(percentile([], 50)) is None
    assert rounded(percentile([1.234, 5.678], 50)) == 3.46


def test_nearest_rank_method_gives_a_measured_value() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50, method="inverted_cdf") == 50.0
    assert percentile(values, 99, method="inverted_cdf") == 99.0
    assert percentile([500.0, 1000.0], 99, method="inverted_cdf") == 1000.0


def test_percentile_rejects_q_outside_0_to_100() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        loadgen.percentile([1.0], -1)


@settings(max_examples=300, derandomize=True, database=None)
@given(SAMPLES, QS)
def test_load_generator_percentile_equals_the_core_helper_exactly(
    values: list[float], q: float
) -> None:
    assert loadgen.percentile(values, q) == percentile(values, q)


def test_load_result_reports_the_core_percentiles_and_nan_without_latencies() -> None:
    latencies = (12.0, 3.0, 7.5, 40.0, 9.25)
    result = LoadResult("closed", 4, 1.0, ok=5, latencies_ms=latencies)
    for q in (50, 95, 99):
        assert result.percentile(q) == percentile(latencies, q)
    assert result.summary()["p95_ms"] == round(percentile(latencies, 95) or 0.0, 3)
    assert math.isnan(LoadResult("open", 1.0, 1.0, ok=0).percentile(99))
