"""Generation through Triton: one ``stream_infer`` (tritonclient.grpc.aio) call per request to
the decoupled ``<model>``, its responses turned into :class:`~gateway.backend.GenerateChunk`.

The request stream stays open until the model's last response (FINISH_REASON set) arrives;
then, or when the caller stops reading (cancelled, deadline passed), the call is cancelled,
which makes Triton cancel the request and the model drop the sequence between two decode
steps. Errors (a response carrying one, or the call failing) become gateway errors through
:func:`gateway.triton_errors.translate_generation`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as tc

from gateway.backend import GenerateChunk, GenerationParams
from gateway.errors import BackendError, GatewayError
from gateway.triton_errors import translate_generation
from triton_models.runtime import contract as c

logger = logging.getLogger(__name__)


def _input(name: str, array: np.ndarray[Any, Any], datatype: str) -> tc.InferInput:
    tensor = tc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _strings(values: list[str]) -> np.ndarray[Any, Any]:
    return np.array([v.encode("utf-8") for v in values], dtype=np.object_)


def generation_inputs(
    prompt: str, params: GenerationParams, *, truncate: bool
) -> list[tc.InferInput]:
    """The contract's generation inputs for one request."""
    texts = [content for _, content in params.messages] or [prompt]
    inputs = [
        _input(c.INPUT_PROMPT, _strings(texts), "BYTES"),
        _input(c.INPUT_MAX_NEW_TOKENS, np.array([params.max_new_tokens], np.int32), "INT32"),
        _input(c.INPUT_TEMPERATURE, np.array([params.temperature], np.float32), "FP32"),
        _input(c.INPUT_TOP_P, np.array([params.top_p], np.float32), "FP32"),
        _input(c.INPUT_TOP_K, np.array([params.top_k], np.int32), "INT32"),
        _input(
            c.INPUT_REPETITION_PENALTY, np.array([params.repetition_penalty], np.float32), "FP32"
        ),
        _input(c.INPUT_USE_CHAT_TEMPLATE, np.array([params.use_chat_template], np.bool_), "BOOL"),
        _input(c.INPUT_TRUNCATE, np.array([truncate], np.bool_), "BOOL"),
    ]
    if params.seed is not None:
        inputs.append(_input(c.INPUT_SEED, np.array([params.seed], np.uint64), "UINT64"))
    if params.stop:
        inputs.append(_input(c.INPUT_STOP, _strings(list(params.stop)), "BYTES"))
    if params.messages:
        roles = [role for role, _ in params.messages]
        inputs.append(_input(c.INPUT_CHAT_ROLES, _strings(roles), "BYTES"))
    return inputs


def _text(result: Any, name: str) -> str:
    array = result.as_numpy(name)
    if array is None or array.size != 1:
        raise BackendError(f"a generation response has no {name}")
    value = array.reshape(-1)[0]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _count(result: Any, name: str) -> int:
    array = result.as_numpy(name)
    if array is None or array.size != 1:
        raise BackendError(f"a generation response has no {name}")
    return int(array.reshape(-1)[0])


def parse_response(result: Any) -> GenerateChunk:
    """One response of the generate model as a chunk."""
    reason = _text(result, c.OUTPUT_FINISH_REASON)
    if reason and reason not in c.FINISH_REASONS:
        raise BackendError(f"unknown finish reason {reason!r} from the generate model")
    return GenerateChunk(
        text=_text(result, c.OUTPUT_TEXT),
        finish_reason=reason or None,
        input_tokens=_count(result, c.OUTPUT_INPUT_TOKENS),
        output_tokens=_count(result, c.OUTPUT_OUTPUT_TOKENS),
        stop_sequence=_text(result, c.OUTPUT_STOP_SEQUENCE),
        version=str(result.get_response().model_version),
    )


async def stream_generation(
    client: tc.InferenceServerClient,
    model: str,
    version: str,
    inputs: list[tc.InferInput],
    *,
    url: str,
    timeout: float | None,
) -> AsyncGenerator[GenerateChunk, None]:
    """The chunks of one generation, ending with the one that has a finish reason."""
    finished = asyncio.Event()
    request_id = uuid.uuid4().hex

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {
            "model_name": model,
            "model_version": version,
            "inputs": inputs,
            "request_id": request_id,
        }
        await finished.wait()  # keep the stream open until the last response

    def failure(status: str | None, message: str) -> GatewayError:
        return translate_generation(status, message, url=url, model=model)

    responses = client.stream_infer(requests(), stream_timeout=timeout)
    try:
        while True:
            try:
                result, error = await responses.__anext__()
            except StopAsyncIteration:
                raise BackendError(
                    f"Triton closed the stream of {model!r} before its last response"
                ) from None
            except grpc.RpcError as exc:
                raise failure(str(exc.code()), str(exc.details() or exc)) from None
            if error is not None:
                raise failure(error.status(), error.message() or str(error))
            chunk = parse_response(result)
            yield chunk
            if chunk.finish_reason is not None:
                return
    finally:
        finished.set()
        if responses.cancel():
            logger.debug("generation %s on %s: stream cancelled", request_id, model)
