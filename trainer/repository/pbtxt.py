"""Model spec → Triton ``config.pbtxt`` for the ensemble and its two composing models.

The configs are built as plain dicts (easy to read and test), then parsed into Triton's own
``ModelConfig`` message (``tritonclient.grpc.model_config_pb2``) with
``json_format.ParseDict``: an unknown field, a wrong type or a bad enum value fails there,
before anything is written. The message is rendered with ``text_format``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from trainer.errors import ModelConfigError
from trainer.repository.spec import ModelSpec
from triton_models.runtime import contract

ConfigDict = dict[str, Any]

_OUTPUT_OF_TASK = {
    contract.TASK_EMBED: contract.OUTPUT_EMBEDDING,
    contract.TASK_CLASSIFY: contract.OUTPUT_PROBS,
}


@dataclass(frozen=True)
class EncoderSignature:
    """What the exported encoder graph takes and returns."""

    inputs: tuple[str, ...]  # subset of input_ids / attention_mask / token_type_ids, in order
    output: str  # EMBEDDING or PROBS
    width: int  # embedding dimension or number of labels (1 for regression)
    text_pairs: bool = False  # the model reads a second text per row (cross-encoder)
    problem_type: str = contract.PROBLEM_CLASSIFICATION  # classify: or PROBLEM_REGRESSION

    @property
    def uses_token_type_ids(self) -> bool:
        return contract.TOKEN_TYPE_IDS in self.inputs


def output_name(task: str) -> str:
    return _OUTPUT_OF_TASK[task]


def tokenize_name(model: ModelSpec) -> str:
    return model.name + contract.TOKENIZE_SUFFIX


def encoder_name(model: ModelSpec) -> str:
    return model.name + contract.ENCODER_SUFFIX


def _params(values: dict[str, str]) -> dict[str, Any]:
    return {key: {"string_value": value} for key, value in values.items()}


def _with_dynamic_batching(config: ConfigDict, model: ModelSpec) -> ConfigDict:
    if model.dynamic_batching.enabled:
        config["dynamic_batching"] = _dynamic_batching(model)
    return config


def _dynamic_batching(model: ModelSpec) -> dict[str, Any]:
    batching: dict[str, Any] = {
        "max_queue_delay_microseconds": model.dynamic_batching.max_queue_delay_us
    }
    if model.dynamic_batching.preferred_batch_sizes:
        batching["preferred_batch_size"] = list(model.dynamic_batching.preferred_batch_sizes)
    return batching


def _token_tensors(names: tuple[str, ...], ragged: bool) -> list[dict[str, Any]]:
    tensors = []
    for name in names:
        tensor: dict[str, Any] = {"name": name, "data_type": "TYPE_INT64", "dims": [-1]}
        if ragged:
            tensor["allow_ragged_batch"] = True
        tensors.append(tensor)
    return tensors


def _text_inputs(signature: EncoderSignature) -> list[dict[str, Any]]:
    names = [contract.INPUT_TEXT]
    if signature.text_pairs:
        names.append(contract.INPUT_TEXT_PAIR)
    tensors: list[dict[str, Any]] = [
        {"name": name, "data_type": "TYPE_STRING", "dims": [1]} for name in names
    ]
    tensors.append({"name": contract.INPUT_TRUNCATE, "data_type": "TYPE_BOOL", "dims": [1]})
    return tensors


def tokenize_config(model: ModelSpec, signature: EncoderSignature) -> ConfigDict:
    outputs = _token_tensors(signature.inputs, ragged=False)
    outputs.append({"name": contract.OUTPUT_NUM_TOKENS, "data_type": "TYPE_INT32", "dims": [1]})
    return _with_dynamic_batching(
        {
            "name": tokenize_name(model),
            "backend": "python",
            "max_batch_size": model.max_batch_size,
            "input": _text_inputs(signature),
            "output": outputs,
            "instance_group": [{"kind": "KIND_CPU", "count": model.instances}],
            "parameters": _params(
                {
                    contract.TOKENIZE_MAX_LENGTH: str(model.max_length),
                    contract.TOKENIZE_BUCKETS: ",".join(str(b) for b in model.all_buckets)
                    or contract.EXACT_LENGTH,
                    contract.TOKENIZE_FILE: contract.TOKENIZER_FILE,
                    contract.TOKENIZE_EMIT_TOKEN_TYPE_IDS: str(
                        signature.uses_token_type_ids
                    ).lower(),
                }
            ),
        },
        model,
    )


def tensorrt_profiles(model: ModelSpec) -> list[tuple[int, int]]:
    """One optimization profile per bucket: (shortest, longest) sequence length it serves."""
    bounds = []
    low = 1
    for bucket in model.all_buckets:
        bounds.append((low, bucket))
        low = bucket + 1
    return bounds


def encoder_config(model: ModelSpec, signature: EncoderSignature) -> ConfigDict:
    config: ConfigDict = {
        "name": encoder_name(model),
        "max_batch_size": model.max_batch_size,
        "input": _token_tensors(signature.inputs, ragged=model.target == "cpu"),
        "output": [{"name": signature.output, "data_type": "TYPE_FP32", "dims": [signature.width]}],
    }
    _with_dynamic_batching(config, model)
    if model.target == "cpu":
        config["backend"] = "python"
        config["instance_group"] = [{"kind": "KIND_CPU", "count": model.instances}]
        config["parameters"] = _params(
            {
                contract.ENCODER_MODEL_FILE: "model.onnx",
                contract.ENCODER_INTRA_OP_THREADS: str(model.cpu_threads),
                contract.ENCODER_ROW_WISE: str(model.quantize.serves_row_wise).lower(),
            }
        )
    elif model.target == "onnxruntime":
        config["platform"] = "onnxruntime_onnx"
        config["default_model_filename"] = "model.onnx"
        config["instance_group"] = [{"kind": "KIND_AUTO", "count": model.instances}]
        if model.cpu_threads:
            config["parameters"] = _params({"intra_op_thread_count": str(model.cpu_threads)})
    else:  # tensorrt
        config["platform"] = "tensorrt_plan"
        config["default_model_filename"] = "model.plan"
        profiles = [str(i) for i in range(len(tensorrt_profiles(model)))]
        config["instance_group"] = [
            {"kind": "KIND_GPU", "count": model.instances, "profile": profiles}
        ]
    return config


def ensemble_config(
    model: ModelSpec,
    signature: EncoderSignature,
    labels: tuple[str, ...],
    tokenizer_sha256: str = "",
) -> ConfigDict:
    tokens = {name: f"_{name}" for name in signature.inputs}
    out = signature.output
    parameters = {
        contract.PARAM_TASK: model.task,
        contract.PARAM_MAX_LENGTH: str(model.max_length),
    }
    if model.task == contract.TASK_CLASSIFY:
        parameters[contract.PARAM_LABELS] = json.dumps(list(labels))
        parameters[contract.PARAM_PROBLEM_TYPE] = signature.problem_type
    else:
        parameters[contract.PARAM_DIMENSION] = str(signature.width)
    if signature.text_pairs:
        parameters[contract.PARAM_TEXT_PAIRS] = "true"
    if tokenizer_sha256:  # lets a gateway that reads the repository tokenize identically
        parameters[contract.PARAM_TOKENIZER_SHA256] = tokenizer_sha256
    text_map = {t["name"]: t["name"] for t in _text_inputs(signature)}
    return {
        "name": model.name,
        "platform": "ensemble",
        "max_batch_size": model.max_batch_size,
        "input": _text_inputs(signature),
        "output": [
            {"name": out, "data_type": "TYPE_FP32", "dims": [signature.width]},
            {"name": contract.OUTPUT_NUM_TOKENS, "data_type": "TYPE_INT32", "dims": [1]},
        ],
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": tokenize_name(model),
                    "model_version": -1,
                    "input_map": text_map,
                    "output_map": {
                        **tokens,
                        contract.OUTPUT_NUM_TOKENS: contract.OUTPUT_NUM_TOKENS,
                    },
                },
                {
                    "model_name": encoder_name(model),
                    "model_version": -1,
                    "input_map": tokens,
                    "output_map": {out: out},
                },
            ]
        },
        "parameters": _params(parameters),
    }


def to_model_config(config: ConfigDict) -> model_config_pb2.ModelConfig:
    """Parse a config dict into Triton's ``ModelConfig``; raise :class:`ModelConfigError`."""
    name = str(config.get("name", "<unnamed>"))
    try:
        message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    except json_format.ParseError as exc:
        raise ModelConfigError(name, str(exc)) from exc
    _check_semantics(message)
    return message


