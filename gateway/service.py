"""The ``lmforge.v1.InferenceService`` servicer: validate, route, execute, answer.

Every RPC goes through :meth:`InferenceServicer._handle`, which times it, enforces the
concurrency limit, records metrics and turns any exception into a gRPC status through
:func:`gateway.errors.to_grpc_status` (the one place errors are mapped). Routing is the
router's (:mod:`gateway.routing`), execution (fallback, cascade, shadow, batching) the plan
executor's (:mod:`gateway.execution`); this module only speaks protobuf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf import duration_pb2
from lmforge_client._proto.lmforge.v1 import (
    classify_pb2,
    common_pb2,
    embed_pb2,
    generate_pb2,
    inference_service_pb2_grpc,
    models_pb2,
)
from lmforge_client.metadata import PIN_METADATA_KEY, ROUTING_KEY_METADATA_KEY

from gateway.backend import ModelMetadata
from gateway.config import LimitsConfig
from gateway.dispatch import Answer
from gateway.errors import (
    BackendError,
    DeadlineExceeded,
    GatewayError,
    Overloaded,
    error_kind,
    to_grpc_status,
)
from gateway.execution import Inputs, Outcome, PlanExecutor
from gateway.generation import (
    Generations,
    Produced,
    generation_deadline,
    generation_params,
    last_message_fields,
    served_by_generation,
)
from gateway.metrics import GatewayMetrics
from gateway.postprocess import rank_labels, shape_embeddings
from gateway.routing import Route, RoutePlan
from gateway.validation import (
    check_dimensions,
    check_pairs_for_model,
    raise_if_any,
    truncate_flag,
    validate_classify,
    validate_embed,
    validate_generate,
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


def _timing(started: float, outcome: Outcome) -> common_pb2.Timing:
    total = time.perf_counter() - started
    return common_pb2.Timing(
        queue_time=_duration(max(total - outcome.run_seconds, 0.0)),
        inference_time=_duration(outcome.run_seconds),
        total_time=_duration(total),
    )


def _served_by(answer: Answer) -> common_pb2.ServedBy:
    d = answer.deployment
    return common_pb2.ServedBy(
        model=d.route,
        triton_model=d.triton_model,
        triton_model_version=answer.version or ("" if d.version is None else str(d.version)),
    )


def _usage(num_tokens: tuple[int, ...]) -> common_pb2.Usage:
    total = int(sum(num_tokens))
    return common_pb2.Usage(input_tokens=total, output_tokens=0, total_tokens=total)


def _estimate_longest(texts: list[str], pairs: list[str]) -> int:
    """Tokens of the longest input, estimated at about 4 characters a token (length rules)."""
    lengths = [len(t) + (len(pairs[i]) if pairs else 0) for i, t in enumerate(texts)]
    return 2 + max(lengths, default=0) // 4


class InferenceServicer(inference_service_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self,
        executor: PlanExecutor,
        limits: LimitsConfig,
        metrics: GatewayMetrics,
        *,
        default_timeout: float = 30.0,
        info_timeout: float = 2.0,
        max_concurrent_requests: int = 512,
        generate_timeout: float = 300.0,
    ) -> None:
        self.executor = executor
        self.limits = limits
        self._metrics = metrics
        self._default_timeout = default_timeout
        self._info_timeout = info_timeout
        self._generate_timeout = generate_timeout
        self._max_in_flight = max_concurrent_requests
        self._in_flight = 0
        self.generations = Generations(executor, metrics, info_timeout)

    # -- plumbing ------------------------------------------------------------------------
    def _deadline(self, context: Context) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return time.monotonic() + self._default_timeout
        if remaining <= 0:
            raise DeadlineExceeded("the request's deadline passed before it was sent")
        return time.monotonic() + min(float(remaining), self._default_timeout)

    def _plan(self, model: str, task: str, context: Context, longest: int) -> RoutePlan:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        return self.executor.router.plan(
            model,
            task,
            longest_tokens=longest,
            routing_key=metadata.get(ROUTING_KEY_METADATA_KEY),
            pin=metadata.get(PIN_METADATA_KEY),
        )

    async def _meta(self, plan: RoutePlan, deadline: float) -> ModelMetadata:
        """The metadata of the deployment expected to answer; a timeout is the caller's."""
        timeout = min(deadline - time.monotonic(), self._info_timeout)
        try:
            async with asyncio.timeout(max(timeout, 0.001)):
                return await self.executor.dispatcher.runner(plan.deployments[0]).meta()
        except TimeoutError:
            raise DeadlineExceeded(
                f"no description of {plan.deployments[0].triton_model!r} within {timeout:.3f} s"
            ) from None

    async def _execute(self, plan: RoutePlan, inputs: Inputs) -> Outcome:
        try:
            async with asyncio.timeout(max(inputs.deadline - time.monotonic(), 0.001)):
                return await self.executor.execute(plan, inputs)
        except TimeoutError:
            raise DeadlineExceeded(f"{plan.model!r} did not answer in time") from None

    def _model_label(self, model: str) -> str:
        return model if model in self.executor.router.table.routes else "unknown"

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
        """One RPC, unary or streaming: yields its start time; counts it against the
        concurrency limit, records its metrics and aborts it with the status of any error,
        also one raised after a stream's first message."""
        started = time.perf_counter()
        model_label = self._model_label(model)
        code = grpc.StatusCode.OK
        self._metrics.in_flight.inc()
        try:
            if self._in_flight >= self._max_in_flight:
                raise Overloaded(f"{self._in_flight} requests in flight; retry later")
            self._in_flight += 1
            try:
                yield started
            finally:
                self._in_flight -= 1
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

    def _observe(self, rpc: str, model: str, outcome: Outcome) -> None:
        self._metrics.backend_latency.labels(rpc, model).observe(outcome.run_seconds)
        answer = outcome.primary
        self._metrics.queue_seconds.labels(model, answer.deployment.name).observe(
            outcome.queue_seconds
        )

    # -- RPCs ----------------------------------------------------------------------------
    async def Classify(
        self, request: classify_pb2.ClassifyRequest, context: Context
    ) -> classify_pb2.ClassifyResponse:
        async def work(started: float) -> classify_pb2.ClassifyResponse:
            texts = list(request.inputs)
            pairs = list(request.pairs)
            validate_classify(
                request.model, texts, request.truncation, request.top_k, self.limits, pairs
            )
            plan = self._plan(request.model, "classify", context, _estimate_longest(texts, pairs))
            deadline = self._deadline(context)
            meta = await self._meta(plan, deadline)
            raise_if_any(check_pairs_for_model(request.model, bool(pairs), meta.text_pairs))
            truncate = truncate_flag(request.truncation)
            inputs = Inputs(tuple(texts), tuple(pairs) or None, (truncate,) * len(texts), deadline)
            outcome = await self._execute(plan, inputs)
            self._observe("Classify", request.model, outcome)
            labels = outcome.primary.meta.labels
            if outcome.values.shape != (len(texts), len(labels)):
                raise BackendError(
                    f"{request.model!r} returned scores of shape {outcome.values.shape} "
                    f"for {len(texts)} inputs and {len(labels)} labels"
                )
            return classify_pb2.ClassifyResponse(
                results=[
                    classify_pb2.Classification(
                        labels=[
                            classify_pb2.LabelScore(label=label, score=score)
                            for label, score in rank_labels(row, labels, request.top_k)
                        ],
                        input_tokens=tokens,
                        served_by=_served_by(answer),
                    )
                    for row, tokens, answer in zip(
                        outcome.values, outcome.num_tokens, outcome.answered_by, strict=True
                    )
                ],
                served_by=_served_by(outcome.primary),
                usage=_usage(outcome.num_tokens),
                timing=_timing(started, outcome),
            )

        return await self._handle("Classify", request.model, len(request.inputs), context, work)

    async def Embed(
        self, request: embed_pb2.EmbedRequest, context: Context
    ) -> embed_pb2.EmbedResponse:
        async def work(started: float) -> embed_pb2.EmbedResponse:
            texts = list(request.inputs)
            dimensions = request.dimensions if request.HasField("dimensions") else None
            validate_embed(request.model, texts, request.truncation, dimensions, self.limits)
            plan = self._plan(request.model, "embed", context, _estimate_longest(texts, []))
            deadline = self._deadline(context)
            if dimensions is not None:
                meta = await self._meta(plan, deadline)
                raise_if_any(check_dimensions(dimensions, meta.dimension))
            truncate = truncate_flag(request.truncation)
            inputs = Inputs(tuple(texts), None, (truncate,) * len(texts), deadline)
            outcome = await self._execute(plan, inputs)
            self._observe("Embed", request.model, outcome)
            if outcome.values.ndim != 2 or outcome.values.shape[0] != len(texts):
                raise BackendError(
                    f"{request.model!r} returned vectors of shape {outcome.values.shape} "
                    f"for {len(texts)} inputs"
                )
            raise_if_any(check_dimensions(dimensions, int(outcome.values.shape[1])))
            vectors = shape_embeddings(outcome.values, dimensions, request.normalize)
            return embed_pb2.EmbedResponse(
                embeddings=[
                    embed_pb2.Embedding(values=row.tolist(), input_tokens=tokens)
                    for row, tokens in zip(vectors, outcome.num_tokens, strict=True)
                ],
                dimensions=int(vectors.shape[1]),
                served_by=_served_by(outcome.primary),
                usage=_usage(outcome.num_tokens),
                timing=_timing(started, outcome),
            )

        return await self._handle("Embed", request.model, len(request.inputs), context, work)

    def _generate(
        self,
        rpc: str,
        request: generate_pb2.GenerateRequest | generate_pb2.GenerateStreamRequest,
        context: Context,
        started: float,
    ) -> AsyncIterator[Produced]:
        params = generation_params(request.parameters, request.use_chat_template)
        validate_generate(request.model, request.prompt, request.truncation, params, self.limits)
        plan = self._plan(request.model, "generate", context, len(request.prompt) // 4)
        deadline = generation_deadline(context.time_remaining(), self._generate_timeout)
        truncate = truncate_flag(request.truncation)
        return self.generations.stream(
            rpc, plan, request.prompt, params, truncate=truncate, deadline=deadline, started=started
        )

    async def Generate(
        self, request: generate_pb2.GenerateRequest, context: Context
    ) -> generate_pb2.GenerateResponse:
        async def work(started: float) -> generate_pb2.GenerateResponse:
            pieces: list[str] = []
            async for last in self._generate("Generate", request, context, started):
                pieces.append(last.chunk.text)
            return generate_pb2.GenerateResponse(  # the stream always ends with a last chunk
                text="".join(pieces),
                served_by=served_by_generation(last),
                **last_message_fields(last, started),
            )

        return await self._handle("Generate", request.model, 1, context, work)

    async def GenerateStream(
        self, request: generate_pb2.GenerateStreamRequest, context: Context
    ) -> AsyncIterator[generate_pb2.GenerateStreamResponse]:
        async with self._scope("GenerateStream", request.model, 1, context) as started:
            async for produced in self._generate("GenerateStream", request, context, started):
                chunk = produced.chunk
                last = last_message_fields(produced, started) if chunk.finish_reason else {}
                yield generate_pb2.GenerateStreamResponse(
                    text=chunk.text, served_by=served_by_generation(produced), **last
                )

    # -- ListModels ------------------------------------------------------------------------
    async def _describe(self, route: Route) -> models_pb2.ModelInfo:
        router = self.executor.router
        dispatcher = self.executor.dispatcher
        policies = [
            name
            for name, used in (
                ("split", route.split is not None),
                ("length", bool(route.length_rules)),
                ("cascade", route.cascade is not None),
                ("shadow", route.shadow is not None),
            )
            if used
        ]
        info = models_pb2.ModelInfo(
            name=route.name,
            task=_TASKS[route.task],
            routing=",".join(policies) or "single",
        )
        first = route.serving[0] if route.serving else route.deployments[0]
        info.triton_model = first.triton_model
        info.triton_model_version = "" if first.version is None else str(first.version)
        split = route.split or {}
        for deployment in route.deployments:
            runner = dispatcher.runner(deployment)
            status = models_pb2.DeploymentStatus(
                name=deployment.name,
                endpoint=deployment.endpoint,
                triton_model=deployment.triton_model,
                triton_model_version="" if deployment.version is None else str(deployment.version),
                breaker=router.breaker(deployment).state,
                split_weight=float(split.get(deployment.name, 0.0)),
                shadow=deployment == route.shadow,
                queued_inputs=runner.queued_inputs,
                gateway_tokenizes=runner.tokenizes_here,
            )
            try:
                async with asyncio.timeout(self._info_timeout):
                    status.ready = await runner.backend.ready(runner.target)
                    meta = await runner.meta() if status.ready else None
            except Exception as exc:  # an unreachable deployment is listed as not ready
                logger.debug("describing %s/%s failed: %r", route.name, deployment.name, exc)
                status.ready, meta = False, None
            if meta is not None and deployment == first:
                info.labels.extend(meta.labels)
                info.dimension = meta.dimension or 0
                info.max_input_tokens = meta.max_length or 0
                info.regression = meta.regression
                info.text_pairs = meta.text_pairs
                if meta.version and not info.triton_model_version:
                    info.triton_model_version = meta.version
            info.deployments.append(status)
        info.ready = any(s.ready for s in info.deployments if not s.shadow)
        return info

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: Context
    ) -> models_pb2.ListModelsResponse:
        async def work(_started: float) -> models_pb2.ListModelsResponse:
            routes = list(self.executor.router.table.routes.values())
            infos = await asyncio.gather(*(self._describe(r) for r in routes))
            return models_pb2.ListModelsResponse(models=infos)

        return await self._handle("ListModels", "", 0, context, work)
