"""A scripted :class:`~gateway.engine_types.InferenceEngine` for transport tests: it records
the engine requests it gets and answers what the test set, or raises the error it set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from gateway.engine_types import (
    Classification,
    Classifications,
    ClassifyRequest,
    DeploymentInfo,
    Embeddings,
    EmbedRequest,
    GenerateRequest,
    GenerationChunk,
    ModelInfo,
    ServedBy,
)

SERVED = ServedBy("m", "main", "m_triton", "7")


@dataclass
class FakeEngine:
    requests: list[object] = field(default_factory=list)
    fail_with: Exception | None = None
    chunks: tuple[str, ...] = ("hel", "lo")
    known: frozenset[str] = frozenset({"m"})

    def serves(self, model: str) -> bool:
        return model in self.known

    def _enter(self, request: object) -> None:
        self.requests.append(request)
        if self.fail_with is not None:
            raise self.fail_with

    async def embed(self, request: EmbedRequest) -> Embeddings:
        self._enter(request)
        n = len(request.inputs)
        vectors = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
        return Embeddings(vectors, (4,) * n, SERVED, 0.01, 0.02)

    async def classify(self, request: ClassifyRequest) -> Classifications:
        self._enter(request)
        results = tuple(
            Classification((("pos", 0.75), ("neg", 0.25))[: request.top_k or 2], 3, SERVED)
            for _ in request.inputs
        )
        return Classifications(results, SERVED, 0.0, 0.01)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerationChunk]:
        self._enter(request)
        for i, text in enumerate(self.chunks):
            last = i == len(self.chunks) - 1
            yield GenerationChunk(
                text, "length" if last else None, "", 5, i + 1, SERVED, 0.001 * (i + 1)
            )

    async def models(self, caller: str | None = None) -> list[ModelInfo]:
        self._enter(caller)
        deployment = DeploymentInfo(
            "main", "default", "m_triton", "7", "open", 0.5, False, 3, True, True
        )
        return [
            ModelInfo(
                "m", "classify", "split", "m_triton", "7", ("neg", "pos"), 0, 16, False, False,
                (deployment,), True,
            )
        ]  # fmt: skip

    async def ready(self) -> bool:
        return True
