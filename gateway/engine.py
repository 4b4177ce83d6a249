"""The engine: the one object every transport talks to.

:class:`Engine` answers :meth:`~Engine.embed`, :meth:`~Engine.classify`,
:meth:`~Engine.generate` (an async iterator of chunks; a unary Generate is the stream
collected), :meth:`~Engine.models` and :meth:`~Engine.ready` over plain dataclasses
(:mod:`gateway.engine_types`), and raises :class:`~gateway.errors.GatewayError` subclasses.
Each request takes one path, and each decision on it is made in one place:

1. **admission** (:mod:`gateway.admission`): key quotas, generations and requests in flight;
2. **validation** (:mod:`gateway.validation`): the request against the limits;
3. **routing** (:mod:`gateway.routing`): the plan (pin, length rule on
   :func:`~gateway.token_estimate.estimate_tokens`, split, cascade, fallbacks, shadow);
4. **execution**: embed and classify through :mod:`gateway.execution` (cascade, shadow),
   generate through :mod:`gateway.generation`, both over the one fallback loop of
   :mod:`gateway.fallback`, onto a deployment's runner (:mod:`gateway.dispatch`: tokenizer,
   batcher with its queue-time admission, backend).

:meth:`~Engine.reconfigure` applies a new config without a restart (routes, deployments,
endpoints, batching, limits, key quotas); :meth:`~Engine.close` drains and stops it all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from gateway.admission import Admission, AdmissionPolicy
from gateway.backend import Backend, ModelMetadata
from gateway.batching import BatchStats
from gateway.config import GatewayConfig
from gateway.dispatch import Answer, DeploymentRunner, Dispatcher
from gateway.engine_types import (
    Classification,
    Classifications,
    ClassifyRequest,
    Embeddings,
    EmbedRequest,
    GenerateRequest,
    GenerationChunk,
    ModelInfo,
    Routing,
    ServedBy,
)
from gateway.errors import DeadlineExceeded
from gateway.execution import Inputs, Outcome, PlanExecutor
from gateway.fallback import Fallback
from gateway.generation import Generations
from gateway.metrics import GatewayMetrics
from gateway.model_info import describe_route
from gateway.postprocess import rank_labels, shape_embeddings
from gateway.routing import Deployment, RoutePlan, Router, RoutingTable
from gateway.token_estimate import estimate_tokens
from gateway.validation import (
    check_dimensions,
    check_pairs_for_model,
    raise_if_any,
    validate_classify,
    validate_embed,
    validate_generate,
)

logger = logging.getLogger(__name__)

#: makes the backend of one endpoint of a config
BackendFactory = Callable[[str, GatewayConfig], Backend]
_BREAKER_CODES = {"closed": 0, "half_open": 1, "open": 2}


def _served_by(answer: Answer) -> ServedBy:
    d = answer.deployment
    version = answer.version or ("" if d.version is None else str(d.version))
    return ServedBy(d.route, d.name, d.triton_model, version)


def _endpoint_identity(endpoint: str, config: GatewayConfig) -> tuple[str, str, str]:
    settings = config.endpoint(endpoint)
    tls = "" if settings.tls is None else settings.tls.model_dump_json()
    return settings.url, str(settings.repository or ""), tls


class Engine:
    """See the module docstring. ``backend_factory`` makes one backend per endpoint;
    ``admission`` (optional) is the gate to use, e.g. one whose refusals the transport counts."""

    def __init__(
        self,
        config: GatewayConfig,
        backend_factory: BackendFactory,
        metrics: GatewayMetrics,
        *,
        admission: Admission | None = None,
    ) -> None:
        self._config = config
        self._factory = backend_factory
        self._metrics = metrics
        self._backends = {n: backend_factory(n, config) for n in sorted(config.endpoint_names)}
        self._router = Router(RoutingTable.from_config(config))
        self._dispatcher = Dispatcher(config, self._backends, on_batch=self._observe_batch)
        fallback = Fallback(self._router, metrics)
        self._executor = PlanExecutor(
            self._dispatcher, fallback, metrics, shadow_timeout=config.triton.request_timeout_s
        )
        self._generations = Generations(
            self._dispatcher, fallback, metrics, config.triton.connect_timeout_s
        )
        self._admission = admission or Admission(AdmissionPolicy.from_config(config))
        self._draining: set[asyncio.Task[None]] = set()

    # -- plumbing ----------------------------------------------------------------------------
    def serves(self, model: str) -> bool:
        return model in self._router.table.routes

    def _deadline(self, timeout: float | None, limit: float) -> float:
        """The ``time.monotonic()`` instant a call must end by: the caller's ``timeout``
        (None: it set none) capped at ``limit``."""
        if timeout is not None:
            if timeout <= 0:
                raise DeadlineExceeded("the request's deadline passed before it was sent")
            limit = min(limit, timeout)
        return time.monotonic() + limit

    def _plan(self, model: str, task: str, routing: Routing, longest: int) -> RoutePlan:
        return self._router.plan(
            model,
            task,
            longest_tokens=longest,
            routing_key=routing.routing_key,
            pin=routing.pin,
        )

    async def _meta(self, plan: RoutePlan, deadline: float) -> ModelMetadata:
        """The metadata of the deployment expected to answer; a timeout is the caller's."""
        timeout = min(deadline - time.monotonic(), self._config.triton.connect_timeout_s)
        try:
            async with asyncio.timeout(max(timeout, 0.001)):
                return await self._dispatcher.runner(plan.deployments[0]).meta()
        except TimeoutError:
            raise DeadlineExceeded(
                f"no description of {plan.deployments[0].triton_model!r} within {timeout:.3f} s"
            ) from None

    async def _execute(self, plan: RoutePlan, inputs: Inputs) -> Outcome:
        try:
            async with asyncio.timeout(max(inputs.deadline - time.monotonic(), 0.001)):
                return await self._executor.execute(plan, inputs)
        except TimeoutError:
            raise DeadlineExceeded(f"{plan.model!r} did not answer in time") from None

    def _observe_batch(self, deployment: Deployment, stats: BatchStats) -> None:
        labels = (deployment.route, deployment.name)
        self._metrics.batch_size.labels(*labels).observe(stats.size)
        if stats.padded_tokens:
            self._metrics.batch_padding.labels(*labels).observe(
                stats.real_tokens / stats.padded_tokens
            )

    # -- inference ----------------------------------------------------------------------------
    async def embed(self, request: EmbedRequest) -> Embeddings:
        with self._admission.enter(request.caller):
            validate_embed(request, self._config.limits)
            longest = max(estimate_tokens(t) for t in request.inputs)
            plan = self._plan(request.model, "embed", request.routing, longest)
            deadline = self._deadline(request.timeout, self._config.triton.request_timeout_s)
            if request.dimensions is not None:  # refused before anything is sent
                meta = await self._meta(plan, deadline)
                raise_if_any(check_dimensions(request.dimensions, meta.dimension))
            n = len(request.inputs)
            inputs = Inputs(request.inputs, None, (request.truncate,) * n, deadline)
            outcome = await self._execute(plan, inputs)
            raise_if_any(check_dimensions(request.dimensions, int(outcome.values.shape[1])))
            return Embeddings(
                shape_embeddings(outcome.values, request.dimensions, request.normalize),
                outcome.num_tokens,
                _served_by(outcome.primary),
                outcome.queue_seconds,
                outcome.run_seconds,
            )

    async def classify(self, request: ClassifyRequest) -> Classifications:
        with self._admission.enter(request.caller):
            validate_classify(request, self._config.limits)
            pairs = request.pairs or None
            longest = max(
                estimate_tokens(t, pairs[i] if pairs else None)
                for i, t in enumerate(request.inputs)
            )
            plan = self._plan(request.model, "classify", request.routing, longest)
            deadline = self._deadline(request.timeout, self._config.triton.request_timeout_s)
            meta = await self._meta(plan, deadline)
            raise_if_any(check_pairs_for_model(request.model, bool(pairs), meta.text_pairs))
            n = len(request.inputs)
            inputs = Inputs(request.inputs, pairs, (request.truncate,) * n, deadline)
            outcome = await self._execute(plan, inputs)
            labels = outcome.primary.meta.labels
            return Classifications(
                tuple(
                    Classification(
                        tuple(rank_labels(row, labels, request.top_k)), tokens, _served_by(answer)
                    )
                    for row, tokens, answer in zip(
                        outcome.values, outcome.num_tokens, outcome.answered_by, strict=True
                    )
                ),
                _served_by(outcome.primary),
                outcome.queue_seconds,
                outcome.run_seconds,
            )

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerationChunk]:
        with self._admission.enter(request.caller, generation=True):
            validate_generate(request, self._config.limits)
            plan = self._plan(
                request.model, "generate", request.routing, estimate_tokens(request.text)
            )
            deadline = self._deadline(request.timeout, self._config.triton.generate_timeout_s)
            async for chunk in self._generations.stream(
                plan, request.prompt, request.params, truncate=request.truncate, deadline=deadline
            ):
                yield chunk

    # -- description and health ---------------------------------------------------------------
    async def models(self, caller: str | None = None) -> list[ModelInfo]:
        with self._admission.enter(caller):
            routes = list(self._router.table.routes.values())
            return list(
                await asyncio.gather(
                    *(
                        describe_route(
                            route,
                            self._router,
                            self._dispatcher.runner,
                            self._config.triton.connect_timeout_s,
                        )
                        for route in routes
                    )
                )
            )

    async def _deployment_ready(self, runner: DeploymentRunner) -> bool:
        return await runner.backend.ready(None) and await runner.backend.ready(runner.target)

    async def ready(self) -> bool:
        """Every route has a ready (non-shadow) deployment on a ready Triton. Also refreshes
        the gauges of breakers and queues."""
        for runner in self._dispatcher.runners():
            d = runner.deployment
            self._metrics.queue_depth.labels(d.route, d.name).set(runner.queued_inputs)
            state = self._router.breaker(d).state
            self._metrics.breaker_state.labels(d.route, d.name).set(_BREAKER_CODES[state])
        routes = list(self._router.table.routes.values())
        checks = await asyncio.gather(
            *(
                self._deployment_ready(self._dispatcher.runner(d))
                for route in routes
                for d in route.serving
            )
        )
        ready = iter(checks)
        return all(any(next(ready) for _ in route.serving) for route in routes)

    # -- lifecycle -------------------------------------------------------------------------------
    async def reconfigure(self, config: GatewayConfig) -> None:
        """Apply ``config``: the swap is atomic for new requests (an invalid routing table
        raises ``ConfigError`` before anything changed), in-flight ones finish on what they
        started with, runners (queues) of deployments that left drain and close in the
        background, and so do the backends of endpoints that left or changed."""
        table = RoutingTable.from_config(config)
        old = self._config
        backends: dict[str, Backend] = {}
        for name in sorted(config.endpoint_names):
            same = name in self._backends and name in old.endpoint_names
            if same and _endpoint_identity(name, old) == _endpoint_identity(name, config):
                backends[name] = self._backends[name]
            else:
                backends[name] = self._factory(name, config)
        gone = [b for n, b in self._backends.items() if backends.get(n) is not b]
        retired = self._dispatcher.reconfigure(config, backends)
        self._router.swap(table)
        self._admission.reconfigure(AdmissionPolicy.from_config(config))
        self._backends = backends
        self._config = config
        task = asyncio.create_task(self._retire(retired, gone, config.server.grace_period_s))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)
        logger.info(
            "engine reconfigured: %d routes, %d deployments, %d retired",
            len(table.routes),
            len(self._dispatcher.runners()),
            len(retired),
        )

    async def _retire(
        self, runners: list[DeploymentRunner], backends: list[Backend], grace: float
    ) -> None:
        await asyncio.gather(*(r.close(drain_timeout=grace) for r in runners))
        in_use = {id(b) for b in self._backends.values()}
        for backend in backends:
            if id(backend) not in in_use:
                await backend.close()

    async def close(self) -> None:
        """Stop shadows and background drains, fail what is still queued, close backends."""
        await self._executor.close()
        for task in list(self._draining):
            task.cancel()
        await asyncio.gather(*self._draining, return_exceptions=True)
        await self._dispatcher.close()
        for backend in {id(b): b for b in self._backends.values()}.values():
            await backend.close()
