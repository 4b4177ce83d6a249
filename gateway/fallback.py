"""The one fallback loop: try a route plan's deployments in order until one answers.

Used for every call the engine makes to a deployment, unary (embed, classify, a cascade's
escalation) and streaming (generate) alike: a unary call is a stream of one item.

**Retryable** (:data:`RETRYABLE`): an error that says *this deployment* cannot take the
request now, raised **before it produced any output**: :class:`BackendUnavailable` (Triton
down or unreachable, a batch in flight on a server that died), :class:`ModelNotFound` (the
model is not loaded there) and :class:`Overloaded` (its queue or its generation slots are
full). The request goes to the plan's next deployment. Once a stream has produced output it
stays where it started: any error ends it. Everything else is the request's own fate and is
not retried anywhere: invalid input, a passed deadline (the deadline is the request's, a
second deployment would not have more time), a backend that broke the contract.

**Health**: :data:`UNHEALTHY` errors (unavailable, not loaded; not merely busy) count against
the deployment's circuit breaker, a success resets it. A deployment whose breaker is open is
skipped unless it is the plan's last resort.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from gateway.errors import BackendUnavailable, GatewayError, ModelNotFound, Overloaded
from gateway.metrics import GatewayMetrics
from gateway.routing import Deployment, RoutePlan, Router

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: errors before any output after which the plan's next deployment is tried
RETRYABLE: tuple[type[GatewayError], ...] = (BackendUnavailable, ModelNotFound, Overloaded)
#: errors that say the deployment is unhealthy (not merely busy): they feed its breaker
UNHEALTHY: tuple[type[GatewayError], ...] = (BackendUnavailable, ModelNotFound)


class Fallback:
    """Runs attempts over a plan's deployments; records outcomes on the router's breakers."""

    def __init__(self, router: Router, metrics: GatewayMetrics) -> None:
        self._router = router
        self._metrics = metrics

    async def stream(
        self,
        plan: RoutePlan,
        deployments: Sequence[Deployment],
        attempt: Callable[[Deployment], AsyncIterator[T]],
    ) -> AsyncIterator[T]:
        """The items of the first deployment that answers (see the module docstring)."""
        last_error: GatewayError | None = None
        for index, deployment in enumerate(deployments):
            last = index == len(deployments) - 1
            if not self._router.breaker(deployment).allow() and not last:
                continue
            produced = False
            try:
                async for item in attempt(deployment):
                    produced = True
                    yield item
            except RETRYABLE as exc:
                if isinstance(exc, UNHEALTHY):
                    self._router.record(deployment, ok=False)
                if produced or last:
                    raise
                last_error = exc
                self._metrics.fallbacks.labels(plan.model, deployment.name).inc()
                logger.info(
                    "%s/%s: %s; trying the next deployment",
                    plan.model,
                    deployment.name,
                    exc.message,
                )
                continue
            self._router.record(deployment, ok=True)
            self._metrics.routed.labels(plan.model, deployment.name, plan.reason).inc()
            return
        raise last_error or BackendUnavailable(
            f"no deployment of {plan.model!r} can take requests now"
        )

    async def call(
        self,
        plan: RoutePlan,
        deployments: Sequence[Deployment],
        attempt: Callable[[Deployment], Awaitable[T]],
    ) -> T:
        """The answer of the first deployment that answers: :meth:`stream` of one item."""

        async def one(deployment: Deployment) -> AsyncIterator[T]:
            yield await attempt(deployment)

        (answer,) = [item async for item in self.stream(plan, deployments, one)]
        return answer
