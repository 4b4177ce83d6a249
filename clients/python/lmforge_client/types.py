"""Plain result types of the Python client and their conversion from/to the proto messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import grpc
from grpc_status import rpc_status

from lmforge_client._proto.lmforge.v1 import (
    classify_pb2,
    common_pb2,
    embed_pb2,
    generate_pb2,
    models_pb2,
)
from lmforge_client.metadata import PIN_METADATA_KEY, ROUTING_KEY_METADATA_KEY
from lmforge_client.status import FieldViolation, field_violations

TRUNCATIONS = {
    "unspecified": common_pb2.TRUNCATION_UNSPECIFIED,
    "end": common_pb2.TRUNCATION_END,
    "none": common_pb2.TRUNCATION_NONE,
}
_TASK_NAMES = {
    models_pb2.TASK_EMBED: "embed",
    models_pb2.TASK_CLASSIFY: "classify",
    models_pb2.TASK_GENERATE: "generate",
}


class LmforgeError(Exception):
    """A failed call: the gRPC code, the server's message and any field violations."""

    def __init__(
        self, code: grpc.StatusCode, message: str, violations: Sequence[FieldViolation] = ()
    ) -> None:
        self.code = code
        self.message = message
        self.violations = tuple(violations)
        text = f"{code.name}: {message}"
        if self.violations:
            text += " [" + "; ".join(f"{v.field}: {v.description}" for v in self.violations) + "]"
        super().__init__(text)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> LmforgeError:
        code: grpc.StatusCode = error.code()
        message = str(error.details() or "")
        violations: list[FieldViolation] = []
        try:
            status = rpc_status.from_call(error)
        except ValueError:  # details that disagree with the code; keep the plain status
            status = None
        if status is not None:
            violations = field_violations(status)
        return cls(code, message, violations)


@dataclass(frozen=True)
class ServedBy:
    model: str
    triton_model: str
    triton_model_version: str


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class Timing:
    """Seconds."""

    queue: float
    inference: float
    total: float


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True)
class Classification:
    labels: tuple[LabelScore, ...]  # descending score
    input_tokens: int
    served_by: ServedBy  # per input: a cascade may answer inputs with different models

    @property
    def top(self) -> LabelScore:
        return self.labels[0]


@dataclass(frozen=True)
class ClassifyReply:
    results: tuple[Classification, ...]
    served_by: ServedBy
    usage: Usage
    timing: Timing


@dataclass(frozen=True)
class EmbedReply:
    embeddings: tuple[tuple[float, ...], ...]
    input_tokens: tuple[int, ...]
    dimensions: int
    served_by: ServedBy
    usage: Usage
    timing: Timing


@dataclass(frozen=True)
class ModelDescription:
    name: str
    task: str
    ready: bool
    triton_model: str
    triton_model_version: str
    labels: tuple[str, ...]
    dimension: int
    max_input_tokens: int
    regression: bool = False
    text_pairs: bool = False
    routing: str = "single"
    deployments: tuple[DeploymentDescription, ...] = ()


@dataclass(frozen=True)
class DeploymentDescription:
    name: str
    endpoint: str
    triton_model: str
    triton_model_version: str
    ready: bool
    breaker: str
    split_weight: float
    shadow: bool
    queued_inputs: int
    gateway_tokenizes: bool


def truncation_value(truncation: str | int) -> common_pb2.Truncation.ValueType:
    if isinstance(truncation, int):
        return common_pb2.Truncation.ValueType(truncation)
    try:
        return TRUNCATIONS[truncation.lower()]
    except KeyError:
        raise ValueError(
            f"truncation must be one of {sorted(TRUNCATIONS)}, got {truncation!r}"
        ) from None


