"""Reading lmforge models out of Triton model configs (pure: JSON in, typed values out).

What a logical model is (task, labels, dimension, max length, regression, text pairs) comes
from its ensemble's ``lmforge_*`` parameters; how its ``<name>_tokenize`` step tokenizes and
which tensors its ``<name>_encoder`` takes come from those models' configs. With the model
repository on a path the gateway can read, :func:`tokenizer_spec` finds the very
``tokenizer.json`` Triton uses and checks it against the SHA-256 the ensemble advertises, so a
gateway never tokenizes with a stale copy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.backend import ModelMetadata, TokenizerSpec
from gateway.errors import BackendError
from gateway.routing_config import Task
from triton_models.runtime import contract as c
from triton_models.runtime.text import parse_buckets

ModelConfigJson = dict[str, Any]


@dataclass(frozen=True)
class EncoderInfo:
    """What ``<name>_encoder`` takes and returns."""

    name: str
    inputs: tuple[str, ...]
    output: str
    max_batch_size: int


def string_params(config: ModelConfigJson) -> dict[str, str]:
    raw = config.get("parameters", {})
    return {key: str(value.get("string_value", "")) for key, value in raw.items()}


def parse_model_config(name: str, config: ModelConfigJson) -> tuple[ModelMetadata, int]:
    """``(metadata, max_batch_size)`` of an lmforge ensemble (or generate model) from its
    config as JSON."""
    params = {k: v for k, v in string_params(config).items() if v != ""}
    task = params.get(c.PARAM_TASK)
    if task == c.TASK_GENERATE:
        return parse_generate_config(name, config, params), int(config.get("max_batch_size", 0))
    if task not in (c.TASK_EMBED, c.TASK_CLASSIFY):
        raise BackendError(
            f"Triton model {name!r} has {c.PARAM_TASK}={task!r}; expected "
            f"{c.TASK_EMBED!r}, {c.TASK_CLASSIFY!r} or {c.TASK_GENERATE!r} (is it an lmforge "
            "model?)"
        )
    labels: tuple[str, ...] = ()
    dimension: int | None = None
    try:
        if task == c.TASK_CLASSIFY:
            raw = json.loads(params.get(c.PARAM_LABELS, "null"))
            if not isinstance(raw, list) or not raw:
                raise ValueError(f"{c.PARAM_LABELS} must be a non-empty JSON list")
            labels = tuple(str(label) for label in raw)
        else:
            dimension = int(params.get(c.PARAM_DIMENSION, ""))
        max_length = int(params[c.PARAM_MAX_LENGTH]) if c.PARAM_MAX_LENGTH in params else None
    except ValueError as exc:
        raise BackendError(f"Triton model {name!r} has bad lmforge parameters: {exc}") from exc
    resolved: Task = "classify" if task == c.TASK_CLASSIFY else "embed"
    problem = params.get(c.PARAM_PROBLEM_TYPE, c.PROBLEM_CLASSIFICATION)
    if problem not in c.PROBLEM_TYPES:
        raise BackendError(f"Triton model {name!r} has {c.PARAM_PROBLEM_TYPE}={problem!r}")
    meta = ModelMetadata(
        task=resolved,
        labels=labels,
        dimension=dimension,
        max_length=max_length,
        regression=problem == c.PROBLEM_REGRESSION,
        text_pairs=params.get(c.PARAM_TEXT_PAIRS, "false").lower() == "true",
    )
    return meta, int(config.get("max_batch_size", 0))


def parse_generate_config(
    name: str, config: ModelConfigJson, params: dict[str, str]
) -> ModelMetadata:
    """The metadata of a decoupled generate model; it must stream (be decoupled)."""
    policy = config.get("model_transaction_policy", {})
    if not policy.get("decoupled", False):
        raise BackendError(f"generate model {name!r} is not decoupled; it cannot stream")
    try:
        max_length = int(params[c.PARAM_MAX_LENGTH])
        max_new_tokens = int(params[c.PARAM_MAX_NEW_TOKENS])
    except (KeyError, ValueError) as exc:
        raise BackendError(f"Triton model {name!r} has bad lmforge parameters: {exc}") from exc
    return ModelMetadata(
        task="generate",
        max_length=max_length,
        max_new_tokens=max_new_tokens,
        chat_template=params.get(c.PARAM_CHAT_TEMPLATE, "false").lower() == "true",
    )


def parse_encoder_config(config: ModelConfigJson) -> EncoderInfo:
    """The encoder's token inputs (in config order) and its one output."""
    inputs = tuple(str(t["name"]) for t in config.get("input", []))
    outputs = [str(t["name"]) for t in config.get("output", [])]
    known = {c.INPUT_IDS, c.ATTENTION_MASK, c.TOKEN_TYPE_IDS}
    if not inputs or not set(inputs) <= known or len(outputs) != 1:
        raise BackendError(
            f"Triton model {config.get('name')!r} is not an lmforge encoder "
            f"(inputs {list(inputs)}, outputs {outputs})"
        )
    return EncoderInfo(
        str(config["name"]), inputs, outputs[0], int(config.get("max_batch_size", 0))
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def newest_version_dir(model_dir: Path) -> Path | None:
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def tokenizer_spec(
    repository: Path,
    model: str,
    ensemble: ModelConfigJson,
    tokenize: ModelConfigJson,
) -> TokenizerSpec:
    """The tokenizer ``<model>_tokenize`` uses, read from ``repository``; raises
    :class:`BackendError` when the file is missing or is not the one Triton serves."""
    params = string_params(tokenize)
    folder = repository / f"{model}{c.TOKENIZE_SUFFIX}"
    version = newest_version_dir(folder) if folder.is_dir() else None
    if version is None:
        raise BackendError(f"{folder} holds no version of the tokenizer model")
    path = version / (params.get(c.TOKENIZE_FILE) or c.TOKENIZER_FILE)
    if not path.is_file():
        raise BackendError(f"no tokenizer file at {path}")
    expected = string_params(ensemble).get(c.PARAM_TOKENIZER_SHA256, "")
    if not expected:
        raise BackendError(f"Triton model {model!r} advertises no {c.PARAM_TOKENIZER_SHA256}")
    actual = file_sha256(path)
    if actual != expected:
        raise BackendError(
            f"{path} (sha256 {actual[:12]}) is not the tokenizer Triton serves for {model!r} "
            f"(sha256 {expected[:12]})"
        )
    try:
        max_length = int(params[c.TOKENIZE_MAX_LENGTH])
        buckets = parse_buckets(params.get(c.TOKENIZE_BUCKETS, ""), max_length)
    except (KeyError, ValueError) as exc:
        raise BackendError(f"{model}{c.TOKENIZE_SUFFIX} has bad parameters: {exc}") from exc
    emit = params.get(c.TOKENIZE_EMIT_TOKEN_TYPE_IDS, "true").lower() == "true"
    return TokenizerSpec(path, max_length, buckets, emit)
