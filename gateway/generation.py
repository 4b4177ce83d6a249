"""Generation inside the engine: a route plan → one backend stream, through the fallback loop.

Generation is not batched by the gateway: the generate model batches in flight inside Triton.
A request goes to the first deployment of its plan; one that cannot take it before it produced
anything hands it to the next (:mod:`gateway.fallback`, the same loop as every other call).
Tokens, tokens/s and the streams in progress are recorded per logical model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from gateway.backend import GenerationParams
from gateway.dispatch import Dispatcher
from gateway.engine_types import GenerationChunk, ServedBy
from gateway.errors import BackendError, DeadlineExceeded
from gateway.fallback import Fallback
from gateway.metrics import GatewayMetrics
from gateway.routing import Deployment, RoutePlan
from gateway.validation import check_max_new_tokens, raise_if_any


class Generations:
    """Runs generations over the engine's runners (their backends and targets)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        fallback: Fallback,
        metrics: GatewayMetrics,
        info_timeout: float,
    ) -> None:
        self._dispatcher = dispatcher
        self._fallback = fallback
        self._metrics = metrics
        self._info_timeout = info_timeout

    def stream(
        self,
        plan: RoutePlan,
        prompt: str,
        params: GenerationParams,
        *,
        truncate: bool,
        deadline: float,
    ) -> AsyncIterator[GenerationChunk]:
        """The chunks of one generation; raises gateway errors (``DeadlineExceeded`` when
        ``deadline``, a ``time.monotonic()`` instant, passes)."""

        def attempt(deployment: Deployment) -> AsyncIterator[GenerationChunk]:
            return self._one(plan, deployment, prompt, params, truncate, deadline)

        return self._fallback.stream(plan, plan.deployments, attempt)

    async def _one(
        self,
        plan: RoutePlan,
        deployment: Deployment,
        prompt: str,
        params: GenerationParams,
        truncate: bool,
        deadline: float,
    ) -> AsyncIterator[GenerationChunk]:
        runner = self._dispatcher.runner(deployment)
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
        finished = False
        chunks = backend.generate(
            target, prompt, params, truncate=truncate, timeout=deadline - time.monotonic()
        )
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                async for chunk in chunks:
                    now = time.perf_counter()
                    if first is None and (chunk.text or chunk.finish_reason):
                        first = now
                    if chunk.output_tokens > tokens:
                        self._metrics.generated_tokens.labels(model).inc(
                            chunk.output_tokens - tokens
                        )
                        tokens = chunk.output_tokens
                    version = chunk.version or (
                        "" if deployment.version is None else str(deployment.version)
                    )
                    served = ServedBy(model, deployment.name, deployment.triton_model, version)
                    finished = chunk.finish_reason is not None
                    yield GenerationChunk(
                        chunk.text,
                        chunk.finish_reason,
                        chunk.stop_sequence,
                        chunk.input_tokens,
                        chunk.output_tokens,
                        served,
                        now - sent_at,
                    )
                    if finished:
                        break
        except TimeoutError:
            raise DeadlineExceeded(f"{model!r} did not finish generating in time") from None
        finally:
            active.dec()
            close = getattr(chunks, "aclose", None)
            if close is not None:  # stop the backend's stream now, not when collected
                await close()
        if not finished:
            raise BackendError(
                f"{deployment.triton_model!r} ended the generation without a last chunk"
            )
        if first is not None and tokens > 1:
            elapsed = time.perf_counter() - first
            if elapsed > 0:
                self._metrics.generate_tokens_per_second.labels(model).observe(
                    (tokens - 1) / elapsed
                )
