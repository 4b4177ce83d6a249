"""Generate and GenerateStream between the servicer and a backend: request → parameters,
routing outcome → one backend stream, chunks → metrics.

Generation is not batched by the gateway: the generate model batches in flight inside Triton.
A request goes to the first deployment of its route plan; a deployment that is unavailable
before it produced anything hands the request to the next one of the plan, never after (a
stream that has started stays where it started). Time to first token, tokens and tokens/s,
and the streams in progress are recorded per logical model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import duration_pb2
from lmforge_client._proto.lmforge.v1 import common_pb2, generate_pb2

from gateway.backend import GenerateChunk, GenerationParams
from gateway.errors import (
    BackendError,
    BackendUnavailable,
    DeadlineExceeded,
    GatewayError,
    ModelNotFound,
)
from gateway.execution import PlanExecutor
from gateway.metrics import GatewayMetrics
from gateway.routing import Deployment, RoutePlan
from gateway.validation import check_max_new_tokens, raise_if_any
from triton_models.runtime import contract as c

logger = logging.getLogger(__name__)

#: contract finish reasons → the proto enum
FINISH_REASONS: dict[str, generate_pb2.FinishReason.ValueType] = {
    c.FINISH_END_OF_SEQUENCE: generate_pb2.FINISH_REASON_END_OF_SEQUENCE,
    c.FINISH_STOP_SEQUENCE: generate_pb2.FINISH_REASON_STOP_SEQUENCE,
    c.FINISH_LENGTH: generate_pb2.FINISH_REASON_LENGTH,
    c.FINISH_CANCELLED: generate_pb2.FINISH_REASON_CANCELLED,
}
#: errors before the first chunk after which the plan's next deployment is tried
_NEXT_DEPLOYMENT: tuple[type[GatewayError], ...] = (BackendUnavailable, ModelNotFound)


def generation_params(
    parameters: generate_pb2.SamplingParameters, use_chat_template: bool
) -> GenerationParams:
    return GenerationParams(
        max_new_tokens=parameters.max_new_tokens,
        temperature=parameters.temperature,
        top_p=parameters.top_p,
        top_k=parameters.top_k,
        stop=tuple(parameters.stop),
        seed=parameters.seed if parameters.HasField("seed") else None,
        repetition_penalty=parameters.repetition_penalty,
        use_chat_template=use_chat_template,
    )


def generation_deadline(remaining: float | None, limit: float) -> float:
    """The ``time.monotonic()`` instant a generation must end by: the caller's deadline
    (``remaining`` seconds, None when it set none) capped at ``limit``."""
    if remaining is not None:
        if remaining <= 0:
            raise DeadlineExceeded("the request's deadline passed before it was sent")
        limit = min(limit, float(remaining))
    return time.monotonic() + limit


def finish_reason(chunk: GenerateChunk) -> generate_pb2.FinishReason.ValueType:
    if chunk.finish_reason is None:
        return generate_pb2.FINISH_REASON_UNSPECIFIED
    return FINISH_REASONS[chunk.finish_reason]


@dataclass(frozen=True)
class Produced:
    """One chunk and where it came from; ``backend_seconds`` is the time spent waiting on
    the backend so far (the rest of the call's time went to routing and validation)."""

    chunk: GenerateChunk
    deployment: Deployment
    backend_seconds: float


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(max(seconds, 0.0) * 1e9))
    return d


def served_by_generation(produced: Produced) -> common_pb2.ServedBy:
    d = produced.deployment
    version = produced.chunk.version or ("" if d.version is None else str(d.version))
    return common_pb2.ServedBy(
        model=d.route, triton_model=d.triton_model, triton_model_version=version
    )


def last_message_fields(produced: Produced, started: float) -> dict[str, Any]:
    """The fields of a generation's last message (either RPC): finish reason, stop sequence,
    usage and timing (``started``: ``time.perf_counter()`` at receipt)."""
    chunk = produced.chunk
    total = time.perf_counter() - started
    inference = min(produced.backend_seconds, total)
    return {
        "finish_reason": finish_reason(chunk),
        "stop_sequence": chunk.stop_sequence,
        "usage": common_pb2.Usage(
            input_tokens=chunk.input_tokens,
            output_tokens=chunk.output_tokens,
            total_tokens=chunk.input_tokens + chunk.output_tokens,
        ),
        "timing": common_pb2.Timing(
            queue_time=_duration(total - inference),
            inference_time=_duration(inference),
            total_time=_duration(total),
        ),
    }


