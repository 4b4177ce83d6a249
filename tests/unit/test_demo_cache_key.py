"""The demo sentiment model's cache key depends on what the run reads, not on where it lies."""

from __future__ import annotations

import shutil
from pathlib import Path

from trainer.repository.demo import content_digest, run_key
from trainer.training.config import load_config

CONFIG = """\
model:
  pretrained: weights
  max_length: 64
tasks:
  - name: sentiment
    type: classification
    train: {path: data/train.tsv}
    dev: {path: data/dev.tsv}
    text_fields: [sentence]
    label_field: label
    labels: [negative, positive]
training: {max_steps: 5}
output_dir: runs/demo
seed: 13
"""


def _checkout(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    (root / "data" / "dev.tsv").write_text("sentence\tlabel\nfine\t1\n")
    (root / "weights" / "1_Pooling").mkdir(parents=True)
    (root / "weights" / "model.safetensors").write_bytes(b"\x00weights")
    (root / "weights" / "1_Pooling" / "config.json").write_text("{}")
    config = root / "demo.yaml"
    config.write_text(CONFIG)
    return config


def test_same_config_and_data_in_two_folders_give_the_same_key(tmp_path: Path) -> None:
    first = load_config(_checkout(tmp_path / "clone-a"))
    second = load_config(_checkout(tmp_path / "elsewhere" / "clone-b"))
    assert first.tasks[0].train.path != second.tasks[0].train.path  # absolute, different
    assert run_key(first) == run_key(second)


def test_changed_data_or_weights_or_settings_give_another_key(tmp_path: Path) -> None:
    config = _checkout(tmp_path / "clone")
    before = run_key(load_config(config))
    (tmp_path / "clone" / "data" / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t1\n")
    after_data = run_key(load_config(config))
    assert after_data != before
    (tmp_path / "clone" / "weights" / "1_Pooling" / "config.json").write_text('{"mean": 1}')
    after_weights = run_key(load_config(config))
    assert after_weights != after_data
    config.write_text(CONFIG.replace("seed: 13", "seed: 14"))
    assert run_key(load_config(config)) != after_weights


def test_a_folder_digest_covers_file_names_and_skips_bytecode_caches(tmp_path: Path) -> None:
    _checkout(tmp_path / "a")
    weights = tmp_path / "a" / "weights"
    digest = content_digest(weights)
    (weights / "__pycache__").mkdir()
    (weights / "__pycache__" / "x.pyc").write_bytes(b"\x01")
    assert content_digest(weights) == digest
    shutil.move(weights / "model.safetensors", weights / "renamed.safetensors")
    assert content_digest(weights) != digest
    assert content_digest(tmp_path / "nothing") == "missing"
