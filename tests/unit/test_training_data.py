"""Readers: the shared datasets read correctly; malformed rows are reported with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.datasets import datasets_root
from trainer.errors import DataError
from trainer.training.config import DataSource, TaskConfig
from trainer.training.data import load_examples

DATASETS = datasets_root()  # the datasets shipped in the checkout


def task(path: Path, **kw: object) -> TaskConfig:
    fields: dict[str, object] = {
        "name": "t",
        "type": "classification",
        "train": {"path": str(path)},
        "text_fields": ["text"],
        "label_field": "label",
    }
    fields.update(kw)
    return TaskConfig.model_validate(fields)


def source(path: Path, **kw: object) -> DataSource:
    return DataSource.model_validate({"path": str(path), **kw})


def test_stsb_quoted_fields_are_read_with_a_csv_parser() -> None:
    path = DATASETS / "stsb" / "train.tsv"
    t = task(path, type="regression", text_fields=["sentence1", "sentence2"], label_field="score")
    examples = load_examples(t, t.train)
    assert len(examples) == 5749
    assert examples.skipped == 0
    quoted = [pair for pair in examples.texts if '"' in pair[0] or '"' in pair[1]]
    assert len(quoted) >= 200
    assert all("\t" not in text for pair in examples.texts for text in pair)
    assert examples.labels is not None
    assert min(examples.labels) >= 0.0 and max(examples.labels) <= 5.0


def test_trec_labels_are_class_names_in_sorted_order() -> None:
    t = task(DATASETS / "trec" / "train.tsv")
    examples = load_examples(t, t.train)
    assert examples.label_names == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert examples.labels is not None
    assert sum(1 for v in examples.labels if v == 0) == 76


def test_integer_labels_map_onto_configured_names(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\ngood\t1\nbad\t0\nfine\tpositive\n")
    t = task(path, labels=["negative", "positive"])
    examples = load_examples(t, t.train)
    assert examples.labels == [1, 0, 1]


def test_wrong_field_count_is_fatal_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\ngood\t1\nbad\t0\textra\nfine\t1\n")
    t = task(path)
    with pytest.raises(DataError, match=r"d\.tsv:3: expected 2 fields, found 3") as info:
        load_examples(t, t.train)
    assert info.value.line == 3


def test_malformed_rows_are_skipped_and_counted_when_configured(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\ngood\t1\nbad\t0\textra\n\t1\nfine\t0\n")
    t = task(path, train={"path": str(path), "on_error": "skip"})
    examples = load_examples(t, t.train)
    assert len(examples) == 2
    assert examples.skipped == 2
    assert examples.skipped_lines == [3, 4]


def test_line_numbers_count_physical_lines_after_a_multiline_quoted_field(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"two\nlines",1\nok,zzz\n')
    t = task(path, labels=["a", "b"])
    with pytest.raises(DataError, match=r"d\.csv:4: unknown label 'zzz'"):
        load_examples(t, t.train)


def test_regression_label_must_be_a_number(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\na\t1.5\nb\tnot-a-number\n")
    t = task(path, type="regression")
    with pytest.raises(DataError, match=r"d\.tsv:3: field 'label' must be a number"):
        load_examples(t, t.train)


def test_jsonl_reader_reports_invalid_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{oops\n')
    t = task(path)
    with pytest.raises(DataError, match=r"d\.jsonl:3: invalid JSON"):
        load_examples(t, t.train)
    skipping = task(path, train={"path": str(path), "on_error": "skip"})
    assert len(load_examples(skipping, skipping.train)) == 2


def test_missing_column_names_the_available_fields(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("sentence\tlabel\na\t1\n")
    t = task(path)
    with pytest.raises(DataError, match=r"missing field 'text'"):
        load_examples(t, t.train)


def test_min_pair_score_filters_training_pairs_but_not_dev(tmp_path: Path) -> None:
    path = tmp_path / "p.tsv"
    path.write_text("a\tb\tscore\nx\ty\t4.5\nx\tz\t1.0\n")
    t = task(
        path, type="pair_embedding", text_fields=["a", "b"], label_field="score", min_pair_score=3.0
    )
    assert len(load_examples(t, t.train)) == 1
    assert len(load_examples(t, source(path), for_training=False)) == 2


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    t = task(tmp_path / "nope.tsv")
    with pytest.raises(DataError, match="file not found"):
        load_examples(t, t.train)
