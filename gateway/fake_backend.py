"""An in-memory, deterministic :class:`~gateway.backend.Backend` for tests and demos.

Texts are "tokenized" by whitespace (plus two special tokens). Embeddings are pseudo-random
unit vectors seeded by the text; classification scores come from a softmax over per-label
logits seeded by the text, with a bonus for each word of the text that equals a label. Readiness,
latency and failures can be set by the test.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from gateway.backend import (
    ClassifyResult,
    EmbedResult,
    FloatArray,
    GenerateChunk,
    GenerationParams,
    ModelMetadata,
    ModelTarget,
    Rows,
    TextRows,
    TokenizerSpec,
    TokenRows,
)
from gateway.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    FieldViolation,
    GatewayError,
    InvalidInput,
    ModelNotFound,
    Unimplemented,
)

SPECIAL_TOKENS = 2


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def fake_num_tokens(text: str) -> int:
    return len(text.split()) + SPECIAL_TOKENS


def fake_embedding(text: str, dimension: int) -> FloatArray:
    vec = np.random.default_rng(_seed(text)).standard_normal(dimension).astype(np.float32)
    out: FloatArray = vec / np.linalg.norm(vec)
    return out


def fake_probs(text: str, labels: Sequence[str], sharpness: float = 1.0) -> FloatArray:
    """Softmax over seeded logits plus a bonus for each label named in the text; a larger
    ``sharpness`` makes a more confident "model"."""
    logits = np.random.default_rng(_seed(text)).standard_normal(len(labels))
    words = {w.strip(".,!?").lower() for w in text.split()}
    logits += np.array([4.0 if label.lower() in words else 0.0 for label in labels])
    logits *= sharpness
    exp = np.exp(logits - logits.max())
    out: FloatArray = (exp / exp.sum()).astype(np.float32)
    return out


def fake_score(text: str) -> float:
    """A deterministic value in [0, 5) for a regression model."""
    return float(np.random.default_rng(_seed(text)).uniform(0.0, 5.0))


@dataclass
class FakeCall:
    method: str
    target: ModelTarget
    inputs: tuple[str, ...]  # texts ("a | b" for pairs), or "ids:..." for token rows
    truncate: tuple[bool, ...]
    timeout: float | None


def _row_keys(rows: Rows) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
    """What identifies each row (the fake's "content"), and token counts for token rows."""
    if isinstance(rows, TokenRows):
        counts = tuple(int(n) for n in rows.batch.num_tokens.reshape(-1))
        keys = tuple(
            "ids:" + " ".join(str(int(t)) for t in row[:n])
            for row, n in zip(rows.batch.input_ids, counts, strict=True)
        )
        return keys, counts
    if rows.pairs is None:
        return rows.texts, None
    return tuple(f"{a} | {b}" for a, b in zip(rows.texts, rows.pairs, strict=True)), None


@dataclass
class FakeBackend:
    """Models keyed by backend model name; everything else is test knobs."""

    models: Mapping[str, ModelMetadata] = field(
        default_factory=lambda: {
            "sentiment": ModelMetadata(
                task="classify", labels=("negative", "neutral", "positive"), max_length=16
            ),
            "minilm": ModelMetadata(task="embed", dimension=8, max_length=16),
        }
    )
    server_ready: bool = True
    not_ready_models: set[str] = field(default_factory=set)
    delay_s: float = 0.0
    fail_with: GatewayError | Exception | None = None
    calls: list[FakeCall] = field(default_factory=list)
    closed: bool = False
    #: backend model name → how the gateway may tokenize for it (None: the fake tokenizes)
    tokenizers: dict[str, TokenizerSpec] = field(default_factory=dict)
    sharpness: float = 1.0  # scales classification logits: a more or less confident model

    async def _enter(
        self, method: str, target: ModelTarget, rows: Rows, timeout: float | None
    ) -> tuple[ModelMetadata, tuple[str, ...], tuple[int, ...]]:
        keys, counts = _row_keys(rows)
        truncate = rows.truncate if isinstance(rows, TextRows) else (True,) * len(keys)
        self.calls.append(FakeCall(method, target, keys, truncate, timeout))
        meta = await self.model_info(target)
        if not await self.ready(target):
            raise BackendUnavailable(f"model {target.backend_model!r} is not ready")
        if self.delay_s:
            if timeout is not None and timeout < self.delay_s:
                await asyncio.sleep(timeout)
                raise DeadlineExceeded(f"fake backend needs {self.delay_s} s, had {timeout:.3f} s")
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        if meta.task != method:
            raise InvalidInput(f"model {target.backend_model!r} does not {method}")
        if counts is None:
            counts = self._tokens(keys, meta, truncate)
        return meta, keys, counts

    def _tokens(
        self, inputs: Sequence[str], meta: ModelMetadata, truncate: Sequence[bool]
    ) -> tuple[int, ...]:
        counts = [fake_num_tokens(t) for t in inputs]
        limit = meta.max_length
        if limit is None:
            return tuple(counts)
        too_long = [
            FieldViolation(f"inputs[{i}]", f"has {n} tokens; the model's maximum is {limit}")
            for i, (n, may_cut) in enumerate(zip(counts, truncate, strict=True))
            if n > limit and not may_cut
        ]
        if too_long:
            raise InvalidInput.from_violations(too_long)
        return tuple(min(n, limit) for n in counts)

    async def classify(
        self, target: ModelTarget, rows: Rows, *, timeout: float | None = None
    ) -> ClassifyResult:
        meta, keys, tokens = await self._enter("classify", target, rows, timeout)
        if meta.regression:
            probs = np.array([[fake_score(k)] for k in keys], dtype=np.float32)
        else:
            probs = np.stack([fake_probs(k, meta.labels, self.sharpness) for k in keys])
        return ClassifyResult(probs, meta.labels, tokens, version=meta.version or "1")

    async def embed(
        self, target: ModelTarget, rows: Rows, *, timeout: float | None = None
    ) -> EmbedResult:
        meta, keys, tokens = await self._enter("embed", target, rows, timeout)
        dimension = meta.dimension or 8
        vectors = np.stack([fake_embedding(k, dimension) for k in keys])
        return EmbedResult(vectors, tokens, version=meta.version or "1")

    async def tokenizer(self, target: ModelTarget) -> TokenizerSpec | None:
        await self.model_info(target)
        return self.tokenizers.get(target.backend_model)

    async def generate(
        self,
        target: ModelTarget,
        prompt: str,
        params: GenerationParams,
        *,
        truncate: bool,
        timeout: float | None = None,
    ) -> AsyncIterator[GenerateChunk]:
        raise Unimplemented("generation is not implemented yet")
        yield GenerateChunk("")  # pragma: no cover - makes this an async generator

    async def ready(self, target: ModelTarget | None = None) -> bool:
        if not self.server_ready:
            return False
        if target is None:
            return True
        return (
            target.backend_model in self.models
            and target.backend_model not in self.not_ready_models
        )

    async def model_info(self, target: ModelTarget) -> ModelMetadata:
        if not self.server_ready:
            raise BackendUnavailable("fake backend is down")
        meta = self.models.get(target.backend_model)
        if meta is None:
            raise ModelNotFound(f"backend has no model {target.backend_model!r}")
        return meta

    async def close(self) -> None:
        self.closed = True
