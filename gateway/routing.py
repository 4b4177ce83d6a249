"""The router: from (logical model, request facts, metadata) to an ordered plan of deployments.

Pure logic, no gRPC and no Triton. A :class:`RoutingTable` is the validated, immutable form
of the routing config (:mod:`gateway.routing_config`); a :class:`Router` holds the current
table and one :class:`CircuitBreaker` per deployment, and answers :meth:`Router.plan`.
Which deployment answers is decided, first rule that applies:

1. ``pinned``: the caller named a deployment in the ``x-lmforge-deployment`` metadata;
2. ``length``: the longest input exceeds a length rule's ``above_tokens`` (largest wins);
3. ``split``: weighted choice, sticky per routing key (a stable hash, not ``hash()``);
4. ``cascade``: the route's cascade starts with its small model (``cascade.first``); with a
   split, only the requests whose arm is ``cascade.first`` cascade (cascade vs. direct A/B);
   when that breaker is open, ``cascade.then`` answers directly;
5. ``default``: the route's first deployment that is not the shadow.

The other deployments follow as fallbacks in config order (none when ``fallback`` is off),
those whose breaker is open moved to the end. A shadow deployment only ever receives copies.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import numpy.typing as npt
from lmforge_client.metadata import PIN_METADATA_KEY
from lmforge_client.status import FieldViolation

from gateway.breaker import CircuitBreaker
from gateway.config import ConfigError, GatewayConfig
from gateway.errors import InvalidInput, ModelNotFound
from gateway.routing_config import BreakerConfig, RouteConfig

logger = logging.getLogger(__name__)


Reason = Literal["pinned", "split", "length", "cascade", "default"]


@dataclass(frozen=True)
class Deployment:
    route: str
    name: str
    endpoint: str
    triton_model: str
    version: int | None


@dataclass(frozen=True)
class Cascade:
    first: Deployment
    then: Deployment
    threshold: float


@dataclass(frozen=True)
class RoutePlan:
    model: str
    task: str
    #: in order of preference: [0] answers, the rest are fallbacks (none when fallback is off)
    deployments: tuple[Deployment, ...]
    #: set when this request cascades; then ``deployments[0] is cascade.first``
    cascade: Cascade | None
    #: set when this request was picked to be copied to the shadow deployment
    shadow: Deployment | None
    reason: Reason


@dataclass(frozen=True)
class Route:
    """One logical model of a :class:`RoutingTable`, resolved to :class:`Deployment` objects."""

    name: str
    task: str
    deployments: tuple[Deployment, ...]  # config order, shadow included
    serving: tuple[Deployment, ...]  # config order, shadow excluded
    split: Mapping[str, float] | None
    length_rules: tuple[tuple[int, Deployment], ...]  # largest threshold first
    cascade: Cascade | None
    shadow: Deployment | None
    shadow_share: float
    fallback: bool
    breaker: BreakerConfig

    @classmethod
    def from_config(cls, config: RouteConfig) -> Route:
        by_name = {
            d.name: Deployment(config.name, d.name, d.endpoint, d.triton_model, d.version)
            for d in config.deployment_configs
        }
        shadow = by_name[config.shadow.deployment] if config.shadow else None
        cascade = config.cascade
        rules = sorted(config.length_rules, key=lambda r: r.above_tokens, reverse=True)
        return cls(
            name=config.name,
            task=config.task,
            deployments=tuple(by_name.values()),
            serving=tuple(d for d in by_name.values() if d != shadow),
            split=MappingProxyType(dict(config.split)) if config.split is not None else None,
            length_rules=tuple((r.above_tokens, by_name[r.deployment]) for r in rules),
            cascade=(
                Cascade(by_name[cascade.first], by_name[cascade.then], cascade.threshold)
                if cascade
                else None
            ),
            shadow=shadow,
            shadow_share=config.shadow.share if config.shadow else 0.0,
            fallback=config.fallback,
            breaker=config.breaker,
        )

    def deployment(self, name: str) -> Deployment | None:
        return next((d for d in self.deployments if d.name == name), None)


class RoutingTable:
    """The validated routes of a gateway; every deployment's endpoint must be known."""

    __slots__ = ("_endpoints", "_routes")

    def __init__(self, routes: Sequence[RouteConfig], endpoints: Iterable[str]) -> None:
        known = frozenset(endpoints)
        table: dict[str, Route] = {}
        for index, config in enumerate(routes):
            if config.name in table:
                raise ConfigError(f"routes.{index}.name {config.name!r} repeats an earlier route")
            for deployment in config.deployment_configs:
                if deployment.endpoint not in known:
                    raise ConfigError(
                        f"route {config.name!r}: deployment {deployment.name!r} uses endpoint "
                        f"{deployment.endpoint!r}; known endpoints: {', '.join(sorted(known))}"
                    )
            table[config.name] = Route.from_config(config)
        self._routes: Mapping[str, Route] = MappingProxyType(table)
        self._endpoints = known

    @classmethod
    def from_config(cls, config: GatewayConfig) -> RoutingTable:
        """The routes of a gateway config (``models``) over its endpoints."""
        return cls(config.models, config.endpoint_names)

    @property
    def routes(self) -> Mapping[str, Route]:
        return self._routes

    @property
    def endpoints(self) -> frozenset[str]:
        return self._endpoints


