"""The generate contract's responses and errors, built the same way by every generation
engine. ``pb_utils`` (Triton's ``triton_python_backend_utils``) is passed in: it exists only
inside the python backend's stub."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import contract


def triton_error(pb_utils: Any, message: str, code_name: str) -> Any:
    """A ``TritonError`` with the named code, where this Triton has codes."""
    code = getattr(pb_utils.TritonError, code_name, None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


def error_response(pb_utils: Any, message: str, code_name: str) -> Any:
    error = triton_error(pb_utils, message, code_name)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def refuse(pb_utils: Any, sender: Any, message: str, code_name: str) -> None:
    """Answer a request with an error as its final response."""
    final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    sender.send(error_response(pb_utils, message, code_name), flags=final)


def strings(*values: str) -> np.ndarray[Any, Any]:
    return np.array([v.encode("utf-8") for v in values], dtype=np.object_)


def generate_response(
    pb_utils: Any, text: str, reason: str, stop: str, input_tokens: int, output_tokens: int
) -> Any:
    """One response of the stream: new text, the finish reason ("" until the last), the stop
    string that ended it, and the token counts so far."""
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor(contract.OUTPUT_TEXT, strings(text)),
            pb_utils.Tensor(contract.OUTPUT_FINISH_REASON, strings(reason)),
            pb_utils.Tensor(contract.OUTPUT_STOP_SEQUENCE, strings(stop)),
            pb_utils.Tensor(contract.OUTPUT_INPUT_TOKENS, np.array([input_tokens], np.int32)),
            pb_utils.Tensor(contract.OUTPUT_OUTPUT_TOKENS, np.array([output_tokens], np.int32)),
        ]
    )


def caller_gone(*sides: Any) -> bool:
    """Whether the response sender or the request says the caller cancelled."""
    return any(bool(getattr(o, "is_cancelled", lambda: False)()) for o in sides)
