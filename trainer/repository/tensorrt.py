"""ONNX → TensorRT engine with one optimization profile per sequence-length bucket.

Needs the ``gpu`` extra (``tensorrt``) and a CUDA GPU; without them
:class:`TensorRTUnavailableError` says what is missing. The profile bounds come from
:func:`trainer.repository.pbtxt.tensorrt_profiles`, the same list that the encoder's
``config.pbtxt`` names in its ``instance_group.profile``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.repository.errors import ExportError, TensorRTUnavailableError

logger = logging.getLogger(__name__)


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTUnavailableError(
            "target 'tensorrt' needs TensorRT: pip install 'lmforge[gpu]' on a machine with an "
            "NVIDIA GPU and CUDA (or build with target 'onnxruntime' / 'cpu')"
        ) from exc
    return tensorrt


def _require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailableError(
            "target 'tensorrt' builds its engine on an NVIDIA GPU and none is visible "
            "(torch.cuda.is_available() is False)"
        )


def ensure_available() -> None:
    """Fail fast, before any export work, where an engine cannot be built."""
    _import_tensorrt()
    _require_cuda()


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    input_names: Sequence[str],
    profiles: Sequence[tuple[int, int]],
    max_batch_size: int,
    fp16: bool = True,
    workspace_bytes: int = 2 << 30,
) -> Path:
    """Build a serialized engine; profile ``i`` serves lengths ``profiles[i]``."""
    trt = _import_tensorrt()
    _require_cuda()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    opt_batch = max(1, max_batch_size // 2)
    for low, high in profiles:
        profile = builder.create_optimization_profile()
        for name in input_names:
            profile.set_shape(name, (1, low), (opt_batch, high), (max_batch_size, high))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path}")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    logger.info("built TensorRT engine %s with %d profiles", plan_path, len(profiles))
    return plan_path