@dataclass(frozen=True)
class _Snapshot:
    table: RoutingTable
    breakers: Mapping[Deployment, CircuitBreaker]


def _fraction(*parts: str) -> float:
    """A stable number in [0, 1) for ``parts``: the same on every process and every run."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class Router:
    """Plans requests over the current :class:`RoutingTable`; :meth:`swap` replaces it."""

    def __init__(
        self,
        table: RoutingTable,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._swap_lock = threading.Lock()
        self._snapshot = _Snapshot(table, self._breakers_for(table, {}))

    @property
    def table(self) -> RoutingTable:
        return self._snapshot.table

    def _breakers_for(
        self, table: RoutingTable, old: Mapping[Deployment, CircuitBreaker]
    ) -> dict[Deployment, CircuitBreaker]:
        breakers: dict[Deployment, CircuitBreaker] = {}
        for route in table.routes.values():
            for deployment in route.deployments:
                kept = old.get(deployment)
                if kept is None:
                    name = f"{route.name}/{deployment.name}"
                    kept = CircuitBreaker(route.breaker, clock=self._clock, name=name)
                elif kept.config != route.breaker:
                    kept = kept.reconfigured(route.breaker)
                breakers[deployment] = kept
        return breakers

    def swap(self, table: RoutingTable) -> None:
        """Serve ``table`` from now on; unchanged deployments keep their breaker state."""
        with self._swap_lock:
            old = self._snapshot.breakers
            breakers = self._breakers_for(table, old)
            self._snapshot = _Snapshot(table, breakers)
        kept = sum(1 for d in breakers if d in old)
        logger.info(
            "routing table swapped: %d routes, %d deployments (%d kept their breaker)",
            len(table.routes),
            len(breakers),
            kept,
        )

    def breaker(self, deployment: Deployment) -> CircuitBreaker:
        """The breaker of ``deployment``; a detached closed one if the table no longer has it."""
        found = self._snapshot.breakers.get(deployment)
        if found is None:
            logger.debug("no breaker for %s: not in the current routing table", deployment)
            return CircuitBreaker(clock=self._clock, name=f"{deployment.route}/{deployment.name}")
        return found

    def record(self, deployment: Deployment, ok: bool) -> None:
        found = self._snapshot.breakers.get(deployment)
        if found is None:
            logger.debug("outcome of %s dropped: not in the current routing table", deployment)
        elif ok:
            found.record_success()
        else:
            found.record_failure()

    def plan(
        self,
        model: str,
        task: str,
        *,
        longest_tokens: int = 0,
        routing_key: str | None = None,
        pin: str | None = None,
    ) -> RoutePlan:
        snapshot = self._snapshot
        routes = snapshot.table.routes
        route = routes.get(model)
        if route is None:
            raise ModelNotFound(
                f"unknown model {model!r}; served models: {', '.join(sorted(routes))}"
            )
        if route.task != task:
            raise InvalidInput.from_violations(
                [FieldViolation("model", f"{model!r} is a {route.task} model, not {task}")]
            )
        breakers = snapshot.breakers
        cascade: Cascade | None = None
        keep_first = False
        reason: Reason
        if pin is not None:
            chosen, reason, keep_first = self._pinned(route, pin), "pinned", True
        elif (by_length := self._by_length(route, longest_tokens)) is not None:
            chosen, reason = by_length, "length"
        elif route.split is not None:
            chosen, reason = self._by_split(route, route.split, routing_key), "split"
        elif route.cascade is not None:
            chosen, reason = route.cascade.first, "cascade"
        else:
            chosen, reason = route.serving[0], "default"
        if reason in ("split", "cascade") and route.cascade and chosen == route.cascade.first:
            reason = "cascade"
            if breakers[chosen].available:
                cascade, keep_first = route.cascade, True
            else:
                chosen = route.cascade.then
        return RoutePlan(
            model=model,
            task=task,
            deployments=self._order(route, chosen, keep_first, breakers),
            cascade=cascade,
            shadow=self._shadow(route, chosen, routing_key, breakers),
            reason=reason,
        )

    @staticmethod
    def _pinned(route: Route, pin: str) -> Deployment:
        found = route.deployment(pin)
        if found is None:
            known = ", ".join(d.name for d in route.deployments)
            raise InvalidInput.from_violations(
                [
                    FieldViolation(
                        PIN_METADATA_KEY,
                        f"model {route.name!r} has no deployment {pin!r}; known: {known}",
                    )
                ]
            )
        return found

    @staticmethod
    def _by_length(route: Route, longest_tokens: int) -> Deployment | None:
        return next((d for above, d in route.length_rules if longest_tokens > above), None)

    def _by_split(
        self, route: Route, weights: Mapping[str, float], routing_key: str | None
    ) -> Deployment:
        arms = [(d, weights[d.name]) for d in route.serving if weights.get(d.name, 0.0) > 0]
        total = sum(weight for _, weight in arms)
        if routing_key is None:
            point = self._rng.random() * total
        else:
            point = _fraction("split", route.name, routing_key) * total
        for deployment, weight in arms:
            point -= weight
            if point < 0:
                return deployment
        return arms[-1][0]

    @staticmethod
    def _order(
        route: Route,
        chosen: Deployment,
        keep_first: bool,
        breakers: Mapping[Deployment, CircuitBreaker],
    ) -> tuple[Deployment, ...]:
        if not route.fallback:
            return (chosen,)
        candidates = [chosen, *(d for d in route.serving if d != chosen)]
        head = candidates[:1] if keep_first else []
        rest = candidates[len(head) :]
        up = [d for d in rest if breakers[d].available]
        down = [d for d in rest if d not in up]
        return (*head, *up, *down)

    def _shadow(
        self,
        route: Route,
        chosen: Deployment,
        routing_key: str | None,
        breakers: Mapping[Deployment, CircuitBreaker],
    ) -> Deployment | None:
        shadow = route.shadow
        if shadow is None or shadow == chosen or route.shadow_share <= 0:
            return None
        if routing_key is None:
            draw = self._rng.random()
        else:
            draw = _fraction("shadow", route.name, routing_key)
        if draw >= route.shadow_share or not breakers[shadow].available:
            return None
        return shadow


def escalation_indices(top_scores: Sequence[float], threshold: float) -> list[int]:
    """Positions whose top score is below ``threshold`` (or not a number): ask the next model."""
    return [i for i, score in enumerate(top_scores) if not score >= threshold]


def label_agreement(a_labels: Sequence[str], b_labels: Sequence[str]) -> float:
    """The share of positions where both label sequences agree."""
    if len(a_labels) != len(b_labels) or not a_labels:
        raise ValueError(f"cannot compare {len(a_labels)} labels with {len(b_labels)}")
    return sum(a == b for a, b in zip(a_labels, b_labels, strict=True)) / len(a_labels)


def mean_cosine(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """The mean cosine similarity of matching rows of two ``[n, d]`` arrays (zero rows: 0)."""
    left = np.asarray(a, dtype=np.float64)
    right = np.asarray(b, dtype=np.float64)
    if left.ndim != 2 or left.shape != right.shape or left.shape[0] == 0:
        raise ValueError(f"cannot compare arrays of shapes {left.shape} and {right.shape}")
    norms = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
    dots = np.einsum("ij,ij->i", left, right)
    cosines = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return float(cosines.mean())
