"""The cascade curve and the threshold choice (pure)."""

from __future__ import annotations

import numpy as np

from benchmarks.cascade import choose, curve


def test_curve_counts_escalations_and_the_labels_of_the_model_that_answers() -> None:
    small = np.array([[0.9, 0.1], [0.6, 0.4], [0.45, 0.55], [0.2, 0.8]])
    large = np.array([[0.8, 0.2], [0.1, 0.9], [0.9, 0.1], [0.3, 0.7]])
    gold = np.array([0, 1, 0, 1])
    rows = curve(small, large, gold, np.array([0.5, 0.7, 0.95]))
    assert rows[0] == {"threshold": 0.5, "escalation": 0.0, "accuracy": 0.5}
    # under 0.7: inputs 1 (0.6) and 2 (0.55) go to large, which gets both right
    assert rows[1] == {"threshold": 0.7, "escalation": 0.5, "accuracy": 1.0}
    assert rows[2]["escalation"] == 1.0 and rows[2]["accuracy"] == 1.0


def test_choose_takes_the_cheapest_threshold_that_keeps_the_target() -> None:
    rows = [
        {"threshold": 0.5, "escalation": 0.0, "accuracy": 0.80},
        {"threshold": 0.7, "escalation": 0.2, "accuracy": 0.90},
        {"threshold": 0.9, "escalation": 0.4, "accuracy": 0.91},
    ]
    assert choose(rows, 0.89)["threshold"] == 0.7
    assert choose(rows, 0.95)["threshold"] == 0.9  # unreachable: the most accurate


def test_the_accurate_policy_takes_the_best_accuracy_within_the_escalation_budget() -> None:
    rows = [
        {"threshold": 0.5, "escalation": 0.0, "accuracy": 0.90},
        {"threshold": 0.7, "escalation": 0.1, "accuracy": 0.92},
        {"threshold": 0.8, "escalation": 0.2, "accuracy": 0.92},
        {"threshold": 0.9, "escalation": 0.4, "accuracy": 0.95},
    ]
    assert choose(rows, 0.89, 0.3, "accurate")["threshold"] == 0.7
    assert choose(rows, 0.89, 0.5, "accurate")["threshold"] == 0.9
    assert choose(rows, 0.89, 0.3, "cheapest")["threshold"] == 0.5
