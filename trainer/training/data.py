"""Readers for TSV/CSV/JSONL task files and their conversion into typed examples.

A malformed row is reported with its file and line; depending on the source's
``on_error`` it is either fatal (``DataError``) or skipped and counted.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.datasets import Record, read_records
from trainer.errors import ConfigError, DataError
from trainer.training.config import DataSource, TaskConfig, ValidationSplit

logger = logging.getLogger(__name__)
_MAX_LOGGED_SKIPS = 5


@dataclass
class Examples:
    """The rows of one task file: texts (1 or 2 per row) and an optional label per row."""

    path: str
    texts: list[tuple[str, ...]]
    labels: list[int] | list[float] | None
    label_names: list[str] | None = None
    skipped: int = 0
    skipped_lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


def _text(record: Record, name: str, path: Path, line: int) -> str:
    if name not in record:
        raise DataError(path, line, f"missing field {name!r}; fields are {sorted(record)}")
    value = record[name]
    if not isinstance(value, str) or not value.strip():
        raise DataError(path, line, f"field {name!r} must be a non-empty string, got {value!r}")
    return value


def _class_index(raw: Any, names: list[str] | None, path: Path, line: int) -> str | int:
    value = str(raw).strip()
    if names is None:
        return value
    if value in names:
        return names.index(value)
    if value.isdigit() and int(value) < len(names):
        return int(value)
    raise DataError(path, line, f"unknown label {value!r}; expected one of {names}")


def _float(raw: Any, name: str, path: Path, line: int) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise DataError(path, line, f"field {name!r} must be a number, got {raw!r}") from None
    if value != value:  # NaN
        raise DataError(path, line, f"field {name!r} is NaN")
    return value


def load_examples(
    task: TaskConfig,
    source: DataSource,
    label_names: list[str] | None = None,
    *,
    for_training: bool = True,
) -> Examples:
    """Read one file of a task. ``label_names`` fixes the class order (the train file's).

    ``min_pair_score`` (pair embedding) filters training pairs only; dev keeps every pair so
    that similarity can be correlated with the gold score.
    """
    names = label_names if label_names is not None else task.labels
    texts: list[tuple[str, ...]] = []
    raw_labels: list[Any] = []
    skipped: list[int] = []
    for line, item in read_records(source.path, source.format):
        try:
            if isinstance(item, DataError):
                raise item
            row_texts = tuple(_text(item, f, source.path, line) for f in task.text_fields)
            label: Any = None
            if task.label_field is not None:
                if task.label_field not in item:
                    raise DataError(source.path, line, f"missing label field {task.label_field!r}")
                raw = item[task.label_field]
                if task.type == "classification":
                    label = _class_index(raw, names, source.path, line)
                else:
                    label = _float(raw, task.label_field, source.path, line)
        except DataError as exc:
            if source.on_error == "fail":
                raise
            if len(skipped) < _MAX_LOGGED_SKIPS:
                logger.warning("skipping malformed row: %s", exc)
            skipped.append(line)
            continue
        if (
            for_training
            and task.min_pair_score is not None
            and label is not None
            and label < task.min_pair_score
        ):
            continue
        texts.append(row_texts)
        raw_labels.append(label)
        if source.max_rows is not None and len(texts) >= source.max_rows:
            break
    if skipped:
        logger.warning("%s: skipped %d malformed rows", source.path, len(skipped))
    if not texts:
        raise DataError(source.path, None, "no usable rows")
    labels: list[int] | list[float] | None = None
    if task.type == "classification":
        if names is None:
            names = sorted({str(v) for v in raw_labels})
            labels = [names.index(str(v)) for v in raw_labels]
        else:
            labels = [int(v) for v in raw_labels]
        if len(names) < 2:
            raise DataError(source.path, None, f"classification needs 2+ classes, found {names}")
    elif task.label_field is not None:
        labels = [float(v) for v in raw_labels]
    return Examples(
        path=str(source.path),
        texts=texts,
        labels=labels,
        label_names=names if task.type == "classification" else None,
        skipped=len(skipped),
        skipped_lines=skipped,
    )


def _subset(examples: Examples, indices: np.ndarray, suffix: str) -> Examples:
    labels = examples.labels
    return Examples(
        path=f"{examples.path}{suffix}",
        texts=[examples.texts[i] for i in indices],
        labels=[labels[i] for i in indices] if labels is not None else None,  # type: ignore[misc]
        label_names=examples.label_names,
    )


def split_validation(
    train: Examples, split: ValidationSplit, *, stratify: bool
) -> tuple[Examples, Examples]:
    """``(train without the held-out rows, the held-out rows)``: a seeded random split, by
    label when ``stratify`` (each class keeps its share, and at least one row of a class with
    two or more). The order of the remaining training rows is unchanged."""
    n = len(train)
    size = split.rows if split.rows is not None else round(n * (split.fraction or 0.0))
    if size < 1 or size > n // 2:
        raise ConfigError(
            f"{train.path}: a validation split of {size} rows out of {n} training rows; "
            "it must hold at least one row and at most half of them"
        )
    rng = np.random.default_rng(split.seed)
    if stratify and train.labels is not None:
        labels = np.asarray(train.labels, dtype=np.int64)
        classes, counts = np.unique(labels, return_counts=True)
        quota = np.floor(counts * size / n).astype(np.int64)
        quota[(quota == 0) & (counts >= 2)] = 1
        rest = size - int(quota.sum())  # rounding: the largest remainders take the rest
        if rest > 0:
            remainder = counts * size / n - np.floor(counts * size / n)
            for c in np.argsort(-remainder, kind="stable")[:rest]:
                quota[c] += 1
        for _ in range(-rest):  # the one-row minimums overshot: the largest classes give back
            quota[int(np.argmax(quota))] -= 1
        chosen = [
            rng.permutation(np.flatnonzero(labels == cls))[: int(q)]
            for cls, q in zip(classes, quota, strict=True)
        ]
        held = np.sort(np.concatenate(chosen))
    else:
        held = np.sort(rng.permutation(n)[:size])
    keep = np.setdiff1d(np.arange(n), held, assume_unique=True)
    return _subset(train, keep, ""), _subset(train, held, "#validation")


def write_validation_rows(task: TaskConfig, rows: Examples | None, folder: Path) -> Path | None:
    """``folder/<task>.tsv``: the rows held out for selection, with the training file's column
    names (labels by name), so that later choices (an INT8 gate, a cascade threshold) can be
    made on them too and dev stays unseen."""
    if rows is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task.name}.tsv"
    columns = list(task.text_fields)
    if task.label_field is not None and rows.labels is not None:
        columns.append(task.label_field)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(columns)
        for i, texts in enumerate(rows.texts):
            label: list[Any] = []
            if len(columns) > len(texts) and rows.labels is not None:
                value = rows.labels[i]
                names = rows.label_names
                label = [names[int(value)] if names else value]
            writer.writerow([*texts, *label])
    return path
