"""config.pbtxt generation, checked against Triton's model_config.proto."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from trainer.errors import ModelConfigError
from trainer.repository import pbtxt
from trainer.repository.pbtxt import EncoderSignature
from trainer.repository.spec import DynamicBatching, ModelSpec, parse_spec
from triton_models.runtime import contract

BERT_INPUTS = (contract.INPUT_IDS, contract.ATTENTION_MASK, contract.TOKEN_TYPE_IDS)


def _spec(**overrides: Any) -> ModelSpec:
    model: dict[str, Any] = {
        "name": "demo",
        "task": "embed",
        "checkpoint": "/ckpt",
        "max_length": 128,
        "buckets": [16, 32, 64],
    }
    model.update(overrides)
    return parse_spec({"models": [model]}).models[0]


def _embed_signature() -> EncoderSignature:
    return EncoderSignature(inputs=BERT_INPUTS, output=contract.OUTPUT_EMBEDDING, width=384)


def _parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_rendered_configs_round_trip_through_model_config_proto() -> None:
    spec, sig = _spec(), _embed_signature()
    for config in (
        pbtxt.tokenize_config(spec, sig),
        pbtxt.encoder_config(spec, sig),
        pbtxt.ensemble_config(spec, sig, ()),
    ):
        message = _parse(pbtxt.render(config))
        assert message.name == config["name"]


def test_bad_data_type_is_rejected_before_writing() -> None:
    config = pbtxt.tokenize_config(_spec(), _embed_signature())
    config["input"][0]["data_type"] = "TYPE_TEXT"
    with pytest.raises(ModelConfigError, match="demo_tokenize"):
        pbtxt.render(config)


def test_unknown_field_is_rejected() -> None:
    config = pbtxt.encoder_config(_spec(), _embed_signature())
    config["max_batch"] = 4
    with pytest.raises(ModelConfigError, match="max_batch"):
        pbtxt.render(config)


def test_dynamic_batching_can_be_switched_off_and_the_config_still_validates() -> None:
    spec = _spec().model_copy(update={"dynamic_batching": DynamicBatching(enabled=False)})
    config = pbtxt.encoder_config(spec, _embed_signature())
    assert "dynamic_batching" not in config
    assert "dynamic_batching" in pbtxt.encoder_config(_spec(), _embed_signature())
    message = pbtxt.to_model_config(config)
    assert not message.HasField("dynamic_batching") and message.max_batch_size > 0


def test_composing_models_batch_dynamically_with_the_spec_settings() -> None:
    spec = _spec(
        max_batch_size=16,
        dynamic_batching={"max_queue_delay_us": 500, "preferred_batch_sizes": [4, 16]},
    )
    for config in (
        pbtxt.tokenize_config(spec, _embed_signature()),
        pbtxt.encoder_config(spec, _embed_signature()),
    ):
        message = _parse(pbtxt.render(config))
        assert message.max_batch_size == 16
        assert message.dynamic_batching.max_queue_delay_microseconds == 500
        assert list(message.dynamic_batching.preferred_batch_size) == [4, 16]


def test_ensemble_follows_the_contract_and_wires_tokenizer_into_encoder() -> None:
    spec, sig = _spec(), _embed_signature()
    ensemble = pbtxt.ensemble_config(spec, sig, ())
    members = {
        "demo_tokenize": pbtxt.tokenize_config(spec, sig),
        "demo_encoder": pbtxt.encoder_config(spec, sig),
    }
    pbtxt.check_ensemble_wiring(ensemble, members)
    message = _parse(pbtxt.render(ensemble))
    assert message.platform == "ensemble"
    assert [(t.name, t.data_type) for t in message.input] == [
        (contract.INPUT_TEXT, model_config_pb2.TYPE_STRING),
        (contract.INPUT_TRUNCATE, model_config_pb2.TYPE_BOOL),
    ]
    assert [(t.name, list(t.dims)) for t in message.output] == [
        (contract.OUTPUT_EMBEDDING, [384]),
        (contract.OUTPUT_NUM_TOKENS, [1]),
    ]
    steps = message.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["demo_tokenize", "demo_encoder"]
    assert dict(steps[1].input_map) == {n: dict(steps[0].output_map)[n] for n in BERT_INPUTS}
    params = {k: v.string_value for k, v in message.parameters.items()}
    assert params == {
        contract.PARAM_TASK: "embed",
        contract.PARAM_DIMENSION: "384",
        contract.PARAM_MAX_LENGTH: "128",
    }


def test_classify_ensemble_carries_labels_as_json() -> None:
    spec = _spec(task="classify")
    sig = EncoderSignature(inputs=BERT_INPUTS, output=contract.OUTPUT_PROBS, width=2)
    message = _parse(pbtxt.render(pbtxt.ensemble_config(spec, sig, ("negative", "positive"))))
    params = {k: v.string_value for k, v in message.parameters.items()}
    assert json.loads(params[contract.PARAM_LABELS]) == ["negative", "positive"]
    assert contract.PARAM_DIMENSION not in params
    assert message.output[0].name == contract.OUTPUT_PROBS


def test_wiring_check_catches_a_tensor_the_tokenizer_does_not_emit() -> None:
    spec = _spec()
    sig = _embed_signature()
    no_types = EncoderSignature(inputs=BERT_INPUTS[:2], output=sig.output, width=sig.width)
    members = {
        "demo_tokenize": pbtxt.tokenize_config(spec, no_types),
        "demo_encoder": pbtxt.encoder_config(spec, sig),
    }
    with pytest.raises(ModelConfigError, match="token_type_ids"):
        pbtxt.check_ensemble_wiring(pbtxt.ensemble_config(spec, sig, ()), members)


def test_tokenizer_config_names_buckets_and_token_type_policy() -> None:
    message = _parse(pbtxt.render(pbtxt.tokenize_config(_spec(), _embed_signature())))
    params = {k: v.string_value for k, v in message.parameters.items()}
    assert params["buckets"] == "16,32,64,128"
    assert params["max_length"] == "128"
    assert params["emit_token_type_ids"] == "true"
    assert message.backend == "python"
    assert [o.name for o in message.output][-1] == contract.OUTPUT_NUM_TOKENS


def test_cpu_encoder_is_a_python_model_with_ragged_inputs() -> None:
    message = _parse(pbtxt.render(pbtxt.encoder_config(_spec(cpu_threads=2), _embed_signature())))
    assert message.backend == "python"
    assert all(i.allow_ragged_batch for i in message.input)
    assert message.parameters["intra_op_threads"].string_value == "2"


def test_onnxruntime_encoder_uses_the_onnx_platform() -> None:
    message = _parse(
        pbtxt.render(pbtxt.encoder_config(_spec(target="onnxruntime"), _embed_signature()))
    )
    assert message.platform == "onnxruntime_onnx"
    assert not message.backend
    assert message.default_model_filename == "model.onnx"


def test_tensorrt_encoder_has_one_profile_per_bucket() -> None:
    spec = _spec(target="tensorrt")
    message = _parse(pbtxt.render(pbtxt.encoder_config(spec, _embed_signature())))
    assert message.platform == "tensorrt_plan"
    assert list(message.instance_group[0].profile) == ["0", "1", "2", "3"]
    assert message.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert pbtxt.tensorrt_profiles(spec) == [(1, 16), (17, 32), (33, 64), (65, 128)]


@pytest.mark.parametrize(
    ("quantize", "row_wise"),
    [
        ({"method": "int8_dynamic"}, "true"),  # per-batch activation scales: rows run alone
        ({"method": "int8_static"}, "false"),
        ({"method": "none"}, "false"),
        ({"method": "int8_dynamic", "row_wise": False}, "false"),
        ({"method": "none", "row_wise": True}, "true"),
    ],
)
def test_dynamic_int8_encoders_run_row_wise_unless_told_otherwise(
    quantize: dict[str, Any], row_wise: str, tmp_path: Any
) -> None:
    text = pbtxt.render(pbtxt.encoder_config(_spec(quantize=quantize), _embed_signature()))
    assert _parse(text).parameters[contract.ENCODER_ROW_WISE].string_value == row_wise
    (tmp_path / "config.pbtxt").write_text(text)
    assert pbtxt.read_parameters(tmp_path / "config.pbtxt")[contract.ENCODER_ROW_WISE] == row_wise
