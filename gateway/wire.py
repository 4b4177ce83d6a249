"""Protobuf (``lmforge.v1``) ↔ engine types, both ways: pure functions, no I/O.

The gRPC servicer (:mod:`gateway.service`) is these conversions around engine calls. Wire-only
rules live here: the truncation enum (``UNSPECIFIED``/``END`` cut, ``NONE`` refuses) and the
contract's finish reasons as proto enum values.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from google.protobuf import duration_pb2
from lmforge_client._proto.lmforge.v1 import (
    classify_pb2,
    common_pb2,
    embed_pb2,
    generate_pb2,
    models_pb2,
)
from lmforge_client.status import FieldViolation

from gateway.backend import GenerationParams
from gateway.engine_types import (
    Classifications,
    ClassifyRequest,
    Embeddings,
    EmbedRequest,
    GenerateRequest,
    GenerationChunk,
    ModelInfo,
    Routing,
    ServedBy,
)
from gateway.errors import InvalidInput
from triton_models.runtime import contract as c

KNOWN_TRUNCATIONS = frozenset(common_pb2.Truncation.values())
TASKS = {
    "embed": models_pb2.TASK_EMBED,
    "classify": models_pb2.TASK_CLASSIFY,
    "generate": models_pb2.TASK_GENERATE,
}
#: contract finish reasons → the proto enum
FINISH_REASONS: dict[str, generate_pb2.FinishReason.ValueType] = {
    c.FINISH_END_OF_SEQUENCE: generate_pb2.FINISH_REASON_END_OF_SEQUENCE,
    c.FINISH_STOP_SEQUENCE: generate_pb2.FINISH_REASON_STOP_SEQUENCE,
    c.FINISH_LENGTH: generate_pb2.FINISH_REASON_LENGTH,
    c.FINISH_CANCELLED: generate_pb2.FINISH_REASON_CANCELLED,
}


# -- requests ------------------------------------------------------------------------------
def check_truncation(truncation: int) -> list[FieldViolation]:
    if truncation not in KNOWN_TRUNCATIONS:
        return [FieldViolation("truncation", f"unknown value {truncation}")]
    return []


def truncate_flag(truncation: int) -> bool:
    """Whether inputs may be cut, for a truncation enum value (unknown: ``InvalidInput``)."""
    violations = check_truncation(truncation)
    if violations:
        raise InvalidInput.from_violations(violations)
    return bool(truncation != common_pb2.TRUNCATION_NONE)


def embed_request(
    request: embed_pb2.EmbedRequest, routing: Routing, caller: str | None, timeout: float | None
) -> EmbedRequest:
    return EmbedRequest(
        model=request.model,
        inputs=tuple(request.inputs),
        truncate=truncate_flag(request.truncation),
        dimensions=request.dimensions if request.HasField("dimensions") else None,
        normalize=request.normalize,
        routing=routing,
        caller=caller,
        timeout=timeout,
    )


def classify_request(
    request: classify_pb2.ClassifyRequest,
    routing: Routing,
    caller: str | None,
    timeout: float | None,
) -> ClassifyRequest:
    return ClassifyRequest(
        model=request.model,
        inputs=tuple(request.inputs),
        pairs=tuple(request.pairs),
        truncate=truncate_flag(request.truncation),
        top_k=request.top_k,
        routing=routing,
        caller=caller,
        timeout=timeout,
    )


def generation_params(
    parameters: generate_pb2.SamplingParameters,
    use_chat_template: bool,
    messages: Iterable[generate_pb2.ChatMessage] = (),
) -> GenerationParams:
    return GenerationParams(
        max_new_tokens=parameters.max_new_tokens,
        temperature=parameters.temperature,
        top_p=parameters.top_p,
        top_k=parameters.top_k,
        stop=tuple(parameters.stop),
        seed=parameters.seed if parameters.HasField("seed") else None,
        repetition_penalty=parameters.repetition_penalty,
        use_chat_template=use_chat_template,
        messages=tuple((m.role, m.content) for m in messages),
    )


def generate_request(
    request: generate_pb2.GenerateRequest | generate_pb2.GenerateStreamRequest,
    routing: Routing,
    caller: str | None,
    timeout: float | None,
) -> GenerateRequest:
    return GenerateRequest(
        model=request.model,
        prompt=request.prompt,
        params=generation_params(request.parameters, request.use_chat_template, request.messages),
        truncate=truncate_flag(request.truncation),
        routing=routing,
        caller=caller,
        timeout=timeout,
    )


# -- responses -----------------------------------------------------------------------------
def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(max(seconds, 0.0) * 1e9))
    return d


def timing(started: float, inference_seconds: float) -> common_pb2.Timing:
    """``started``: ``time.perf_counter()`` at receipt; the rest of the time was queueing,
    routing and validation."""
    total = time.perf_counter() - started
    inference = min(inference_seconds, total)
    return common_pb2.Timing(
        queue_time=duration(total - inference),
        inference_time=duration(inference),
        total_time=duration(total),
    )


def served_by(served: ServedBy) -> common_pb2.ServedBy:
    return common_pb2.ServedBy(
        model=served.model, triton_model=served.triton_model, triton_model_version=served.version
    )


def usage(input_tokens: int, output_tokens: int = 0) -> common_pb2.Usage:
    return common_pb2.Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
    )


def embed_response(result: Embeddings, started: float) -> embed_pb2.EmbedResponse:
    return embed_pb2.EmbedResponse(
        embeddings=[
            embed_pb2.Embedding(values=row.tolist(), input_tokens=tokens)
            for row, tokens in zip(result.vectors, result.input_tokens, strict=True)
        ],
        dimensions=int(result.vectors.shape[1]),
        served_by=served_by(result.served_by),
        usage=usage(int(sum(result.input_tokens))),
        timing=timing(started, result.run_seconds),
    )


def classify_response(result: Classifications, started: float) -> classify_pb2.ClassifyResponse:
    return classify_pb2.ClassifyResponse(
        results=[
            classify_pb2.Classification(
                labels=[classify_pb2.LabelScore(label=k, score=v) for k, v in r.labels],
                input_tokens=r.input_tokens,
                served_by=served_by(r.served_by),
            )
            for r in result.results
        ],
        served_by=served_by(result.served_by),
        usage=usage(sum(r.input_tokens for r in result.results)),
        timing=timing(started, result.run_seconds),
    )


def finish_reason(chunk: GenerationChunk) -> generate_pb2.FinishReason.ValueType:
    if chunk.finish_reason is None:
        return generate_pb2.FINISH_REASON_UNSPECIFIED
    return FINISH_REASONS[chunk.finish_reason]


def last_message_fields(chunk: GenerationChunk, started: float) -> dict[str, Any]:
    """The fields of a generation's last message (either RPC): finish reason, stop sequence,
    usage and timing."""
    return {
        "finish_reason": finish_reason(chunk),
        "stop_sequence": chunk.stop_sequence,
        "usage": usage(chunk.input_tokens, chunk.output_tokens),
        "timing": timing(started, chunk.backend_seconds),
    }


def model_info(info: ModelInfo) -> models_pb2.ModelInfo:
    return models_pb2.ModelInfo(
        name=info.name,
        task=TASKS[info.task],
        routing=info.routing,
        triton_model=info.triton_model,
        triton_model_version=info.triton_model_version,
        labels=info.labels,
        dimension=info.dimension,
        max_input_tokens=info.max_input_tokens,
        regression=info.regression,
        text_pairs=info.text_pairs,
        ready=info.ready,
        deployments=[
            models_pb2.DeploymentStatus(
                name=d.name,
                endpoint=d.endpoint,
                triton_model=d.triton_model,
                triton_model_version=d.triton_model_version,
                breaker=d.breaker,
                split_weight=d.split_weight,
                shadow=d.shadow,
                queued_inputs=d.queued_inputs,
                gateway_tokenizes=d.gateway_tokenizes,
                ready=d.ready,
            )
            for d in info.deployments
        ],
    )
