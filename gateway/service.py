"""The ``lmforge.v1.InferenceService`` servicer: protobuf in, engine call, protobuf out.

Every RPC converts its request to an engine request (:mod:`gateway.wire`), calls the engine
(:class:`~gateway.engine_types.InferenceEngine`) and converts the result back. Within
:meth:`InferenceServicer._scope` it records the per-RPC metrics (requests by status code,
latency, failures by kind, inputs, backend and queue time, time to first token) and turns any
exception into a gRPC status through :func:`gateway.errors.to_grpc_status`, the one mapping.
Admission, validation, routing and execution are the engine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
from lmforge_client._proto.lmforge.v1 import (
    classify_pb2,
    embed_pb2,
    generate_pb2,
    inference_service_pb2_grpc,
    models_pb2,
)
from lmforge_client.metadata import PIN_METADATA_KEY, ROUTING_KEY_METADATA_KEY

from gateway import wire
from gateway.auth import current_caller
from gateway.engine_types import GenerateRequest, GenerationChunk, InferenceEngine, Routing
from gateway.errors import GatewayError, error_kind, to_grpc_status
from gateway.metrics import GatewayMetrics

logger = logging.getLogger(__name__)

T = TypeVar("T")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

SERVICE_NAME = "lmforge.v1.InferenceService"


def _routing(context: Context) -> Routing:
    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    return Routing(metadata.get(ROUTING_KEY_METADATA_KEY), metadata.get(PIN_METADATA_KEY))


def _timeout(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else float(remaining)


# the generated base is Any where mypy cannot see the editable lmforge_client install
class InferenceServicer(inference_service_pb2_grpc.InferenceServiceServicer):  # type: ignore[misc, unused-ignore]
    def __init__(self, engine: InferenceEngine, metrics: GatewayMetrics) -> None:
        self._engine = engine
        self._metrics = metrics

    # -- plumbing ------------------------------------------------------------------------
    async def _handle(
        self,
        rpc: str,
        model: str,
        inputs: int,
        context: Context,
        work: Callable[[float], Awaitable[T]],
    ) -> T:
        async with self._scope(rpc, model, inputs, context) as started:
            return await work(started)
        raise AssertionError("unreachable: the scope re-raises every error")

    @contextlib.asynccontextmanager
    async def _scope(
        self, rpc: str, model: str, inputs: int, context: Context
    ) -> AsyncIterator[float]:
        """One RPC, unary or streaming: yields its start time; records its metrics and aborts
        it with the status of any error, also one raised after a stream's first message."""
        started = time.perf_counter()
        model_label = model if self._engine.serves(model) else "unknown"
        code = grpc.StatusCode.OK
        self._metrics.in_flight.inc()
        try:
            yield started
            if inputs:
                self._metrics.inputs.labels(rpc, model_label).observe(inputs)
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
            self._metrics.latency.labels(rpc, model_label).observe(time.perf_counter() - started)

    def _observe(self, rpc: str, model: str, deployment: str, queue: float, run: float) -> None:
        self._metrics.backend_latency.labels(rpc, model).observe(run)
        self._metrics.queue_seconds.labels(model, deployment).observe(queue)

    # -- RPCs ----------------------------------------------------------------------------
    async def Classify(
        self, request: classify_pb2.ClassifyRequest, context: Context
    ) -> classify_pb2.ClassifyResponse:
        async def work(started: float) -> classify_pb2.ClassifyResponse:
            ask = wire.classify_request(
                request, _routing(context), current_caller(), _timeout(context)
            )
            result = await self._engine.classify(ask)
            served = result.served_by
            self._observe(
                "Classify",
                request.model,
                served.deployment,
                result.queue_seconds,
                result.run_seconds,
            )
            return wire.classify_response(result, started)

        return await self._handle("Classify", request.model, len(request.inputs), context, work)

    async def Embed(
        self, request: embed_pb2.EmbedRequest, context: Context
    ) -> embed_pb2.EmbedResponse:
        async def work(started: float) -> embed_pb2.EmbedResponse:
            ask = wire.embed_request(
                request, _routing(context), current_caller(), _timeout(context)
            )
            result = await self._engine.embed(ask)
            served = result.served_by
            self._observe(
                "Embed", request.model, served.deployment, result.queue_seconds, result.run_seconds
            )
            return wire.embed_response(result, started)

        return await self._handle("Embed", request.model, len(request.inputs), context, work)

    async def _generate(
        self, rpc: str, ask: GenerateRequest, started: float
    ) -> AsyncIterator[GenerationChunk]:
        first = True
        async for chunk in self._engine.generate(ask):
            if first and (chunk.text or chunk.finish_reason):
                first = False
                self._metrics.generate_first_token.labels(rpc, ask.model).observe(
                    time.perf_counter() - started
                )
            yield chunk

    async def Generate(
        self, request: generate_pb2.GenerateRequest, context: Context
    ) -> generate_pb2.GenerateResponse:
        async def work(started: float) -> generate_pb2.GenerateResponse:
            ask = wire.generate_request(
                request, _routing(context), current_caller(), _timeout(context)
            )
            pieces: list[str] = []
            async for last in self._generate("Generate", ask, started):
                pieces.append(last.text)
            return generate_pb2.GenerateResponse(  # the stream always ends with a last chunk
                text="".join(pieces),
                served_by=wire.served_by(last.served_by),
                **wire.last_message_fields(last, started),
            )

        return await self._handle("Generate", request.model, 1, context, work)

    async def GenerateStream(
        self, request: generate_pb2.GenerateStreamRequest, context: Context
    ) -> AsyncIterator[generate_pb2.GenerateStreamResponse]:
        async with self._scope("GenerateStream", request.model, 1, context) as started:
            ask = wire.generate_request(
                request, _routing(context), current_caller(), _timeout(context)
            )
            async for chunk in self._generate("GenerateStream", ask, started):
                last = wire.last_message_fields(chunk, started) if chunk.finish_reason else {}
                yield generate_pb2.GenerateStreamResponse(
                    text=chunk.text, served_by=wire.served_by(chunk.served_by), **last
                )

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: Context
    ) -> models_pb2.ListModelsResponse:
        async def work(_started: float) -> models_pb2.ListModelsResponse:
            infos = await self._engine.models(current_caller())
            return models_pb2.ListModelsResponse(models=[wire.model_info(i) for i in infos])

        return await self._handle("ListModels", "", 0, context, work)
