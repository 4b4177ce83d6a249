"""Readers for TSV/CSV/JSONL task files and their conversion into typed examples.

A malformed row is reported with its file and line; depending on the source's
``on_error`` it is either fatal (``DataError``) or skipped and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.datasets import Record, read_records
from trainer.errors import DataError
from trainer.training.config import DataSource, TaskConfig

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
