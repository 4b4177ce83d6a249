"""The datasets the project ships (``datasets/``: SST-2, STS-B, TREC) and the one reader of
TSV / CSV / JSONL task files.

Delimited files are read with :mod:`csv` (``QUOTE_MINIMAL``, strict), so STS-B's quoted
fields come out right; every row is yielded with its line number, and a malformed row is
yielded as a :class:`~trainer.errors.DataError` for the caller to skip or raise.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from trainer.errors import DataError
from trainer.settings import settings

Record = dict[str, Any]
Format = Literal["auto", "tsv", "csv", "jsonl"]
_SUFFIXES = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


def datasets_root() -> Path:
    """``$LMFORGE_DATASETS``, else the ``datasets/`` folder of this checkout."""
    return settings().datasets


def dataset_file(name: str, split: str) -> Path:
    """``<datasets root>/<name>/<split>.tsv``, which must exist (e.g. ``("sst2", "dev")``)."""
    path = datasets_root() / name / f"{split}.tsv"
    if not path.is_file():
        raise DataError(path, None, "dataset file not found (set LMFORGE_DATASETS?)")
    return path


def detect_format(path: Path, fmt: Format = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise DataError(path, None, f"cannot tell the format from {suffix!r}; set format")
    return _SUFFIXES[suffix]


def _read_delimited(path: Path, delimiter: str) -> Iterator[tuple[int, Record | DataError]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(path, 1, "empty file: a header line is required") from None
        if len(set(header)) != len(header):
            raise DataError(path, 1, f"duplicate column names in header {header}")
        line = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield line, DataError(path, line, f"unparsable row: {exc}")
                return  # the parser cannot resynchronise after a broken quote
            if row and len(row) != len(header):
                yield (
                    line,
                    DataError(path, line, f"expected {len(header)} fields, found {len(row)}"),
                )
            elif row:
                yield line, dict(zip(header, row, strict=True))
            line = reader.line_num + 1


def _read_jsonl(path: Path) -> Iterator[tuple[int, Record | DataError]]:
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line, DataError(path, line, f"invalid JSON: {exc.msg}")
                continue
            if not isinstance(value, dict):
                yield line, DataError(path, line, "each JSONL line must be an object")
                continue
            yield line, value


def read_records(path: Path, fmt: Format = "auto") -> Iterator[tuple[int, Record | DataError]]:
    """Yield ``(line, record)`` or ``(line, DataError)`` for each data row of a file."""
    if not path.is_file():
        raise DataError(path, None, "file not found")
    kind = detect_format(path, fmt)
    if kind == "jsonl":
        return _read_jsonl(path)
    return _read_delimited(path, "\t" if kind == "tsv" else ",")


def read_column(path: Path, column: str, limit: int | None = None) -> list[str]:
    """Non-empty values of one named column, in file order; malformed rows raise."""
    values: list[str] = []
    for line, record in read_records(path):
        if isinstance(record, DataError):
            raise record
        if column not in record:
            raise DataError(path, line, f"no column {column!r}; columns are {sorted(record)}")
        value = str(record[column])
        if value.strip():
            values.append(value)
            if limit is not None and len(values) >= limit:
                break
    return values
