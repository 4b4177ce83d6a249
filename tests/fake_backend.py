"""An in-memory, deterministic :class:`~gateway.backend.Backend` for tests and demos.

Texts are "tokenized" by whitespace (plus two special tokens). Embeddings are pseudo-random
unit vectors seeded by the text; classification scores come from a softmax over per-label
logits seeded by the text, with a bonus for each word of the text that equals a label.
Generation produces words ``" w<n>"``, one per token, chosen from the prompt (greedy) or from a
generator seeded by ``seed`` and the prompt; a prompt word ``<eos:N>`` ends it after N tokens;
stop strings are held back and matched as the generate model does. Readiness, latency, failures
and capacity can be set by the test.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from lmforge_client.status import FieldViolation

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
    GatewayError,
    InvalidInput,
    ModelNotFound,
    Overloaded,
)
from triton_models.runtime import contract
from triton_models.runtime.stops import StopMatcher

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
            "tinylm": ModelMetadata(
                task="generate", max_length=16, max_new_tokens=64, chat_template=True
            ),
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
    # -- generation knobs --
    token_delay_s: float = 0.0  # per generated token
    fail_after_chunks: int | None = None  # raise fail_with after this many chunks were sent
    max_generations: int | None = None  # more at once are refused (Overloaded)
    active_generations: int = 0  # generations in progress now
    generations: list[GenerationParams] = field(default_factory=list)

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
        self.calls.append(FakeCall("generate", target, (prompt,), (truncate,), timeout))
        self.generations.append(params)
        meta = await self.model_info(target)
        if not await self.ready(target):
            raise BackendUnavailable(f"model {target.backend_model!r} is not ready")
        if meta.task != "generate":
            raise InvalidInput(f"model {target.backend_model!r} does not generate")
        if self.fail_with is not None and self.fail_after_chunks is None:
            raise self.fail_with
        input_tokens = self._prompt_tokens(prompt, meta, params, truncate)
        if self.max_generations is not None and self.active_generations >= self.max_generations:
            raise Overloaded(f"{target.backend_model!r} is generating at capacity")
        words = fake_completion(prompt, params, meta)
        self.active_generations += 1
        try:
            async for chunk in self._stream(words, params, input_tokens, meta):
                yield chunk
        finally:
            self.active_generations -= 1

    def _prompt_tokens(
        self, prompt: str, meta: ModelMetadata, params: GenerationParams, truncate: bool
    ) -> int:
        tokens = fake_num_tokens(prompt)
        limit = meta.max_length
        if limit is not None and tokens > limit:
            if not truncate:
                why = f"{contract.INPUT_TOO_LONG}: {tokens} tokens, more than the model's {limit}"
                raise InvalidInput.from_violations([FieldViolation("prompt", why)])
            tokens = limit
        if meta.max_new_tokens is not None and params.max_new_tokens > meta.max_new_tokens:
            raise InvalidInput.from_violations(
                [FieldViolation("parameters.max_new_tokens", f"at most {meta.max_new_tokens}")]
            )
        if params.use_chat_template and not meta.chat_template:
            raise InvalidInput.from_violations(
                [FieldViolation("use_chat_template", "the model has no chat template")]
            )
        return tokens

    async def _stream(
        self,
        words: list[str],
        params: GenerationParams,
        input_tokens: int,
        meta: ModelMetadata,
    ) -> AsyncIterator[GenerateChunk]:
        stops = StopMatcher(params.stop)
        version = meta.version or "1"
        sent = 0
        for count, word in enumerate(words, start=1):
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            if self.fail_after_chunks is not None and sent >= self.fail_after_chunks:
                raise self.fail_with or BackendUnavailable("the fake backend went away")
            result = stops.feed(word)
            if result.matched is not None:
                yield GenerateChunk(
                    result.text,
                    contract.FINISH_STOP_SEQUENCE,
                    input_tokens,
                    count,
                    result.matched,
                    version,
                )
                return
            if count == len(words):
                reason = (
                    contract.FINISH_LENGTH
                    if count == _max_new_tokens(params)
                    else contract.FINISH_END_OF_SEQUENCE
                )
                text = result.text + stops.flush()
                yield GenerateChunk(text, reason, input_tokens, count, "", version)
                return
            if result.text:
                sent += 1
                yield GenerateChunk(result.text, None, input_tokens, count, "", version)

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


FAKE_DEFAULT_MAX_NEW_TOKENS = 16


def _max_new_tokens(params: GenerationParams) -> int:
    return params.max_new_tokens or FAKE_DEFAULT_MAX_NEW_TOKENS


def fake_completion(prompt: str, params: GenerationParams, meta: ModelMetadata) -> list[str]:
    """The fake model's tokens (each a ``" w<n>"`` word) for ``prompt``: greedy decoding is
    a function of the prompt, sampling of the prompt and the seed (a random one when unset);
    ``<eos:N>`` in the prompt ends the completion after N tokens."""
    limit = _max_new_tokens(params)
    for word in prompt.split():
        if word.startswith("<eos:") and word.endswith(">") and word[5:-1].isdigit():
            limit = min(limit, int(word[5:-1]))
    if params.temperature > 0:
        seed = (
            params.seed if params.seed is not None else int(np.random.default_rng().integers(2**32))
        )
        rng = np.random.default_rng([seed, _seed(prompt) % 2**32])
        numbers = rng.integers(0, 100, size=limit)
    else:
        numbers = np.random.default_rng(_seed(prompt)).integers(0, 100, size=limit)
    return [f" w{int(n)}" for n in numbers]
