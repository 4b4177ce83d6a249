"""Evaluation metrics: scikit-learn for classification, SciPy for correlation.

Thin wrappers that fix the conventions the trainer reports: macro-F1 over the classes that
occur in targets or predictions, recall per class (NaN for a class absent from the targets),
correlations as NaN when one side is constant, perplexity from summed NLL.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as skm

Values = Sequence[float] | np.ndarray


def accuracy(predictions: Sequence[int], targets: Sequence[int]) -> float:
    if not len(targets):
        return float("nan")
    return float(skm.accuracy_score(targets, predictions))


def per_class_recall(
    predictions: Sequence[int], targets: Sequence[int], num_classes: int
) -> list[float]:
    """Recall of each class; NaN for a class absent from ``targets``."""
    classes = list(range(num_classes))
    recall = skm.recall_score(
        targets, predictions, labels=classes, average=None, zero_division=np.nan
    )
    return [float(r) for r in recall]


def macro_f1(predictions: Sequence[int], targets: Sequence[int], num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in targets or predictions."""
    present = sorted(set(int(t) for t in targets) | set(int(p) for p in predictions))
    present = [c for c in present if 0 <= c < num_classes]
    if not present:
        return float("nan")
    return float(skm.f1_score(targets, predictions, labels=present, average="macro"))


def _correlation(kind: str, x: Values, y: Values) -> float:
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        result = stats.pearsonr(a, b) if kind == "pearson" else stats.spearmanr(a, b)
    return float(result.statistic)


def pearson(x: Values, y: Values) -> float:
    return _correlation("pearson", x, y)


def spearman(x: Values, y: Values) -> float:
    return _correlation("spearman", x, y)


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
