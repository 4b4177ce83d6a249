"""Evaluation metrics in plain numpy: classification, correlation and perplexity."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Values = Sequence[float] | np.ndarray


def accuracy(predictions: Sequence[int], targets: Sequence[int]) -> float:
    pred, gold = np.asarray(predictions), np.asarray(targets)
    return float((pred == gold).mean()) if gold.size else float("nan")


def per_class_recall(
    predictions: Sequence[int], targets: Sequence[int], num_classes: int
) -> list[float]:
    """Recall of each class; NaN for a class absent from ``targets``."""
    pred, gold = np.asarray(predictions), np.asarray(targets)
    recalls = []
    for c in range(num_classes):
        support = gold == c
        recalls.append(float((pred[support] == c).mean()) if support.any() else float("nan"))
    return recalls


def macro_f1(predictions: Sequence[int], targets: Sequence[int], num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in targets or predictions."""
    pred, gold = np.asarray(predictions), np.asarray(targets)
    scores = []
    for c in range(num_classes):
        tp = float(np.sum((pred == c) & (gold == c)))
        fp = float(np.sum((pred == c) & (gold != c)))
        fn = float(np.sum((pred != c) & (gold == c)))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def pearson(x: Values, y: Values) -> float:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties receiving the average of their positions."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(x: Values, y: Values) -> float:
    return pearson(_ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, np.float64)))


def perplexity(total_nll: float, total_tokens: int) -> float:
    if total_tokens <= 0:
        return float("nan")
    return float(math.exp(min(total_nll / total_tokens, 700.0)))


def classification_report(
    predictions: Sequence[int], targets: Sequence[int], label_names: Sequence[str]
) -> dict[str, float]:
    num_classes = len(label_names)
    report = {
        "accuracy": accuracy(predictions, targets),
        "macro_f1": macro_f1(predictions, targets, num_classes),
    }
    for name, value in zip(
        label_names, per_class_recall(predictions, targets, num_classes), strict=True
    ):
        report[f"recall/{name}"] = value
    return report