def _check_semantics(message: model_config_pb2.ModelConfig) -> None:
    """Rules Triton enforces at load time that the proto schema alone does not."""
    if not message.name:
        raise ModelConfigError("<unnamed>", "name is empty")
    if not message.backend and not message.platform:
        raise ModelConfigError(message.name, "neither backend nor platform is set")
    for tensor in [*message.input, *message.output]:
        if tensor.data_type == model_config_pb2.TYPE_INVALID:
            raise ModelConfigError(message.name, f"tensor {tensor.name!r} has no data_type")
        if not tensor.dims:
            raise ModelConfigError(message.name, f"tensor {tensor.name!r} has no dims")
    if message.platform == "ensemble":
        for i, step in enumerate(message.ensemble_scheduling.step):
            if not step.model_name:
                raise ModelConfigError(message.name, f"ensemble step {i} names no model")


def render(config: ConfigDict) -> str:
    """Validated ``config.pbtxt`` text for ``config``."""
    return text_format.MessageToString(to_model_config(config))


def check_ensemble_wiring(ensemble: ConfigDict, members: dict[str, ConfigDict]) -> None:
    """Every ensemble step maps existing tensors of its model, and every ensemble output is
    produced by some step."""
    name = ensemble["name"]
    available = {t["name"] for t in ensemble["input"]}
    for step in ensemble["ensemble_scheduling"]["step"]:
        member = members.get(step["model_name"])
        if member is None:
            raise ModelConfigError(
                name, f"step model {step['model_name']!r} is not in the repository"
            )
        member_inputs = {t["name"] for t in member["input"]}
        member_outputs = {t["name"] for t in member["output"]}
        for model_input, tensor in step["input_map"].items():
            if model_input not in member_inputs:
                raise ModelConfigError(name, f"{member['name']} has no input {model_input!r}")
            if tensor not in available:
                raise ModelConfigError(name, f"tensor {tensor!r} is used before it is produced")
        missing = member_inputs - set(step["input_map"])
        if missing:
            raise ModelConfigError(name, f"{member['name']} inputs {sorted(missing)} are not fed")
        for model_output, tensor in step["output_map"].items():
            if model_output not in member_outputs:
                raise ModelConfigError(name, f"{member['name']} has no output {model_output!r}")
            available.add(tensor)
    unproduced = {t["name"] for t in ensemble["output"]} - available
    if unproduced:
        raise ModelConfigError(name, f"ensemble outputs {sorted(unproduced)} are never produced")


def read_parameters(path: Path) -> dict[str, str]:
    """The ``parameters`` of a written ``config.pbtxt``, as strings."""
    message = text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    return {key: value.string_value for key, value in message.parameters.items()}
