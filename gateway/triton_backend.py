"""The :class:`~gateway.backend.Backend` that talks to Triton through ``tritonclient.grpc.aio``.

One RPC becomes one Triton request whose batch holds every input (``TEXT`` BYTES and
``TRUNCATE`` BOOL, shape ``[n, 1]``), split into concurrent requests of at most the model's
``max_batch_size`` rows. What a model is (task, labels, dimension, max length) comes from its
config's ``lmforge_*`` parameters (:mod:`triton_models.runtime.contract`), cached for ``info_ttl``
seconds and dropped when the model stops being ready. Triton errors become gateway errors
here (:mod:`gateway.triton_errors`); an input rejected as too long is named ``inputs[i]`` from
the row the tokenizer reports in its error, offset by the chunk's start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import tritonclient.grpc.aio as tc
from tritonclient.utils import InferenceServerException

from gateway.backend import (
    ClassifyResult,
    EmbedResult,
    FloatArray,
    GenerateChunk,
    GenerationParams,
    ModelMetadata,
    ModelTarget,
)
from gateway.config import Task, TritonConfig
from gateway.errors import BackendError, FieldViolation, GatewayError, InvalidInput, Unimplemented
from gateway.triton_errors import translate
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


@dataclass(frozen=True)
class _ModelInfo:
    meta: ModelMetadata
    max_batch_size: int
    fetched_at: float


@dataclass(frozen=True)
class _Batch:
    arrays: dict[str, np.ndarray[Any, Any]]
    version: str


def parse_model_config(name: str, config: dict[str, Any]) -> tuple[ModelMetadata, int]:
    """``(metadata, max_batch_size)`` from a Triton model config rendered as JSON."""
    params = config.get("parameters", {})

    def param(key: str) -> str | None:
        value = params.get(key, {}).get("string_value")
        return None if value in (None, "") else str(value)

    task = param(c.PARAM_TASK)
    if task not in (c.TASK_EMBED, c.TASK_CLASSIFY):
        raise BackendError(
            f"Triton model {name!r} has {c.PARAM_TASK}={task!r}; expected "
            f"{c.TASK_EMBED!r} or {c.TASK_CLASSIFY!r} (is it an lmforge model?)"
        )
    labels: tuple[str, ...] = ()
    dimension: int | None = None
    try:
        if task == c.TASK_CLASSIFY:
            raw = json.loads(param(c.PARAM_LABELS) or "null")
            if not isinstance(raw, list) or not raw:
                raise ValueError(f"{c.PARAM_LABELS} must be a non-empty JSON list")
            labels = tuple(str(label) for label in raw)
        else:
            dimension = int(param(c.PARAM_DIMENSION) or "")
        max_length_raw = param(c.PARAM_MAX_LENGTH)
        max_length = int(max_length_raw) if max_length_raw is not None else None
    except ValueError as exc:
        raise BackendError(f"Triton model {name!r} has bad lmforge parameters: {exc}") from exc
    resolved: Task = "classify" if task == c.TASK_CLASSIFY else "embed"
    problem = param(c.PARAM_PROBLEM_TYPE) or c.PROBLEM_CLASSIFICATION
    if problem not in c.PROBLEM_TYPES:
        raise BackendError(f"Triton model {name!r} has {c.PARAM_PROBLEM_TYPE}={problem!r}")
    meta = ModelMetadata(
        task=resolved,
        labels=labels,
        dimension=dimension,
        max_length=max_length,
        regression=problem == c.PROBLEM_REGRESSION,
        text_pairs=(param(c.PARAM_TEXT_PAIRS) or "false").lower() == "true",
    )
    return meta, int(config.get("max_batch_size", 0))


def _strings(name: str, values: Sequence[str]) -> tc.InferInput:
    tensor = tc.InferInput(name, [len(values), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[v.encode("utf-8")] for v in values], dtype=np.object_))
    return tensor


class TritonBackend:
    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 2.0,
        request_timeout: float = 30.0,
        info_ttl: float = 30.0,
    ) -> None:
        self.url = url
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._info_ttl = info_ttl
        self._client = tc.InferenceServerClient(url, channel_args=_CHANNEL_ARGS)
        self._info: dict[tuple[str, str], _ModelInfo] = {}

    @classmethod
    def from_config(cls, config: TritonConfig) -> TritonBackend:
        return cls(
            config.url,
            connect_timeout=config.connect_timeout_s,
            request_timeout=config.request_timeout_s,
            info_ttl=config.model_info_ttl_s,
        )

    def _error(self, exc: InferenceServerException, target: ModelTarget) -> GatewayError:
        return translate(
            exc.status(), exc.message() or str(exc), url=self.url, model=target.backend_model
        )

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
            self._info.pop((target.backend_model, target.version_str), None)
        return ok

    async def _load_info(self, target: ModelTarget, timeout: float | None) -> _ModelInfo:
        key = (target.backend_model, target.version_str)
        cached = self._info.get(key)
        if cached is not None and time.monotonic() - cached.fetched_at < self._info_ttl:
            return cached
        budget = self._connect_timeout if timeout is None else min(timeout, self._connect_timeout)
        try:
            response = await self._client.get_model_config(
                target.backend_model, target.version_str, as_json=True, client_timeout=budget
            )
        except InferenceServerException as exc:
            raise self._error(exc, target) from None
        meta, max_batch_size = parse_model_config(target.backend_model, response["config"])
        meta = replace(meta, version=await self._served_version(target, budget))
        if meta.task != target.task:
            raise BackendError(
                f"logical model {target.name!r} is configured as {target.task} but Triton model "
                f"{target.backend_model!r} is a {meta.task} model"
            )
        if max_batch_size < 1:
            raise BackendError(
                f"Triton model {target.backend_model!r} has max_batch_size {max_batch_size}; "
                "the lmforge contract needs batching (> 0)"
            )
        info = _ModelInfo(meta, max_batch_size, time.monotonic())
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
            raise self._error(exc, target) from None
        versions = [str(v) for v in metadata.get("versions", [])]
        numeric = [v for v in versions if v.isdigit()]
        return max(numeric, key=int) if numeric else (versions[-1] if versions else "")

    async def model_info(self, target: ModelTarget) -> ModelMetadata:
        return (await self._load_info(target, None)).meta

    # -- inference -----------------------------------------------------------------------
    async def _infer_chunk(
        self,
        target: ModelTarget,
        texts: Sequence[str],
        pairs: Sequence[str] | None,
        offset: int,
        truncate: bool,
        outputs: Sequence[str],
        deadline: float,
    ) -> _Batch:
        n = len(texts)
        inputs = [_strings(c.INPUT_TEXT, texts)]
        if pairs is not None:
            inputs.append(_strings(c.INPUT_TEXT_PAIR, pairs))
        flag = tc.InferInput(c.INPUT_TRUNCATE, [n, 1], "BOOL")
        flag.set_data_from_numpy(np.full((n, 1), truncate, dtype=np.bool_))
        inputs.append(flag)
        try:
            result = await self._client.infer(
                target.backend_model,
                inputs,
                model_version=target.version_str,
                outputs=[tc.InferRequestedOutput(name) for name in outputs],
                client_timeout=max(deadline - time.monotonic(), 0.001),
            )
        except InferenceServerException as exc:
            message = exc.message() or str(exc)
            row = c.too_long_row(message)
            if row is not None and 0 <= row < n:
                raise InvalidInput.from_violations(
                    [FieldViolation(f"inputs[{offset + row}]", message)]
                ) from None
            error = self._error(exc, target)
            if not isinstance(error, InvalidInput):
                self._info.pop((target.backend_model, target.version_str), None)
            raise error from None
        arrays = {}
        for name in outputs:
            array = result.as_numpy(name)
            if array is None or array.shape[0] != n:
                raise BackendError(
                    f"Triton model {target.backend_model!r} returned no {name} rows for {n} inputs"
                )
            arrays[name] = array
        return _Batch(arrays, str(result.get_response().model_version))

    async def _infer(
        self,
        target: ModelTarget,
        inputs: Sequence[str],
        truncate: bool,
        outputs: Sequence[str],
        timeout: float | None,
        pairs: Sequence[str] | None = None,
    ) -> tuple[dict[str, np.ndarray[Any, Any]], str]:
        budget = self._request_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        info = await self._load_info(target, budget)
        size = info.max_batch_size
        starts = range(0, len(inputs), size)
        results = await asyncio.gather(
            *(
                self._infer_chunk(
                    target,
                    inputs[s : s + size],
                    None if pairs is None else pairs[s : s + size],
                    s,
                    truncate,
                    outputs,
                    deadline,
                )
                for s in starts
            ),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        invalid = [f for f in failures if isinstance(f, InvalidInput)]
        if invalid:
            raise InvalidInput.from_violations(v for f in invalid for v in f.violations)
        if failures:
            raise failures[0]
        batches = [r for r in results if isinstance(r, _Batch)]
        merged = {name: np.concatenate([b.arrays[name] for b in batches]) for name in outputs}
        return merged, batches[0].version

    async def classify(
        self,
        target: ModelTarget,
        inputs: Sequence[str],
        *,
        truncate: bool,
        timeout: float | None = None,
        pairs: Sequence[str] | None = None,
    ) -> ClassifyResult:
        arrays, version = await self._infer(
            target, inputs, truncate, (c.OUTPUT_PROBS, c.OUTPUT_NUM_TOKENS), timeout, pairs
        )
        labels = (await self._load_info(target, timeout)).meta.labels
        probs: FloatArray = arrays[c.OUTPUT_PROBS].astype(np.float32).reshape(len(inputs), -1)
        if probs.shape[1] != len(labels):
            raise BackendError(
                f"Triton model {target.backend_model!r} returned {probs.shape[1]} scores per "
                f"input but declares {len(labels)} labels"
            )
        tokens = tuple(int(t) for t in arrays[c.OUTPUT_NUM_TOKENS].reshape(-1))
        return ClassifyResult(probs, labels, tokens, version)

    async def embed(
        self,
        target: ModelTarget,
        inputs: Sequence[str],
        *,
        truncate: bool,
        timeout: float | None = None,
    ) -> EmbedResult:
        arrays, version = await self._infer(
            target, inputs, truncate, (c.OUTPUT_EMBEDDING, c.OUTPUT_NUM_TOKENS), timeout
        )
        vectors: FloatArray = arrays[c.OUTPUT_EMBEDDING].astype(np.float32).reshape(len(inputs), -1)
        tokens = tuple(int(t) for t in arrays[c.OUTPUT_NUM_TOKENS].reshape(-1))
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
        raise Unimplemented("generation through Triton is not implemented yet")
        yield GenerateChunk("")  # pragma: no cover - makes this an async generator

    async def close(self) -> None:
        await self._client.close()
