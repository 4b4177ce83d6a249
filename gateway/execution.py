"""Carrying out a :class:`~gateway.routing.RoutePlan`: fallback, cascade and shadow.

* **Fallback**: the plan's deployments are tried in order by the one loop of
  :mod:`gateway.fallback` (which errors hand a request on, and which feed the breakers).
* **Cascade** (classify): every input goes to the small model; the inputs whose top score is
  under the threshold are asked again of the large one and merged back in place. Each input
  says which deployment answered it. If the large model cannot answer, the small model's
  answers stand (counted as ``escalation_failed``).
* **Shadow**: a share of requests is copied to a candidate deployment in the background,
  never touching the response; agreement with the answer (same top label, or embedding
  cosine) is recorded. Shadows are bounded: beyond ``max_shadows`` in flight they are
  skipped, so a slow candidate cannot eat the serving path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gateway.backend import FloatArray
from gateway.dispatch import Answer, Dispatcher
from gateway.errors import BackendError, GatewayError
from gateway.fallback import Fallback
from gateway.metrics import GatewayMetrics
from gateway.routing import (
    Deployment,
    RoutePlan,
    escalation_indices,
    label_agreement,
    mean_cosine,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inputs:
    texts: tuple[str, ...]
    pairs: tuple[str, ...] | None
    truncate: tuple[bool, ...]
    deadline: float

    def subset(self, indices: Sequence[int]) -> Inputs:
        pairs = None if self.pairs is None else tuple(self.pairs[i] for i in indices)
        return Inputs(
            tuple(self.texts[i] for i in indices),
            pairs,
            tuple(self.truncate[i] for i in indices),
            self.deadline,
        )


@dataclass(frozen=True)
class Outcome:
    """What a request gets: one output row per input and which answer produced it."""

    values: FloatArray  # [n, width]
    num_tokens: tuple[int, ...]
    answered_by: tuple[Answer, ...]  # per input
    queue_seconds: float
    run_seconds: float

    @property
    def primary(self) -> Answer:
        return self.answered_by[0]


def _outcome(answer: Answer) -> Outcome:
    n = answer.values.shape[0]
    return Outcome(
        answer.values,
        answer.num_tokens,
        (answer,) * n,
        answer.queue_seconds,
        answer.run_seconds,
    )


class PlanExecutor:
    """Executes embed and classify plans over the engine's runners (private to the engine)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        fallback: Fallback,
        metrics: GatewayMetrics,
        *,
        shadow_timeout: float = 30.0,
        max_shadows: int = 8,
    ) -> None:
        self._dispatcher = dispatcher
        self._fallback = fallback
        self._metrics = metrics
        self._shadow_timeout = shadow_timeout
        self._max_shadows = max_shadows
        self._shadows: set[asyncio.Task[None]] = set()

    async def execute(self, plan: RoutePlan, inputs: Inputs) -> Outcome:
        if plan.cascade is not None and plan.deployments[0] == plan.cascade.first:
            outcome = await self._cascade(plan, inputs)
        else:
            outcome = _outcome(await self._with_fallback(plan, plan.deployments, inputs))
        if plan.shadow is not None:
            self._start_shadow(plan, plan.shadow, inputs, outcome)
        return outcome

    async def _run(self, deployment: Deployment, inputs: Inputs) -> Answer:
        return await self._dispatcher.runner(deployment).run(
            inputs.texts, inputs.pairs, inputs.truncate, inputs.deadline
        )

    async def _with_fallback(
        self, plan: RoutePlan, deployments: Sequence[Deployment], inputs: Inputs
    ) -> Answer:
        return await self._fallback.call(plan, deployments, lambda d: self._run(d, inputs))

    # -- cascade ---------------------------------------------------------------------------
    async def _cascade(self, plan: RoutePlan, inputs: Inputs) -> Outcome:
        cascade = plan.cascade
        assert cascade is not None
        first = await self._with_fallback(plan, plan.deployments, inputs)
        outcome = _outcome(first)
        if first.deployment != cascade.first:  # the small model could not answer
            return outcome
        top = first.values.max(axis=1) if not first.meta.regression else np.ones(len(first.values))
        escalate = escalation_indices([float(v) for v in top], cascade.threshold)
        kept = len(inputs.texts) - len(escalate)
        self._metrics.cascade_inputs.labels(plan.model, "kept").inc(kept)
        if not escalate:
            return outcome
        try:
            second = await self._with_fallback(plan, (cascade.then,), inputs.subset(escalate))
        except GatewayError as exc:
            self._metrics.cascade_inputs.labels(plan.model, "escalation_failed").inc(len(escalate))
            logger.warning(
                "%s: escalation to %s failed (%s); the small model's answers stand",
                plan.model,
                cascade.then.name,
                exc.message,
            )
            return outcome
        if second.meta.labels != first.meta.labels:
            raise BackendError(
                f"cascade of {plan.model!r}: {cascade.first.name} labels {first.meta.labels} "
                f"differ from {cascade.then.name} labels {second.meta.labels}"
            )
        self._metrics.cascade_inputs.labels(plan.model, "escalated").inc(len(escalate))
        values = first.values.copy()
        values[escalate] = second.values
        tokens = list(first.num_tokens)
        answered = list(outcome.answered_by)
        for position, index in enumerate(escalate):
            tokens[index] = second.num_tokens[position]
            answered[index] = second
        return Outcome(
            values,
            tuple(tokens),
            tuple(answered),
            first.queue_seconds + second.queue_seconds,
            first.run_seconds + second.run_seconds,
        )

    # -- shadow ----------------------------------------------------------------------------
    def _start_shadow(
        self, plan: RoutePlan, shadow: Deployment, inputs: Inputs, outcome: Outcome
    ) -> None:
        if len(self._shadows) >= self._max_shadows:
            self._metrics.shadow_requests.labels(plan.model, shadow.name, "skipped").inc()
            return
        copy = Inputs(
            inputs.texts,
            inputs.pairs,
            inputs.truncate,
            time.monotonic() + self._shadow_timeout,
        )
        task = asyncio.create_task(self._shadow(plan, shadow, copy, outcome))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(
        self, plan: RoutePlan, shadow: Deployment, inputs: Inputs, outcome: Outcome
    ) -> None:
        try:
            answer = await self._run(shadow, inputs)
        except Exception as exc:  # a shadow never fails a request; it is counted
            logger.debug("shadow %s/%s failed: %r", plan.model, shadow.name, exc)
            self._metrics.shadow_requests.labels(plan.model, shadow.name, "failed").inc()
            return
        if plan.task == "classify":
            labels = outcome.primary.meta.labels
            agreement = label_agreement(
                [labels[int(i)] for i in outcome.values.argmax(axis=1)],
                [answer.meta.labels[int(i)] for i in answer.values.argmax(axis=1)],
            )
        else:
            agreement = mean_cosine(outcome.values, answer.values)
        self._metrics.shadow_requests.labels(plan.model, shadow.name, "compared").inc()
        self._metrics.shadow_agreement.labels(plan.model, shadow.name).observe(agreement)

    async def close(self) -> None:
        for task in list(self._shadows):
            task.cancel()
        await asyncio.gather(*self._shadows, return_exceptions=True)
