"""The seam between request handling and an inference engine.

Handlers depend on :class:`Backend` only; the Triton adapter implements it and unit tests
use :class:`gateway.fake_backend.FakeBackend`. Results are plain dataclasses holding numpy
arrays, one row per input, in request order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from gateway.config import ModelConfig, Task

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ModelTarget:
    """A logical model resolved to the backend model that serves it."""

    name: str
    task: Task
    backend_model: str
    version: int | None = None

    @property
    def version_str(self) -> str:
        return "" if self.version is None else str(self.version)

    @classmethod
    def from_config(cls, model: ModelConfig) -> ModelTarget:
        return cls(model.name, model.task, model.triton_model, model.version)


@dataclass(frozen=True)
class ModelMetadata:
    """What the backend says about a model (from its config parameters)."""

    task: Task
    labels: tuple[str, ...] = ()
    dimension: int | None = None
    max_length: int | None = None
    version: str = ""
    regression: bool = False  # classify: one label whose score is a predicted value
    text_pairs: bool = False  # classify: the model reads a second text per input


@dataclass(frozen=True)
class ClassifyResult:
    probs: FloatArray  # [n, num_labels], label order = labels
    labels: tuple[str, ...]
    num_tokens: tuple[int, ...]
    version: str = ""


@dataclass(frozen=True)
class EmbedResult:
    vectors: FloatArray  # [n, dimension], unit L2 norm per row
    num_tokens: tuple[int, ...]
    version: str = ""


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 0.0
    top_k: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None


@dataclass(frozen=True)
class GenerateChunk:
    text: str
    finish_reason: str | None = None  # "end_of_sequence" | "stop_sequence" | "length"
    input_tokens: int = 0
    output_tokens: int = 0


@runtime_checkable
class Backend(Protocol):
    """An inference engine. ``timeout`` is the time left for the call, in seconds."""

    async def classify(
        self,
        target: ModelTarget,
        inputs: Sequence[str],
        *,
        truncate: bool,
        timeout: float | None = None,
        pairs: Sequence[str] | None = None,
    ) -> ClassifyResult: ...

    async def embed(
        self,
        target: ModelTarget,
        inputs: Sequence[str],
        *,
        truncate: bool,
        timeout: float | None = None,
    ) -> EmbedResult: ...

    def generate(
        self,
        target: ModelTarget,
        prompt: str,
        params: GenerationParams,
        *,
        truncate: bool,
        timeout: float | None = None,
    ) -> AsyncIterator[GenerateChunk]: ...

    async def ready(self, target: ModelTarget | None = None) -> bool:
        """Whether the engine (``target`` None) or one model can serve requests now."""
        ...

    async def model_info(self, target: ModelTarget) -> ModelMetadata: ...

    async def close(self) -> None: ...
