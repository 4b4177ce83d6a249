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

from trainer.errors import ExportError, TensorRTUnavailableError
from trainer.repository.parity import (
    ParityReport,
    compare,
    enforce,
    parity_feeds,
    torch_runner,
)
from trainer.repository.spec import ModelSpec

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
    workspace_gb: float = 2.0,
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
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
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


def engine_runner(
    plan_path: Path, input_names: Sequence[str], profiles: Sequence[tuple[int, int]]
) -> Any:
    """A parity runner over a serialized engine: numpy feeds in, float32 output rows out.

    Picks the optimization profile whose length range holds the feed's sequence length, the
    same choice Triton makes for a request padded to that bucket.
    """
    import numpy as np
    import torch

    trt = _import_tensorrt()
    _require_cuda()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise ExportError(f"TensorRT cannot load the engine {plan_path}")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if len(outputs) != 1:
        raise ExportError(f"engine {plan_path} has outputs {outputs}; expected exactly one")
    torch_dtypes = {
        trt.DataType.INT64: torch.int64,
        trt.DataType.INT32: torch.int32,
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
    }
    stream = torch.cuda.Stream()

    def run(feeds: dict[str, Any]) -> Any:
        length = int(feeds[input_names[0]].shape[1])
        profile = next((i for i, (low, high) in enumerate(profiles) if low <= length <= high), None)
        if profile is None:
            raise ExportError(f"no optimization profile serves sequence length {length}")
        context.set_optimization_profile_async(profile, stream.cuda_stream)
        keep = []
        for name in input_names:
            dtype = torch_dtypes[engine.get_tensor_dtype(name)]
            tensor = torch.from_numpy(feeds[name]).to(device="cuda", dtype=dtype).contiguous()
            keep.append(tensor)
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        out_shape = tuple(context.get_tensor_shape(outputs[0]))
        out_dtype = torch_dtypes[engine.get_tensor_dtype(outputs[0])]
        result = torch.empty(out_shape, dtype=out_dtype, device="cuda")
        context.set_tensor_address(outputs[0], result.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise ExportError(f"TensorRT failed to run {plan_path}")
        stream.synchronize()
        return np.asarray(result.float().cpu().numpy(), dtype=np.float32)

    return run


def check_engine_parity(
    spec: ModelSpec,
    module: Any,
    input_names: Sequence[str],
    tokenizer_file: Path,
    plan_path: Path,
    profiles: Sequence[tuple[int, int]],
    text_pairs: bool = False,
) -> ParityReport:
    """PyTorch (CPU, FP32) vs the engine on the spec's parity sentences, gated by
    ``spec.tensorrt`` (its own tolerances: FP16 kernels); raises :class:`ExportParityError`."""
    batches = parity_feeds(spec, tokenizer_file, input_names, text_pairs)
    report = compare(
        torch_runner(module, input_names),
        engine_runner(plan_path, input_names, profiles),
        batches,
        spec.task,
    )
    gate = spec.tensorrt
    logger.info(
        "engine parity %s: %d rows, max |diff| %.2e (atol %.1e), min cosine %s (threshold %.6f)",
        spec.name,
        report.rows,
        report.max_abs_diff,
        gate.atol,
        report.min_cosine,
        gate.min_cosine,
    )
    enforce(report, gate.atol, gate.min_cosine, f"model {spec.name!r} (TensorRT engine vs PyTorch)")
    return report