def routing_metadata(
    routing_key: str | None, deployment: str | None
) -> tuple[tuple[str, str], ...] | None:
    """gRPC metadata that keeps a caller on one split arm (``routing_key``) or pins a
    deployment by name (``deployment``)."""
    pairs = []
    if routing_key is not None:
        pairs.append((ROUTING_KEY_METADATA_KEY, routing_key))
    if deployment is not None:
        pairs.append((PIN_METADATA_KEY, deployment))
    return tuple(pairs) or None


def classify_request(
    model: str,
    inputs: Sequence[str],
    top_k: int,
    truncation: str | int,
    pairs: Sequence[str] = (),
) -> classify_pb2.ClassifyRequest:
    return classify_pb2.ClassifyRequest(
        model=model,
        inputs=list(inputs),
        top_k=top_k,
        truncation=truncation_value(truncation),
        pairs=list(pairs),
    )


def embed_request(
    model: str,
    inputs: Sequence[str],
    normalize: bool,
    dimensions: int | None,
    truncation: str | int,
) -> embed_pb2.EmbedRequest:
    request = embed_pb2.EmbedRequest(
        model=model,
        inputs=list(inputs),
        normalize=normalize,
        truncation=truncation_value(truncation),
    )
    if dimensions is not None:
        request.dimensions = dimensions
    return request


def _served_by(msg: common_pb2.ServedBy) -> ServedBy:
    return ServedBy(msg.model, msg.triton_model, msg.triton_model_version)


def _usage(msg: common_pb2.Usage) -> Usage:
    return Usage(msg.input_tokens, msg.output_tokens, msg.total_tokens)


def _timing(msg: common_pb2.Timing) -> Timing:
    return Timing(
        msg.queue_time.ToNanoseconds() / 1e9,
        msg.inference_time.ToNanoseconds() / 1e9,
        msg.total_time.ToNanoseconds() / 1e9,
    )


def classify_reply(msg: classify_pb2.ClassifyResponse) -> ClassifyReply:
    return ClassifyReply(
        results=tuple(
            Classification(
                tuple(LabelScore(s.label, s.score) for s in r.labels),
                r.input_tokens,
                _served_by(r.served_by),
            )
            for r in msg.results
        ),
        served_by=_served_by(msg.served_by),
        usage=_usage(msg.usage),
        timing=_timing(msg.timing),
    )


def embed_reply(msg: embed_pb2.EmbedResponse) -> EmbedReply:
    return EmbedReply(
        embeddings=tuple(tuple(e.values) for e in msg.embeddings),
        input_tokens=tuple(e.input_tokens for e in msg.embeddings),
        dimensions=msg.dimensions,
        served_by=_served_by(msg.served_by),
        usage=_usage(msg.usage),
        timing=_timing(msg.timing),
    )


def model_descriptions(msg: models_pb2.ListModelsResponse) -> list[ModelDescription]:
    return [
        ModelDescription(
            name=m.name,
            task=_TASK_NAMES.get(m.task, "unspecified"),
            ready=m.ready,
            triton_model=m.triton_model,
            triton_model_version=m.triton_model_version,
            labels=tuple(m.labels),
            dimension=m.dimension,
            max_input_tokens=m.max_input_tokens,
            regression=m.regression,
            text_pairs=m.text_pairs,
            routing=m.routing,
            deployments=tuple(
                DeploymentDescription(
                    d.name,
                    d.endpoint,
                    d.triton_model,
                    d.triton_model_version,
                    d.ready,
                    d.breaker,
                    d.split_weight,
                    d.shadow,
                    d.queued_inputs,
                    d.gateway_tokenizes,
                )
                for d in m.deployments
            ),
        )
        for m in msg.models
    ]


# -- generation -------------------------------------------------------------------------------
FINISH_REASON_NAMES: dict[int, str] = {
    generate_pb2.FINISH_REASON_END_OF_SEQUENCE: "end_of_sequence",
    generate_pb2.FINISH_REASON_STOP_SEQUENCE: "stop_sequence",
    generate_pb2.FINISH_REASON_LENGTH: "length",
    generate_pb2.FINISH_REASON_CANCELLED: "cancelled",
}


