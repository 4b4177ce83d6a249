"""The seam between request handling and an inference engine.

Handlers depend on :class:`Backend` only; the Triton adapter implements it and unit tests
use :class:`tests.fake_backend.FakeBackend`. Inputs arrive as :class:`TextRows` (the engine
tokenizes) or :class:`TokenRows` (the gateway tokenized with the model's own tokenizer, see
:meth:`Backend.tokenizer`); results are plain dataclasses holding numpy arrays, one row per
input, in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from gateway.routing_config import Task
from triton_models.runtime.text import TokenBatch

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


@dataclass(frozen=True)
class TextRows:
    """Texts for the engine to tokenize; ``truncate[i]`` says whether row i may be cut."""

    texts: tuple[str, ...]
    truncate: tuple[bool, ...]
    pairs: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TokenRows:
    """Rows the gateway tokenized itself, padded to one length bucket."""

    batch: TokenBatch

    def __len__(self) -> int:
        return int(self.batch.input_ids.shape[0])


Rows = TextRows | TokenRows


@dataclass(frozen=True)
class TokenizerSpec:
    """How a model tokenizes, for a gateway that tokenizes on the engine's behalf: the exact
    ``tokenizer.json`` the engine uses (checked by its SHA-256) and the same rules."""

    tokenizer_file: Path
    max_length: int
    buckets: tuple[int, ...]
    emit_token_type_ids: bool


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
    max_new_tokens: int | None = None  # generate: the most one request may ask for
    chat_template: bool = False  # generate: the tokenizer has a chat template


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
    """How to generate; 0 (or 1 for ``top_p`` and ``repetition_penalty``) means "off" or
    "the model's default" (``max_new_tokens``)."""

    max_new_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 0.0
    top_k: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None
    repetition_penalty: float = 0.0
    use_chat_template: bool = False
    # a conversation ((role, content) pairs) for the chat template, instead of a prompt
    messages: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GenerateChunk:
    """New text since the previous chunk; the last chunk has ``finish_reason`` set (one of
    :data:`triton_models.runtime.contract.FINISH_REASONS`). Token counts are the totals so
    far."""

    text: str
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    stop_sequence: str = ""
    version: str = ""


@runtime_checkable
class Backend(Protocol):
    """An inference engine. ``timeout`` is the time left for the call, in seconds."""

    async def classify(
        self, target: ModelTarget, rows: Rows, *, timeout: float | None = None
    ) -> ClassifyResult: ...

    async def embed(
        self, target: ModelTarget, rows: Rows, *, timeout: float | None = None
    ) -> EmbedResult: ...

    async def tokenizer(self, target: ModelTarget) -> TokenizerSpec | None:
        """How to tokenize for ``target`` in the gateway, or None when the engine must."""
        ...

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