class Generations:
    """Runs generations over the executor's router and dispatcher (their backends)."""

    def __init__(self, executor: PlanExecutor, metrics: GatewayMetrics, info_timeout: float):
        self._executor = executor
        self._metrics = metrics
        self._info_timeout = info_timeout

    async def stream(
        self,
        rpc: str,
        plan: RoutePlan,
        prompt: str,
        params: GenerationParams,
        *,
        truncate: bool,
        deadline: float,
        started: float,
    ) -> AsyncIterator[Produced]:
        """The chunks of one generation; raises gateway errors (``DeadlineExceeded`` when
        ``deadline``, a ``time.monotonic()`` instant, passes)."""
        router = self._executor.router
        deployments = plan.deployments
        for index, deployment in enumerate(deployments):
            last = index == len(deployments) - 1
            if not router.breaker(deployment).allow() and not last:
                continue
            produced = finished = False
            try:
                async for item in self._one(
                    rpc, plan, deployment, prompt, params, truncate, deadline, started
                ):
                    produced = True
                    finished = item.chunk.finish_reason is not None
                    yield item
            except _NEXT_DEPLOYMENT as exc:
                router.record(deployment, ok=False)
                if produced or last:
                    raise
                self._metrics.fallbacks.labels(plan.model, deployment.name).inc()
                logger.info(
                    "%s/%s: %s; trying the next deployment", plan.model, deployment.name, exc
                )
                continue
            if not finished:
                raise BackendError(
                    f"{deployment.triton_model!r} ended the generation without a last chunk"
                )
            router.record(deployment, ok=True)
            self._metrics.routed.labels(plan.model, deployment.name, plan.reason).inc()
            return

    async def _one(
        self,
        rpc: str,
        plan: RoutePlan,
        deployment: Deployment,
        prompt: str,
        params: GenerationParams,
        truncate: bool,
        deadline: float,
        started: float,
    ) -> AsyncIterator[Produced]:
        runner = self._executor.dispatcher.runner(deployment)
        backend, target = runner.backend, runner.target
        model = plan.model
        try:
            async with asyncio.timeout(
                max(min(deadline - time.monotonic(), self._info_timeout), 0)
            ):
                meta = await backend.model_info(target)
        except TimeoutError:
            raise DeadlineExceeded(
                f"no description of {deployment.triton_model!r} in time"
            ) from None
        raise_if_any(check_max_new_tokens(params.max_new_tokens, meta.max_new_tokens))
        active = self._metrics.generate_active.labels(model)
        active.inc()
        sent_at = time.perf_counter()
        first: float | None = None
        tokens = 0
        chunks = backend.generate(
            target, prompt, params, truncate=truncate, timeout=deadline - time.monotonic()
        )
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                async for chunk in chunks:
                    now = time.perf_counter()
                    if first is None and (chunk.text or chunk.finish_reason):
                        first = now
                        self._metrics.generate_first_token.labels(rpc, model).observe(now - started)
                    if chunk.output_tokens > tokens:
                        self._metrics.generated_tokens.labels(model).inc(
                            chunk.output_tokens - tokens
                        )
                        tokens = chunk.output_tokens
                    yield Produced(chunk, deployment, now - sent_at)
                    if chunk.finish_reason is not None:
                        break
        except TimeoutError:
            raise DeadlineExceeded(f"{model!r} did not finish generating in time") from None
        finally:
            active.dec()
            close = getattr(chunks, "aclose", None)
            if close is not None:  # stop the backend's stream now, not when collected
                await close()
        if first is not None and tokens > 1:
            elapsed = time.perf_counter() - first
            if elapsed > 0:
                self._metrics.generate_tokens_per_second.labels(model).observe(
                    (tokens - 1) / elapsed
                )
