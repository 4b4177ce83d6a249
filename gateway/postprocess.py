"""Shaping backend outputs into what the API promises (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gateway.backend import FloatArray


def rank_labels(probs: FloatArray, labels: Sequence[str], top_k: int) -> list[tuple[str, float]]:
    """``(label, score)`` pairs of one row sorted by descending score; ``top_k`` 0 keeps all.

    Ties keep the model's label order.
    """
    order = np.argsort(-probs, kind="stable")
    if top_k > 0:
        order = order[:top_k]
    return [(labels[int(i)], float(probs[int(i)])) for i in order]


def shape_embeddings(vectors: FloatArray, dimensions: int | None, normalize: bool) -> FloatArray:
    """Keep the first ``dimensions`` columns, then L2-normalize rows when ``normalize``.

    Rows whose norm is zero are returned unchanged.
    """
    out = vectors if dimensions is None else vectors[:, :dimensions]
    out = np.asarray(out, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.where(norms > 0, norms, 1.0).astype(np.float32)
    return out
