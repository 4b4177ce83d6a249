"""The ``lmforge.v1.InferenceService`` servicer: validate, resolve, call the backend, answer.

Every RPC goes through :meth:`InferenceServicer._handle`, which times it, enforces the
concurrency limit, records metrics and turns any exception into a gRPC status through
:func:`gateway.errors.to_grpc_status` (the one place errors are mapped).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf import duration_pb2

from gateway._proto.lmforge.v1 import (
    classify_pb2,
    common_pb2,
    embed_pb2,
    generate_pb2,
    inference_service_pb2_grpc,
    models_pb2,
)
from gateway.backend import Backend, ModelMetadata, ModelTarget
from gateway.config import LimitsConfig
from gateway.errors import (
    BackendError,
    DeadlineExceeded,
    GatewayError,
    Overloaded,
    Unimplemented,
    error_kind,
    to_grpc_status,
)
from gateway.metrics import GatewayMetrics
from gateway.postprocess import rank_labels, shape_embeddings
from gateway.registry import ModelRegistry
from gateway.validation import (
    check_dimensions,
    check_pairs_for_model,
    raise_if_any,
    truncate_flag,
    validate_classify,
    validate_embed,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

SERVICE_NAME = "lmforge.v1.InferenceService"
_TASKS = {
    "embed": models_pb2.TASK_EMBED,
    "classify": models_pb2.TASK_CLASSIFY,
    "generate": models_pb2.TASK_GENERATE,
}


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(max(seconds, 0.0) * 1e9))
    return d


class RequestClock:
    """Marks the phases of one request on the monotonic clock."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.sent = self.start
        self.answered = self.start

    def mark_sent(self) -> None:
        self.sent = time.perf_counter()

    def mark_answered(self) -> None:
        self.answered = time.perf_counter()

    @property
    def backend_seconds(self) -> float:
        return self.answered - self.sent

    def timing(self) -> common_pb2.Timing:
        return common_pb2.Timing(
            queue_time=_duration(self.sent - self.start),
            inference_time=_duration(self.answered - self.sent),
            total_time=_duration(time.perf_counter() - self.start),
        )


def _served_by(target: ModelTarget, version: str) -> common_pb2.ServedBy:
    return common_pb2.ServedBy(
        model=target.name,
        triton_model=target.backend_model,
        triton_model_version=version or target.version_str,
    )


def _usage(num_tokens: tuple[int, ...]) -> common_pb2.Usage:
    total = int(sum(num_tokens))
    return common_pb2.Usage(input_tokens=total, output_tokens=0, total_tokens=total)


