"""What transports and the engine exchange: plain dataclasses and the engine's protocol.

No protobuf here. A transport (the gRPC servicer, a test) builds requests from its wire types,
calls an :class:`InferenceEngine` and turns results and :class:`~gateway.errors.GatewayError`
subclasses back into its own. ``caller`` is the API key's name when the transport
authenticated one (None: anonymous); ``timeout`` is the seconds the caller still allows (None:
the engine's default).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from gateway.backend import FloatArray, GenerationParams


@dataclass(frozen=True)
class Routing:
    """What a caller may say about routing: a sticky split key, a pinned deployment."""

    routing_key: str | None = None
    pin: str | None = None


@dataclass(frozen=True)
class EmbedRequest:
    model: str
    inputs: tuple[str, ...]
    truncate: bool = True
    dimensions: int | None = None
    normalize: bool = True
    routing: Routing = field(default_factory=Routing)
    caller: str | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class ClassifyRequest:
    model: str
    inputs: tuple[str, ...]
    pairs: tuple[str, ...] = ()
    truncate: bool = True
    top_k: int = 0  # 0: every label
    routing: Routing = field(default_factory=Routing)
    caller: str | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class GenerateRequest:
    model: str
    prompt: str  # empty when ``params.messages`` holds a conversation instead
    params: GenerationParams = field(default_factory=GenerationParams)
    truncate: bool = True
    routing: Routing = field(default_factory=Routing)
    caller: str | None = None
    timeout: float | None = None

    @property
    def text(self) -> str:
        """What the model reads: the prompt, or the conversation's contents."""
        return self.prompt or "\n".join(content for _, content in self.params.messages)


@dataclass(frozen=True)
class ServedBy:
    model: str  # the logical model (route)
    deployment: str
    triton_model: str
    version: str


@dataclass(frozen=True)
class Embeddings:
    vectors: FloatArray  # [n, dimensions], shaped as asked
    input_tokens: tuple[int, ...]
    served_by: ServedBy
    queue_seconds: float
    run_seconds: float


@dataclass(frozen=True)
class Classification:
    labels: tuple[tuple[str, float], ...]  # by descending score, top_k of them
    input_tokens: int
    served_by: ServedBy  # differs per input when a cascade escalated some


@dataclass(frozen=True)
class Classifications:
    results: tuple[Classification, ...]
    served_by: ServedBy
    queue_seconds: float
    run_seconds: float


@dataclass(frozen=True)
class GenerationChunk:
    """New text since the previous chunk; the last has ``finish_reason`` set (a contract
    finish reason). Token counts are totals so far; ``backend_seconds`` the time spent waiting
    on the backend so far."""

    text: str
    finish_reason: str | None
    stop_sequence: str
    input_tokens: int
    output_tokens: int
    served_by: ServedBy
    backend_seconds: float


@dataclass(frozen=True)
class DeploymentInfo:
    name: str
    endpoint: str
    triton_model: str
    triton_model_version: str
    breaker: str
    split_weight: float
    shadow: bool
    queued_inputs: int
    gateway_tokenizes: bool
    ready: bool


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: str  # embed, classify or generate
    routing: str  # the policies in use ("split,cascade") or "single"
    triton_model: str
    triton_model_version: str
    labels: tuple[str, ...]
    dimension: int
    max_input_tokens: int
    regression: bool
    text_pairs: bool
    deployments: tuple[DeploymentInfo, ...]
    ready: bool


class InferenceEngine(Protocol):
    """The one seam every transport talks to (implemented by :class:`gateway.engine.Engine`)."""

    def serves(self, model: str) -> bool:
        """Whether ``model`` is a logical model of the current config."""
        ...

    async def embed(self, request: EmbedRequest) -> Embeddings: ...

    async def classify(self, request: ClassifyRequest) -> Classifications: ...

    def generate(self, request: GenerateRequest) -> AsyncIterator[GenerationChunk]:
        """The chunks of one generation; the last one has ``finish_reason`` set."""
        ...

    async def models(self, caller: str | None = None) -> list[ModelInfo]: ...

    async def ready(self) -> bool: ...