@dataclass(frozen=True)
class GenerationOptions:
    """How to generate (``0`` switches a knob off, or asks for the model's default
    ``max_new_tokens``; ``top_p`` and ``repetition_penalty`` are also off at 1)."""

    max_new_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 0.0
    top_k: int = 0
    repetition_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    use_chat_template: bool = False
    truncation: str | int = "end"
    # a conversation, (role, content) pairs, to continue instead of a prompt (pass prompt "")
    messages: tuple[tuple[str, str], ...] = ()

    def chat_messages(self) -> list[generate_pb2.ChatMessage]:
        return [generate_pb2.ChatMessage(role=r, content=c) for r, c in self.messages]

    def parameters(self) -> generate_pb2.SamplingParameters:
        params = generate_pb2.SamplingParameters(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            stop=list(self.stop),
        )
        if self.seed is not None:
            params.seed = self.seed
        return params


class GenerationKwargs(TypedDict, total=False):
    """The fields of :class:`GenerationOptions`, as keyword arguments of the clients."""

    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    stop: tuple[str, ...] | list[str]
    seed: int | None
    use_chat_template: bool
    truncation: str | int
    messages: Sequence[tuple[str, str] | Mapping[str, str]]


def generation_options(kwargs: GenerationKwargs) -> GenerationOptions:
    values = dict(kwargs)
    values["stop"] = tuple(kwargs.get("stop", ()))
    values["messages"] = tuple(
        (m["role"], m["content"]) if isinstance(m, Mapping) else (m[0], m[1])
        for m in kwargs.get("messages", ())
    )
    return GenerationOptions(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class GenerateReply:
    text: str
    finish_reason: str  # end_of_sequence | stop_sequence | length | cancelled
    stop_sequence: str  # the stop string that ended it ("" otherwise)
    served_by: ServedBy
    usage: Usage
    timing: Timing


@dataclass(frozen=True)
class GenerateChunk:
    """One message of a stream: new text; the last one also says why it ended and what it
    cost (``finish_reason`` set)."""

    text: str
    finish_reason: str | None
    stop_sequence: str
    served_by: ServedBy
    usage: Usage | None
    timing: Timing | None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


def generate_request(
    model: str, prompt: str, options: GenerationOptions
) -> generate_pb2.GenerateRequest:
    return generate_pb2.GenerateRequest(
        model=model,
        prompt=prompt,
        parameters=options.parameters(),
        truncation=truncation_value(options.truncation),
        use_chat_template=options.use_chat_template,
        messages=options.chat_messages(),
    )


def generate_stream_request(
    model: str, prompt: str, options: GenerationOptions
) -> generate_pb2.GenerateStreamRequest:
    return generate_pb2.GenerateStreamRequest(
        model=model,
        prompt=prompt,
        parameters=options.parameters(),
        truncation=truncation_value(options.truncation),
        use_chat_template=options.use_chat_template,
        messages=options.chat_messages(),
    )


def generate_reply(msg: generate_pb2.GenerateResponse) -> GenerateReply:
    return GenerateReply(
        text=msg.text,
        finish_reason=FINISH_REASON_NAMES.get(msg.finish_reason, "unspecified"),
        stop_sequence=msg.stop_sequence,
        served_by=_served_by(msg.served_by),
        usage=_usage(msg.usage),
        timing=_timing(msg.timing),
    )


def generate_chunk(msg: generate_pb2.GenerateStreamResponse) -> GenerateChunk:
    last = msg.finish_reason != generate_pb2.FINISH_REASON_UNSPECIFIED
    return GenerateChunk(
        text=msg.text,
        finish_reason=FINISH_REASON_NAMES.get(msg.finish_reason, "unspecified") if last else None,
        stop_sequence=msg.stop_sequence,
        served_by=_served_by(msg.served_by),
        usage=_usage(msg.usage) if last else None,
        timing=_timing(msg.timing) if last else None,
    )
