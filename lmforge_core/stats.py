"""Summary statistics of measured samples: one percentile helper for every report.

By default ``numpy.percentile``'s ``method="linear"`` (Hyndman & Fan's 7th: the value at
fractional rank ``q/100 * (n - 1)`` of the sorted samples, interpolated between its two
neighbours). ``method="inverted_cdf"`` is the nearest rank (Hyndman & Fan's 1st): always a
value that was measured, for reports that promise one. The client distribution may not import
numpy; its load generator computes the linear numbers by hand and ``tests/unit/test_stats.py``
holds the two together.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np

#: ``linear`` (interpolated) or ``inverted_cdf`` (nearest rank), named as numpy names them
Method = Literal["linear", "inverted_cdf"]


def percentile(values: Iterable[float], q: float, *, method: Method = "linear") -> float | None:
    """The ``q``-th percentile (``0 <= q <= 100``) of ``values``; None without values."""
    data = np.fromiter(values, dtype=np.float64)
    if data.size == 0:
        return None
    return float(np.percentile(data, q, method=method))


def rounded(value: float | None, ndigits: int = 2) -> float | None:
    """``round(value, ndigits)``, None staying None (a percentile of no samples)."""
    return None if value is None else round(value, ndigits)


def bootstrap_indices(rows: int, samples: int = 1000, seed: int = 0) -> np.ndarray:
    """``samples`` resamplings of ``rows`` row indices with replacement, shape
    ``(samples, rows)``. Using the same indices for several models gives paired intervals
    (of a difference or a ratio between them)."""
    return np.random.default_rng(seed).integers(0, rows, size=(samples, rows))


def interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """The percentile interval holding ``level`` of ``values`` (e.g. bootstrap replicates)."""
    data = np.fromiter(values, dtype=np.float64)
    tail = (1.0 - level) / 2.0 * 100.0
    return float(np.percentile(data, tail)), float(np.percentile(data, 100.0 - tail))
