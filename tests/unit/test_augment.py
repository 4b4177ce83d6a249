"""Perturbed transfer rows for distillation: specials kept, padding right, untouched rows equal."""

from __future__ import annotations

import torch

from trainer.training.augment import augment_rows
from trainer.training.config import AugmentConfig

CLS, SEP, PAD, MASK = 101, 102, 0, 103


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor(
        [
            [CLS, 10, 11, 12, 13, 14, 15, SEP],
            [CLS, 20, 21, SEP, PAD, PAD, PAD, PAD],
            [CLS, SEP, PAD, PAD, PAD, PAD, PAD, PAD],
        ]
    )
    return ids, (ids != PAD).long()


def test_every_row_keeps_its_specials_and_at_least_one_piece() -> None:
    ids, mask = batch()
    config = AugmentConfig(probability=1.0, token_dropout=0.99, mask=0.0, swap=0.0)
    out_ids, out_mask, augmented = augment_rows(
        ids, mask, config, MASK, PAD, torch.Generator().manual_seed(0)
    )
    assert augmented.tolist() == [True, True, False]  # an empty sentence is left alone
    for row, length in zip(out_ids, out_mask.sum(-1).tolist(), strict=True):
        assert row[0] == CLS and row[length - 1] == SEP and length >= 2
        assert (row[length:] == PAD).all()
    assert out_mask.sum(-1)[0] >= 3 and out_mask.sum(-1)[0] < 8
    assert torch.equal(out_ids[2], ids[2])


def test_masking_and_swapping_keep_the_length() -> None:
    ids, mask = batch()
    config = AugmentConfig(probability=1.0, token_dropout=0.0, mask=0.5, swap=0.5)
    out_ids, out_mask, _ = augment_rows(
        ids, mask, config, MASK, PAD, torch.Generator().manual_seed(1)
    )
    assert torch.equal(out_mask, mask)
    assert not torch.equal(out_ids[0], ids[0])
    kept = [t for t in out_ids[0, 1:7].tolist() if t != MASK]
    assert set(kept) <= set(range(10, 16))


def test_rows_not_drawn_are_unchanged_and_the_draw_is_seeded() -> None:
    ids, mask = batch()
    config = AugmentConfig(probability=0.0)
    out_ids, out_mask, augmented = augment_rows(
        ids, mask, config, MASK, PAD, torch.Generator().manual_seed(0)
    )
    assert not augmented.any() and torch.equal(out_ids, ids) and torch.equal(out_mask, mask)
    config = AugmentConfig(probability=0.5)
    one = augment_rows(ids, mask, config, MASK, PAD, torch.Generator().manual_seed(7))
    two = augment_rows(ids, mask, config, MASK, PAD, torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
