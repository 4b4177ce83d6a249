"""``<name>_encoder`` for the ``cpu`` target: an ONNX Runtime session inside Triton.

Every request of one ``execute()`` call (dynamic batching with ``allow_ragged_batch``, so
their lengths may differ) is right-padded to a common length, run in one
``session.run`` and split back per request. The graph's outputs (``EMBEDDING`` or
``PROBS``, pooling/softmax already inside the graph) are returned under their own names.

With ``contract.ENCODER_ROW_WISE`` ("true", set by the builder for dynamic INT8 graphs) every
row runs alone at its own length instead, so its scores do not depend on what it was batched
with (on a CPU a dynamic INT8 graph runs about as fast row by row as in batches).

Config ``parameters``: the ``contract.ENCODER_*`` names (model file, default ``model.onnx`` in
the version folder; intra-/inter-op threads, 0: ONNX Runtime decides; row-wise).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:  # a built repository ships the helpers next to this file
    from lmforge_runtime import contract
    from lmforge_runtime.params import string_parameters
    from lmforge_runtime.ragged import merge_requests, own_length_rows, split_rows
except ModuleNotFoundError:  # running from the source tree
    from triton_models.runtime import contract
    from triton_models.runtime.params import string_parameters
    from triton_models.runtime.ragged import merge_requests, own_length_rows, split_rows

logger = logging.getLogger(__name__)

_state = ort.capi.onnxruntime_pybind11_state
# ONNX Runtime's run-time errors derive from Exception directly; name the ones a bad batch raises.
_ORT_ERRORS: tuple[type[Exception], ...] = (
    _state.Fail,
    _state.InvalidArgument,
    _state.RuntimeException,
)
_BATCH_ERRORS: tuple[type[Exception], ...] = (ValueError, *_ORT_ERRORS)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = string_parameters(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        model_file = version_dir / params.get(contract.ENCODER_MODEL_FILE, "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get(contract.ENCODER_INTRA_OP_THREADS) or 0)
        options.inter_op_num_threads = int(params.get(contract.ENCODER_INTER_OP_THREADS) or 0)
        # idle intra-op threads spin for a while by default: on a few shared cores that burns
        # the CPU the gateway and Triton's own threads need
        spinning = params.get(contract.ENCODER_ALLOW_SPINNING, "false").lower() == "true"
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        options.add_session_config_entry(
            "session.inter_op.allow_spinning", "1" if spinning else "0"
        )
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.row_wise = params.get(contract.ENCODER_ROW_WISE, "false").lower() == "true"
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        logger.info(
            "encoder %s: inputs=%s outputs=%s", model_file, self.input_names, self.output_names
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        tensors: list[dict[str, np.ndarray]] = []
        for request in requests:
            tensors.append(
                {
                    name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                    for name in self.input_names
                }
            )
        try:
            merged, counts = merge_requests(tensors)
            values = self._run(merged)
        except _BATCH_ERRORS as exc:
            logger.exception("encoder batch failed")
            error = pb_utils.TritonError(f"encoder failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        per_request = split_rows(dict(zip(self.output_names, values, strict=True)), counts)
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(name, np.ascontiguousarray(value))
                    for name, value in outputs.items()
                ]
            )
            for outputs in per_request
        ]

    def _run(self, merged: dict[str, np.ndarray]) -> list[np.ndarray]:
        if not self.row_wise:
            return list(self.session.run(self.output_names, merged))
        rows = [
            self.session.run(self.output_names, feeds)
            for feeds in own_length_rows(merged, contract.ATTENTION_MASK)
        ]
        return [np.concatenate(parts) for parts in zip(*rows, strict=True)]

    def finalize(self) -> None:
        self.session = None
