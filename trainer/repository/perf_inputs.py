"""perf_analyzer inputs written next to each model, so any built model is benchmarked at once.

For a logical model ``<name>`` the builder writes

* ``<name>/perf_analyzer_input.json``: real sentences (the spec's parity dataset, else the
  shipped SST-2 dev set, or STS-B dev pairs for a pair model) in perf_analyzer's
  ``--input-data`` format: one ``TEXT`` (and ``TEXT_PAIR``) string per request, ``TRUNCATE``
  true;
* ``<name>_encoder/perf_analyzer_input.json``: the same sentences tokenized exactly as the
  ``_tokenize`` model does, one row of token ids per request, for the encoder alone;
* ``<name>/perf_analyzer.sh``: the command line for both, run from the repository folder.

Triton ignores plain files in a model folder, so they travel with the repository.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from trainer.datasets import dataset_file, read_column
from trainer.repository.parity import parity_texts
from trainer.repository.pbtxt import EncoderSignature, encoder_name
from trainer.repository.spec import ModelSpec
from triton_models.runtime import contract
from triton_models.runtime.text import TextEncoder

PERF_INPUT_FILE = "perf_analyzer_input.json"
PERF_COMMAND_FILE = "perf_analyzer.sh"
DEFAULT_ROWS = 256


def perf_texts(
    spec: ModelSpec, text_pairs: bool, rows: int = DEFAULT_ROWS
) -> tuple[list[str], list[str] | None]:
    """Real sentences for load: the parity dataset when the spec names one, else the
    shipped SST-2 dev sentences (STS-B dev pairs for a pair model)."""
    if spec.parity.dataset is not None:
        texts, pairs = parity_texts(spec.parity, text_pairs)
        return texts[:rows], None if pairs is None else pairs[:rows]
    if text_pairs:
        path = dataset_file("stsb", "dev")
        return read_column(path, "sentence1", rows), read_column(path, "sentence2", rows)
    return read_column(dataset_file("sst2", "dev"), "sentence", rows), None


def _string(value: str) -> dict[str, Any]:
    return {"content": [value], "shape": [1]}


def ensemble_input_data(texts: list[str], pairs: list[str] | None) -> dict[str, Any]:
    data = []
    for i, text in enumerate(texts):
        row: dict[str, Any] = {contract.INPUT_TEXT: _string(text)}
        if pairs is not None:
            row[contract.INPUT_TEXT_PAIR] = _string(pairs[i])
        row[contract.INPUT_TRUNCATE] = {"content": [True], "shape": [1]}
        data.append(row)
    return {"data": data}


def encoder_input_data(
    encoder: TextEncoder, texts: list[str], pairs: list[str] | None, inputs: tuple[str, ...]
) -> dict[str, Any]:
    data = []
    for i, text in enumerate(texts):
        batch = encoder([text], [True], None if pairs is None else [pairs[i]])
        tensors = {
            contract.INPUT_IDS: batch.input_ids[0],
            contract.ATTENTION_MASK: batch.attention_mask[0],
            contract.TOKEN_TYPE_IDS: batch.token_type_ids[0],
        }
        data.append(
            {
                name: {"content": tensors[name].tolist(), "shape": [int(tensors[name].shape[0])]}
                for name in inputs
            }
        )
    return {"data": data}


def command_lines(spec: ModelSpec) -> str:
    lines = [
        "#!/bin/sh",
        "# perf_analyzer on this model and on its encoder alone; run from the repository folder.",
        "# TRITON_GRPC (default localhost:8001) and CONCURRENCY (default 1:16:4) override.",
    ]
    for model in (spec.name, encoder_name(spec)):
        argv = [
            "perf_analyzer",
            "-m",
            model,
            "-i",
            "grpc",
            "-b",
            "1",
            "--input-data",
            f"{model}/{PERF_INPUT_FILE}",
        ]
        lines.append(
            " ".join(shlex.quote(a) for a in argv)
            + ' -u "${TRITON_GRPC:-localhost:8001}"'
            + ' --concurrency-range "${CONCURRENCY:-1:16:4}"'
        )
    return "\n".join(lines) + "\n"


def write_perf_inputs(
    spec: ModelSpec, root: Path, signature: EncoderSignature, tokenizer_file: Path
) -> None:
    """Write both input files and the command lines under ``root`` (the staging repository)."""
    texts, pairs = perf_texts(spec, signature.text_pairs)
    encoder = TextEncoder.from_file(tokenizer_file, spec.max_length, spec.all_buckets)
    files = {
        root / spec.name / PERF_INPUT_FILE: ensemble_input_data(texts, pairs),
        root / encoder_name(spec) / PERF_INPUT_FILE: encoder_input_data(
            encoder, texts, pairs, signature.inputs
        ),
    }
    for path, data in files.items():
        path.write_text(json.dumps(data), encoding="utf-8")
    script = root / spec.name / PERF_COMMAND_FILE
    script.write_text(command_lines(spec), encoding="utf-8")
    script.chmod(0o755)
