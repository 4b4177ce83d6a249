"""The validation split carved from a task's training rows: disjoint, stratified, seeded."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.errors import ConfigError
from trainer.training.config import ValidationSplit
from trainer.training.data import Examples, split_validation


def examples(labels: list[int]) -> Examples:
    texts = [(f"row {i}",) for i in range(len(labels))]
    return Examples(path="train.tsv", texts=texts, labels=labels, label_names=["a", "b", "c"])


def test_split_is_disjoint_complete_and_keeps_the_training_order() -> None:
    data = examples([0] * 90 + [1] * 9 + [2] * 1)
    train, held = split_validation(data, ValidationSplit(rows=20), stratify=True)
    assert len(train) + len(held) == 100 and len(held) == 20
    assert set(train.texts).isdisjoint(held.texts)
    assert sorted(train.texts + held.texts, key=lambda t: int(t[0][4:])) == data.texts
    positions = [int(t[0][4:]) for t in train.texts]
    assert positions == sorted(positions)
    assert held.label_names == data.label_names and held.path.endswith("#validation")


def test_classes_keep_their_share_and_small_ones_appear() -> None:
    data = examples([0] * 900 + [1] * 95 + [2] * 5)
    _, held = split_validation(data, ValidationSplit(fraction=0.1), stratify=True)
    counts = [held.labels.count(c) for c in range(3)]  # type: ignore[union-attr]
    assert sum(counts) == 100
    assert counts[0] == 90 and 9 <= counts[1] <= 10 and counts[2] >= 1


def test_same_seed_same_split_other_seed_other_split() -> None:
    data = examples([0, 1] * 200)
    one = split_validation(data, ValidationSplit(rows=40, seed=3), stratify=True)[1]
    two = split_validation(data, ValidationSplit(rows=40, seed=3), stratify=True)[1]
    three = split_validation(data, ValidationSplit(rows=40, seed=4), stratify=True)[1]
    assert one.texts == two.texts and one.texts != three.texts


def test_unlabelled_rows_split_at_random() -> None:
    data = Examples(path="t.tsv", texts=[(str(i),) for i in range(50)], labels=None)
    train, held = split_validation(data, ValidationSplit(rows=5), stratify=False)
    assert len(held) == 5 and held.labels is None and len(train) == 45


def test_a_split_larger_than_half_the_rows_is_refused() -> None:
    with pytest.raises(ConfigError, match="at most half"):
        split_validation(examples([0, 1] * 5), ValidationSplit(rows=6), stratify=True)


def test_held_out_rows_are_written_with_the_training_columns(tmp_path: Path) -> None:
    from trainer.training.config import TaskConfig
    from trainer.training.data import load_examples, write_validation_rows
    from trainer.training.tasks import load_task

    train = tmp_path / "train.tsv"
    lines = ["sentence\tlabel"] + [f'a "quoted" row {i}\t{i % 2}' for i in range(40)]
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = TaskConfig.model_validate(
        {
            "name": "sst2",
            "type": "classification",
            "train": {"path": str(train)},
            "validation": {"rows": 8},
            "text_fields": ["sentence"],
            "label_field": "label",
            "labels": ["negative", "positive"],
        }
    )
    task = load_task(config)
    path = write_validation_rows(task.config, task.validation, tmp_path / "validation")
    assert path is not None and path.name == "sst2.tsv"
    back = load_examples(config, config.train.model_copy(update={"path": path}))
    assert back.texts == task.validation.texts  # type: ignore[union-attr]
    assert back.labels == task.validation.labels  # type: ignore[union-attr]
    assert len(task.train) == 32