class InferenceServicer(inference_service_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self,
        backend: Backend,
        registry: ModelRegistry,
        limits: LimitsConfig,
        metrics: GatewayMetrics,
        *,
        default_timeout: float = 30.0,
        info_timeout: float = 2.0,
        max_concurrent_requests: int = 512,
    ) -> None:
        self._backend = backend
        self._registry = registry
        self._limits = limits
        self._metrics = metrics
        self._default_timeout = default_timeout
        self._info_timeout = info_timeout
        self._max_in_flight = max_concurrent_requests
        self._in_flight = 0

    # -- plumbing ------------------------------------------------------------------------
    def _timeout(self, context: Context) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return self._default_timeout
        if remaining <= 0:
            raise DeadlineExceeded("the request's deadline passed before it was sent")
        return min(float(remaining), self._default_timeout)

    async def _call_backend(
        self, clock: RequestClock, timeout: float, call: Awaitable[T], what: str
    ) -> T:
        clock.mark_sent()
        try:
            async with asyncio.timeout(timeout):
                return await call
        except TimeoutError:
            raise DeadlineExceeded(f"{what} did not finish within {timeout:.3f} s") from None
        finally:
            clock.mark_answered()

    async def _model_info(self, target: ModelTarget, timeout: float) -> ModelMetadata:
        """The backend's description of ``target``; a timeout is the caller's deadline."""
        try:
            async with asyncio.timeout(timeout):
                return await self._backend.model_info(target)
        except TimeoutError:
            raise DeadlineExceeded(
                f"no description of {target.backend_model!r} within {timeout:.3f} s"
            ) from None

    async def _handle(
        self,
        rpc: str,
        model: str,
        inputs: int,
        context: Context,
        work: Callable[[RequestClock], Awaitable[T]],
    ) -> T:
        clock = RequestClock()
        model_label = model if self._registry.known(model) else "unknown"
        code = grpc.StatusCode.OK
        self._metrics.in_flight.inc()
        try:
            if self._in_flight >= self._max_in_flight:
                raise Overloaded(f"{self._in_flight} requests in flight; retry later")
            self._in_flight += 1
            try:
                result = await work(clock)
            finally:
                self._in_flight -= 1
            if inputs:
                self._metrics.inputs.labels(rpc, model_label).observe(inputs)
            return result
        except asyncio.CancelledError:  # the caller went away or its deadline passed
            code = grpc.StatusCode.CANCELLED
            self._metrics.failures.labels(rpc, "cancelled").inc()
            raise
        except Exception as exc:
            code = exc.grpc_code if isinstance(exc, GatewayError) else grpc.StatusCode.INTERNAL
            self._metrics.failures.labels(rpc, error_kind(exc)).inc()
            if isinstance(exc, GatewayError):
                logger.debug("%s failed: %s: %s", rpc, code.name, exc.message)
            await context.abort_with_status(to_grpc_status(exc))
            raise  # abort_with_status always raises; this line is not reached
        finally:
            self._metrics.in_flight.dec()
            self._metrics.requests.labels(rpc, model_label, code.name).inc()
            self._metrics.latency.labels(rpc, model_label).observe(
                time.perf_counter() - clock.start
            )
            if clock.answered > clock.sent:
                self._metrics.backend_latency.labels(rpc, model_label).observe(
                    clock.backend_seconds
                )

    # -- RPCs ----------------------------------------------------------------------------
    async def Classify(
        self, request: classify_pb2.ClassifyRequest, context: Context
    ) -> classify_pb2.ClassifyResponse:
        async def work(clock: RequestClock) -> classify_pb2.ClassifyResponse:
            inputs = list(request.inputs)
            pairs = list(request.pairs)
            validate_classify(
                request.model, inputs, request.truncation, request.top_k, self._limits, pairs
            )
            target = self._registry.resolve(request.model, "classify")
            timeout = self._timeout(context)
            meta = await self._model_info(target, min(timeout, self._info_timeout))
            raise_if_any(check_pairs_for_model(request.model, bool(pairs), meta.text_pairs))
            result = await self._call_backend(
                clock,
                timeout,
                self._backend.classify(
                    target,
                    inputs,
                    truncate=truncate_flag(request.truncation),
                    timeout=timeout,
                    pairs=pairs or None,
                ),
                f"classify on {target.backend_model!r}",
            )
            if result.probs.shape != (len(inputs), len(result.labels)):
                raise BackendError(
                    f"{target.backend_model!r} returned scores of shape {result.probs.shape} "
                    f"for {len(inputs)} inputs and {len(result.labels)} labels"
                )
            return classify_pb2.ClassifyResponse(
                results=[
                    classify_pb2.Classification(
                        labels=[
                            classify_pb2.LabelScore(label=label, score=score)
                            for label, score in rank_labels(row, result.labels, request.top_k)
                        ],
                        input_tokens=tokens,
                    )
                    for row, tokens in zip(result.probs, result.num_tokens, strict=True)
                ],
                served_by=_served_by(target, result.version),
                usage=_usage(result.num_tokens),
                timing=clock.timing(),
            )

        return await self._handle("Classify", request.model, len(request.inputs), context, work)

    async def Embed(
        self, request: embed_pb2.EmbedRequest, context: Context
    ) -> embed_pb2.EmbedResponse:
        async def work(clock: RequestClock) -> embed_pb2.EmbedResponse:
            inputs = list(request.inputs)
            dimensions = request.dimensions if request.HasField("dimensions") else None
            validate_embed(request.model, inputs, request.truncation, dimensions, self._limits)
            target = self._registry.resolve(request.model, "embed")
            timeout = self._timeout(context)
            if dimensions is not None:
                meta = await self._model_info(target, min(timeout, self._info_timeout))
                raise_if_any(check_dimensions(dimensions, meta.dimension))
            result = await self._call_backend(
                clock,
                timeout,
                self._backend.embed(
                    target, inputs, truncate=truncate_flag(request.truncation), timeout=timeout
                ),
                f"embed on {target.backend_model!r}",
            )
            if result.vectors.ndim != 2 or result.vectors.shape[0] != len(inputs):
                raise BackendError(
                    f"{target.backend_model!r} returned vectors of shape "
                    f"{result.vectors.shape} for {len(inputs)} inputs"
                )
            raise_if_any(check_dimensions(dimensions, int(result.vectors.shape[1])))
            vectors = shape_embeddings(result.vectors, dimensions, request.normalize)
            return embed_pb2.EmbedResponse(
                embeddings=[
                    embed_pb2.Embedding(values=row.tolist(), input_tokens=tokens)
                    for row, tokens in zip(vectors, result.num_tokens, strict=True)
                ],
                dimensions=int(vectors.shape[1]),
                served_by=_served_by(target, result.version),
                usage=_usage(result.num_tokens),
                timing=clock.timing(),
            )

        return await self._handle("Embed", request.model, len(request.inputs), context, work)

    async def Generate(
        self, request: generate_pb2.GenerateRequest, context: Context
    ) -> generate_pb2.GenerateResponse:
        async def work(_clock: RequestClock) -> generate_pb2.GenerateResponse:
            raise Unimplemented("Generate is not implemented yet")

        return await self._handle("Generate", request.model, 1, context, work)

    async def GenerateStream(
        self, request: generate_pb2.GenerateStreamRequest, context: Context
    ) -> AsyncIterator[generate_pb2.GenerateStreamResponse]:
        async def work(_clock: RequestClock) -> list[generate_pb2.GenerateStreamResponse]:
            raise Unimplemented("GenerateStream is not implemented yet")

        for chunk in await self._handle("GenerateStream", request.model, 1, context, work):
            yield chunk

    async def _describe(self, target: ModelTarget) -> models_pb2.ModelInfo:
        info = models_pb2.ModelInfo(
            name=target.name,
            task=_TASKS[target.task],
            triton_model=target.backend_model,
            triton_model_version=target.version_str,
        )
        try:
            async with asyncio.timeout(self._info_timeout):
                meta: ModelMetadata = await self._backend.model_info(target)
                info.ready = await self._backend.ready(target)
        except Exception as exc:  # an unreachable model is listed as not ready
            logger.debug("model_info(%s) failed: %r", target.name, exc)
            info.ready = False
            return info
        info.labels.extend(meta.labels)
        info.dimension = meta.dimension or 0
        info.max_input_tokens = meta.max_length or 0
        info.regression = meta.regression
        info.text_pairs = meta.text_pairs
        if meta.version and not info.triton_model_version:
            info.triton_model_version = meta.version
        return info

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: Context
    ) -> models_pb2.ListModelsResponse:
        async def work(_clock: RequestClock) -> models_pb2.ListModelsResponse:
            infos = await asyncio.gather(*(self._describe(t) for t in self._registry.targets))
            return models_pb2.ListModelsResponse(models=infos)

        return await self._handle("ListModels", "", 0, context, work)
