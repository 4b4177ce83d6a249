"""Many requests → one padded batch → results split back per request.

The ``onnx_encoder`` python model receives several requests per ``execute()`` (dynamic
batching with ``allow_ragged_batch``); each holds ``[rows_i, length_i]`` token tensors. They
are right-padded to the longest length, stacked, run once, and the outputs are cut back
into per-request slices by row count.

A graph whose result for one row depends on the other rows of its batch (dynamic INT8: its
activation scales are computed over the whole batch) runs **row-wise** instead: every row on
its own, cut to its own length (:func:`own_length_rows`), so a sentence gets the same scores
whatever it was batched with, and exactly what an in-process batch of one gives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


def pad_to_length(array: Array, length: int, pad_value: int | float = 0) -> Array:
    """Right-pad a ``[rows, L]`` array along its last axis to ``length``."""
    if array.ndim != 2:
        raise ValueError(f"expected a [rows, length] tensor, got shape {array.shape}")
    current = array.shape[1]
    if current > length:
        raise ValueError(f"tensor of length {current} does not fit length {length}")
    if current == length:
        return array
    padded = np.full((array.shape[0], length), pad_value, dtype=array.dtype)
    padded[:, :current] = array
    return padded


def merge_requests(
    requests: Sequence[Mapping[str, Array]], pad_values: Mapping[str, int | float] | None = None
) -> tuple[dict[str, Array], list[int]]:
    """Stack same-named ``[rows_i, L_i]`` tensors of all requests into ``[sum rows, max L]``.

    Returns the merged tensors and each request's row count (for :func:`split_rows`).
    """
    if not requests:
        raise ValueError("no requests to merge")
    names = list(requests[0])
    for i, request in enumerate(requests):
        if list(request) != names:
            raise ValueError(f"request {i} has tensors {list(request)}, expected {names}")
        rows = {request[n].shape[0] for n in names}
        lengths = {request[n].shape[1] if request[n].ndim == 2 else -1 for n in names}
        if len(rows) != 1 or len(lengths) != 1:
            shapes = {n: request[n].shape for n in names}
            raise ValueError(f"request {i} has inconsistent shapes {shapes}")
    counts = [requests[i][names[0]].shape[0] for i in range(len(requests))]
    length = max(r[names[0]].shape[1] for r in requests)
    pads = pad_values or {}
    merged = {
        name: np.concatenate([pad_to_length(r[name], length, pads.get(name, 0)) for r in requests])
        for name in names
    }
    return merged, counts


def split_rows(outputs: Mapping[str, Array], counts: Sequence[int]) -> list[dict[str, Array]]:
    """Cut ``[sum rows, ...]`` outputs back into one dict per request."""
    total = sum(counts)
    for name, value in outputs.items():
        if value.shape[0] != total:
            raise ValueError(f"output {name} has {value.shape[0]} rows, expected {total}")
    bounds = np.cumsum([0, *counts])
    return [
        {name: value[bounds[i] : bounds[i + 1]] for name, value in outputs.items()}
        for i in range(len(counts))
    ]


def own_length_rows(merged: Mapping[str, Array], mask_name: str) -> list[dict[str, Array]]:
    """Each row of right-padded ``[rows, L]`` tensors alone, cut to its own length (the number
    of ones in its ``mask_name`` row; a row of all padding keeps one position)."""
    mask = merged[mask_name]
    if mask.ndim != 2:
        raise ValueError(f"expected a [rows, length] mask, got shape {mask.shape}")
    lengths = np.maximum(mask.astype(bool).sum(axis=1), 1)
    return [
        {name: value[row : row + 1, : int(length)] for name, value in merged.items()}
        for row, length in enumerate(lengths)
    ]
