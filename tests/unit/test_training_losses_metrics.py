"""Loss functions and numpy metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.training.losses import (
    focal_loss,
    in_batch_contrastive,
    mean_pool,
    weighted_cross_entropy,
)
from trainer.training.metrics import (
    accuracy,
    classification_report,
    macro_f1,
    pearson,
    per_class_recall,
    perplexity,
    spearman,
)


def test_focal_loss_with_gamma_zero_is_cross_entropy() -> None:
    logits = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(4, (16,), generator=torch.Generator().manual_seed(1))
    assert focal_loss(logits, targets, 0.0) == pytest.approx(
        float(weighted_cross_entropy(logits, targets))
    )


def test_focal_loss_down_weights_easy_examples() -> None:
    easy = torch.tensor([[5.0, -5.0]])
    hard = torch.tensor([[0.2, 0.0]])
    target = torch.tensor([0])
    ratio_focal = float(focal_loss(easy, target, 2.0) / focal_loss(hard, target, 2.0))
    ratio_ce = float(weighted_cross_entropy(easy, target) / weighted_cross_entropy(hard, target))
    assert ratio_focal < ratio_ce / 100


def test_class_weighted_cross_entropy_weights_each_example_by_its_class() -> None:
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 0])
    weights = torch.tensor([2.0, 1.0])
    assert float(weighted_cross_entropy(logits, targets, weights)) == pytest.approx(
        float(weighted_cross_entropy(logits, targets))
    )  # same class: the weighted mean is unchanged
    mixed = torch.tensor([0, 1])
    expected = (2 * -math.log(math.e / (math.e + 1)) + 1 * -math.log(math.e / (math.e + 1))) / 3
    assert float(weighted_cross_entropy(logits, mixed, weights)) == pytest.approx(
        expected, rel=1e-5
    )


def test_contrastive_loss_is_low_for_matching_pairs_and_high_for_shuffled() -> None:
    a = torch.eye(8)
    assert float(in_batch_contrastive(a, a, 20.0)) < 1e-3
    assert float(in_batch_contrastive(a, a.roll(1, 0), 20.0)) > 10.0


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).item() == pytest.approx(2.0)


def test_classification_metrics() -> None:
    pred = [0, 0, 1, 1, 2, 0]
    gold = [0, 1, 1, 1, 2, 2]
    assert accuracy(pred, gold) == pytest.approx(4 / 6)
    assert per_class_recall(pred, gold, 4)[:3] == pytest.approx([1.0, 2 / 3, 0.5])
    assert math.isnan(per_class_recall(pred, gold, 4)[3])
    f1 = [2 * 1 / (2 + 2), 2 * 2 / (4 + 1), 2 * 1 / (2 + 1)]
    assert macro_f1(pred, gold, 4) == pytest.approx(sum(f1) / 3)
    report = classification_report(pred, gold, ["a", "b", "c", "d"])
    assert report["recall/b"] == pytest.approx(2 / 3)


def test_spearman_uses_average_ranks_for_ties() -> None:
    x = [1.0, 2.0, 2.0, 3.0]
    y = [10.0, 20.0, 30.0, 40.0]
    ranks_x = [1.0, 2.5, 2.5, 4.0]
    assert spearman(x, y) == pytest.approx(pearson(ranks_x, [1, 2, 3, 4]))
    assert spearman([1, 2, 3], [1, 4, 9]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_perplexity_is_exp_of_mean_token_nll() -> None:
    assert perplexity(2 * math.log(5.0), 2) == pytest.approx(5.0)
