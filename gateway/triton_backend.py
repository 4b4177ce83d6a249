"""The :class:`~gateway.backend.Backend` that talks to one Triton server through
``tritonclient.grpc.aio``.

:class:`~gateway.backend.TextRows` go to the ensemble ``<model>`` (``TEXT``, optionally
``TEXT_PAIR``, and a per-row ``TRUNCATE``; Triton tokenizes); :class:`~gateway.backend.TokenRows`
go straight to ``<model>_encoder`` with the ids the gateway made from the same tokenizer
(one python-backend hop instead of two). Batches larger than the model's ``max_batch_size``
are split into concurrent requests. What a model is comes from its configs
(:mod:`gateway.triton_contract`), cached for ``info_ttl`` seconds and dropped when the model
stops being ready. Triton errors become gateway errors here (:mod:`gateway.triton_errors`); an
input rejected as too long is named ``inputs[i]`` from the row the tokenizer reports. Generation
streams from the decoupled ``<model>`` (:mod:`gateway.triton_generate`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as tc
from lmforge_client.status import FieldViolation
from tritonclient.utils import InferenceServerException

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
from gateway.config import EndpointConfig, TritonConfig
from gateway.errors import (
    BackendError,
    BackendUnavailable,
    GatewayError,
    InvalidInput,
    ModelNotFound,
)
from gateway.tls import endpoint_credentials
from gateway.triton_contract import (
    EncoderInfo,
    parse_encoder_config,
    parse_model_config,
    tokenizer_spec,
)
from gateway.triton_errors import translate
from gateway.triton_generate import generation_inputs, stream_generation
from triton_models.runtime import contract as c

logger = logging.getLogger(__name__)

# Reconnect quickly after Triton restarts; fail (not wait) while it is down.
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
]
Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class _ModelInfo:
    meta: ModelMetadata
    max_batch_size: int
    config: dict[str, Any]
    fetched_at: float


@dataclass(frozen=True)
class _Chunk:
    arrays: dict[str, Array]
    version: str


def _strings(name: str, values: Sequence[str]) -> tc.InferInput:
    tensor = tc.InferInput(name, [len(values), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[v.encode("utf-8")] for v in values], dtype=np.object_))
    return tensor


def _tensor(name: str, array: Array, datatype: str) -> tc.InferInput:
    tensor = tc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(np.ascontiguousarray(array))
    return tensor


class TritonBackend:
    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 2.0,
        request_timeout: float = 30.0,
        info_ttl: float = 30.0,
        repository: Path | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        client: tc.InferenceServerClient | None = None,
    ) -> None:
        """``client``: the ``tritonclient.grpc.aio`` client to use (tests pass a fake
        transport); by default one for ``url``."""
        self.url = url
        self.repository = repository
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._info_ttl = info_ttl
        self._client = (
            client
            if client is not None
            else tc.InferenceServerClient(url, channel_args=_CHANNEL_ARGS, creds=credentials)
        )
        self._info: dict[tuple[str, str], _ModelInfo] = {}
        self._encoders: dict[str, EncoderInfo] = {}

    @classmethod
    def from_config(cls, endpoint: EndpointConfig, timeouts: TritonConfig) -> TritonBackend:
        return cls(
            endpoint.url,
            connect_timeout=timeouts.connect_timeout_s,
            request_timeout=timeouts.request_timeout_s,
            info_ttl=timeouts.model_info_ttl_s,
            repository=endpoint.repository,
            credentials=None if endpoint.tls is None else endpoint_credentials(endpoint.tls),
        )

    def _error(self, exc: InferenceServerException, model: str) -> GatewayError:
        return translate(exc.status(), exc.message() or str(exc), url=self.url, model=model)

    # -- readiness and model info ----------------------------------------------------------
    async def ready(self, target: ModelTarget | None = None) -> bool:
        try:
            if target is None:
                return bool(
                    await self._client.is_server_ready(client_timeout=self._connect_timeout)
                )
            ok = bool(
                await self._client.is_model_ready(
                    target.backend_model, target.version_str, client_timeout=self._connect_timeout
                )
            )
        except InferenceServerException as exc:
            logger.debug("readiness of %s at %s: %s", target, self.url, exc)
            ok = False
        if not ok and target is not None:
            self._forget(target)
        return ok

    def _forget(self, target: ModelTarget) -> None:
        self._info.pop((target.backend_model, target.version_str), None)
        self._encoders.pop(target.backend_model, None)

    async def _config(self, model: str, version: str, budget: float) -> dict[str, Any]:
        try:
            response = await self._client.get_model_config(
                model, version, as_json=True, client_timeout=budget
            )
        except InferenceServerException as exc:
            raise self._error(exc, model) from None
        config: dict[str, Any] = response["config"]
        return config

    async def _load_info(self, target: ModelTarget, timeout: float | None) -> _ModelInfo:
        key = (target.backend_model, target.version_str)
        cached = self._info.get(key)
        if cached is not None and time.monotonic() - cached.fetched_at < self._info_ttl:
            return cached
        budget = self._connect_timeout if timeout is None else min(timeout, self._connect_timeout)
        config = await self._config(target.backend_model, target.version_str, budget)
        meta, max_batch_size = parse_model_config(target.backend_model, config)
        meta = replace(meta, version=await self._served_version(target, budget))
        if meta.task != target.task:
            raise BackendError(
                f"logical model {target.name!r} is configured as {target.task} but Triton model "
                f"{target.backend_model!r} is a {meta.task} model"
            )
        if max_batch_size < 1 and meta.task != "generate":  # generate: one prompt a request
            raise BackendError(
                f"Triton model {target.backend_model!r} has max_batch_size {max_batch_size}; "
                "the lmforge contract needs batching (> 0)"
            )
        info = _ModelInfo(meta, max_batch_size, config, time.monotonic())
        self._info[key] = info
        return info

    async def _served_version(self, target: ModelTarget, budget: float) -> str:
        """The version Triton serves for ``target``: the pinned one, else the newest loaded."""
        if target.version_str:
            return target.version_str
        try:
            metadata = await self._client.get_model_metadata(
                target.backend_model, as_json=True, client_timeout=budget
            )
        except InferenceServerException as exc:
            raise self._error(exc, target.backend_model) from None
        versions = [str(v) for v in metadata.get("versions", [])]
        numeric = [v for v in versions if v.isdigit()]
        return max(numeric, key=int) if numeric else (versions[-1] if versions else "")

    async def model_info(self, target: ModelTarget) -> ModelMetadata:
        return (await self._load_info(target, None)).meta

    async def tokenizer(self, target: ModelTarget) -> TokenizerSpec | None:
        """The model's own tokenizer when this endpoint's repository is readable here, and
        its encoder's description (cached for the direct encoder calls)."""
        if self.repository is None or target.task == "generate":
            return None
        info = await self._load_info(target, None)
        budget = self._connect_timeout
        name = target.backend_model
        tokenize = await self._config(name + c.TOKENIZE_SUFFIX, "", budget)
        spec = tokenizer_spec(self.repository, name, info.config, tokenize)
        encoder = parse_encoder_config(await self._config(name + c.ENCODER_SUFFIX, "", budget))
        self._encoders[name] = encoder
        return spec

    # -- inference -------------------------------------------------------------------------
    async def _infer_chunk(
        self,
        model: str,
        version: str,
        inputs: list[tc.InferInput],
        outputs: Sequence[str],
        rows: int,
        offset: int,
        deadline: float,
    ) -> _Chunk:
        try:
            result = await self._client.infer(
                model,
                inputs,
                model_version=version,
                outputs=[tc.InferRequestedOutput(name) for name in outputs],
                client_timeout=max(deadline - time.monotonic(), 0.001),
            )
        except InferenceServerException as exc:
            message = exc.message() or str(exc)
            named = c.too_long_rows(message)
            if named and all(0 <= row < rows for row in named):
                raise InvalidInput.from_violations(
                    FieldViolation(
                        f"inputs[{offset + row}]",
                        f"{c.INPUT_TOO_LONG}: {n} tokens, more than the model's maximum",
                    )
                    for row, n in sorted(named.items())
                ) from None
            raise self._error(exc, model) from None
        arrays = {}
        for name in outputs:
            array = result.as_numpy(name)
            if array is None:  # row counts are checked once, by the runner
                raise BackendError(f"Triton model {model!r} returned no {name} output")
            arrays[name] = array
        return _Chunk(arrays, str(result.get_response().model_version))

    def _text_chunk(self, rows: TextRows, start: int, stop: int) -> list[tc.InferInput]:
        texts = rows.texts[start:stop]
        inputs = [_strings(c.INPUT_TEXT, texts)]
        if rows.pairs is not None:
            inputs.append(_strings(c.INPUT_TEXT_PAIR, rows.pairs[start:stop]))
        flags = np.array(rows.truncate[start:stop], dtype=np.bool_).reshape(-1, 1)
        inputs.append(_tensor(c.INPUT_TRUNCATE, flags, "BOOL"))
        return inputs

    def _token_chunk(
        self, rows: TokenRows, encoder: EncoderInfo, start: int, stop: int
    ) -> list[tc.InferInput]:
        tensors = {
            c.INPUT_IDS: rows.batch.input_ids,
            c.ATTENTION_MASK: rows.batch.attention_mask,
            c.TOKEN_TYPE_IDS: rows.batch.token_type_ids,
        }
        return [_tensor(name, tensors[name][start:stop], "INT64") for name in encoder.inputs]

    async def _infer(
        self, target: ModelTarget, rows: Rows, output: str, timeout: float | None
    ) -> tuple[Array, tuple[int, ...], str]:
        """``(output rows, tokens per row, served version)`` for every row of ``rows``."""
        budget = self._request_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        info = await self._load_info(target, budget)
        n = len(rows)
        names: tuple[str, ...]
        if isinstance(rows, TokenRows):
            encoder = self._encoders.get(target.backend_model)
            if encoder is None and self.repository is not None:
                # forgotten while the model was down (Triton restarted): describe it again
                await self.tokenizer(target)
                encoder = self._encoders.get(target.backend_model)
            if encoder is None:
                raise BackendError(f"no encoder known for {target.backend_model!r}")
            model, names = encoder.name, (encoder.output,)
            size = encoder.max_batch_size or info.max_batch_size
            token_rows = rows

            def chunk_inputs(start: int) -> list[tc.InferInput]:
                return self._token_chunk(token_rows, encoder, start, start + size)
        else:
            model, names = target.backend_model, (output, c.OUTPUT_NUM_TOKENS)
            size = info.max_batch_size
            text_rows = rows

            def chunk_inputs(start: int) -> list[tc.InferInput]:
                return self._text_chunk(text_rows, start, start + size)

        chunks = await asyncio.gather(
            *(
                self._infer_chunk(
                    model,
                    target.version_str,
                    chunk_inputs(s),
                    names,
                    min(size, n - s),
                    s,
                    deadline,
                )
                for s in range(0, n, size)
            ),
            return_exceptions=True,
        )
        failures = [r for r in chunks if isinstance(r, BaseException)]
        invalid = [f for f in failures if isinstance(f, InvalidInput)]
        if invalid:
            raise InvalidInput.from_violations(v for f in invalid for v in f.violations)
        if failures:
            if not isinstance(failures[0], InvalidInput):
                self._forget(target)
            raise failures[0]
        done = [r for r in chunks if isinstance(r, _Chunk)]
        values = np.concatenate([chunk.arrays[names[0]] for chunk in done])
        if isinstance(rows, TokenRows):
            tokens = tuple(int(t) for t in rows.batch.num_tokens.reshape(-1))
        else:
            counts = np.concatenate([chunk.arrays[c.OUTPUT_NUM_TOKENS] for chunk in done])
            tokens = tuple(int(t) for t in counts.reshape(-1))
        return values.reshape(n, -1), tokens, info.meta.version or done[0].version

    async def classify(
        self, target: ModelTarget, rows: Rows, *, timeout: float | None = None
    ) -> ClassifyResult:
        values, tokens, version = await self._infer(target, rows, c.OUTPUT_PROBS, timeout)
        labels = (await self._load_info(target, timeout)).meta.labels
        probs: FloatArray = values.astype(np.float32)
        if probs.shape[1] != len(labels):
            raise BackendError(
                f"Triton model {target.backend_model!r} returned {probs.shape[1]} scores per "
                f"input but declares {len(labels)} labels"
            )
        return ClassifyResult(probs, labels, tokens, version)

    async def embed(
        self, target: ModelTarget, rows: Rows, *, timeout: float | None = None
    ) -> EmbedResult:
        values, tokens, version = await self._infer(target, rows, c.OUTPUT_EMBEDDING, timeout)
        vectors: FloatArray = values.astype(np.float32)
        return EmbedResult(vectors, tokens, version)

    async def generate(
        self,
        target: ModelTarget,
        prompt: str,
        params: GenerationParams,
        *,
        truncate: bool,
        timeout: float | None = None,
    ) -> AsyncIterator[GenerateChunk]:
        """Stream ``target``'s completion of ``prompt`` (see :mod:`gateway.triton_generate`)."""
        budget = self._request_timeout if timeout is None else timeout
        await self._load_info(target, budget)  # checks it is a decoupled generate model
        chunks = stream_generation(
            self._client,
            target.backend_model,
            target.version_str,
            generation_inputs(prompt, params, truncate=truncate),
            url=self.url,
            timeout=max(budget, 0.001),
        )
        try:
            async for chunk in chunks:
                yield chunk
        except GatewayError as exc:
            if isinstance(exc, BackendUnavailable | ModelNotFound):
                self._forget(target)
            raise
        finally:
            await chunks.aclose()

    async def close(self) -> None:
        await self._client.close()
