"""Repository spec validation: strict keys, cross-field checks, path resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trainer.errors import SpecError
from trainer.repository.spec import load_spec, parse_spec


def _model(**overrides: Any) -> dict[str, Any]:
    model: dict[str, Any] = {"name": "minilm", "task": "embed", "checkpoint": "/ckpt"}
    model.update(overrides)
    return model


def test_minimal_spec_gets_defaults_and_max_length_as_last_bucket() -> None:
    spec = parse_spec({"models": [_model(max_length=256, buckets=[16, 64])]})
    model = spec.models[0]
    assert model.target == "cpu"
    assert model.quantize.method == "none"
    assert model.all_buckets == (16, 64, 256)


def test_unknown_key_is_an_error_naming_it() -> None:
    with pytest.raises(SpecError, match="max_len"):
        parse_spec({"models": [_model(max_len=3)]})


def test_unknown_nested_key_is_an_error() -> None:
    with pytest.raises(SpecError, match="parity"):
        parse_spec({"models": [_model(parity={"atol": 1e-4, "rtol": 1})]})


def test_bucket_longer_than_max_length_names_both_values() -> None:
    with pytest.raises(SpecError, match=r"buckets \[512\] exceed max_length 256"):
        parse_spec({"models": [_model(max_length=256, buckets=[16, 512])]})


def test_preferred_batch_size_above_max_batch_size_is_rejected() -> None:
    bad = _model(max_batch_size=8, dynamic_batching={"preferred_batch_sizes": [4, 16]})
    with pytest.raises(SpecError, match=r"\[16\] exceed max_batch_size 8"):
        parse_spec({"models": [bad]})


def test_bad_task_target_and_name_are_rejected() -> None:
    for bad in (_model(task="translate"), _model(target="gpu"), _model(name="Bad Name")):
        with pytest.raises(SpecError):
            parse_spec({"models": [bad]})


def test_duplicate_names_and_names_clashing_with_composing_models_are_rejected() -> None:
    with pytest.raises(SpecError, match="duplicate"):
        parse_spec({"models": [_model(), _model()]})
    with pytest.raises(SpecError, match="clash"):
        parse_spec({"models": [_model(name="a"), _model(name="a_encoder")]})


def test_quantize_accepts_shorthand_and_rejects_it_for_tensorrt() -> None:
    spec = parse_spec({"models": [_model(quantize="int8_dynamic")]})
    assert spec.models[0].quantize.method == "int8_dynamic"
    assert spec.models[0].quantize.per_channel
    with pytest.raises(SpecError, match="tensorrt"):
        parse_spec({"models": [_model(quantize="int8_dynamic", target="tensorrt")]})


def test_labels_only_for_classify() -> None:
    with pytest.raises(SpecError, match="labels"):
        parse_spec({"models": [_model(labels=["a", "b"])]})


def test_empty_models_list_is_rejected() -> None:
    with pytest.raises(SpecError, match="models"):
        parse_spec({"models": []})


def test_load_spec_resolves_paths_relative_to_the_file(tmp_path: Path) -> None:
    spec_file = tmp_path / "conf" / "repo.yaml"
    spec_file.parent.mkdir()
    spec_file.write_text(
        "models:\n"
        "  - name: m\n    task: classify\n    checkpoint: ../ckpt\n"
        "    parity: {dataset: {path: data/dev.tsv, column: sentence}}\n"
    )
    model = load_spec(spec_file).models[0]
    assert model.checkpoint == (tmp_path / "ckpt").resolve()
    assert model.parity.dataset is not None
    assert model.parity.dataset.path == (tmp_path / "conf" / "data" / "dev.tsv").resolve()


def test_load_spec_reports_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(SpecError, match="YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(scalar)
