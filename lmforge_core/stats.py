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
