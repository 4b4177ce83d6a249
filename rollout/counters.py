"""What the gateway's Prometheus counters say about a stage (pure: metrics text in, counts
out).

What a rollout can see (:mod:`gateway.metrics`): successes per deployment
(``lmforge_gateway_routed``), retryable failures per deployment
(``lmforge_gateway_fallbacks``), shadow outcomes and agreement per deployment, and failed
RPCs and latency per *route* (``lmforge_gateway_requests`` by code,
``lmforge_gateway_request_seconds``). A failure that is not retried (``INTERNAL``: a model
that raises) is not labelled with its deployment, so every server-side failure of the route
during a stage counts against the new version (conservative: a broken old version also stops
the rollout).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics

#: gRPC codes of a request the server failed (not the caller's fault, not a cancellation)
SERVER_ERROR_CODES = frozenset(
    {"INTERNAL", "UNKNOWN", "UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS", "UNIMPLEMENTED"}
)

Counters = dict[str, float]


def read_counters(text: str, route: str) -> Counters:
    """The gateway counters of ``route`` a rollout judges by, flat: ``routed/<deployment>/
    <reason>``, ``fallbacks/<deployment>``, ``errors`` (its RPCs that failed server-side),
    ``latency/<le>`` (its RPC latency histogram, cumulative per upper bound),
    ``shadow/<deployment>/<outcome>``, ``agreement_sum/<deployment>``,
    ``agreement_count/<deployment>``."""
    counters: Counters = {}

    def add(key: str, value: float) -> None:
        counters[key] = counters.get(key, 0.0) + value

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            name = sample.name
            if name == f"{metrics.REQUESTS}_total":
                if labels.get("model") == route and labels.get("code") in SERVER_ERROR_CODES:
                    add("errors", sample.value)
                continue
            if name == f"{metrics.REQUEST_SECONDS}_bucket":
                if labels.get("model") == route:
                    add(f"latency/{labels.get('le', '+Inf')}", sample.value)
                continue
            if labels.get("route") != route:
                continue
            deployment = labels.get("deployment", "")
            if name == f"{metrics.ROUTED}_total":
                add(f"routed/{deployment}/{labels.get('reason', '')}", sample.value)
            elif name == f"{metrics.FALLBACKS}_total":
                add(f"fallbacks/{deployment}", sample.value)
            elif name == f"{metrics.SHADOW_REQUESTS}_total":
                add(f"shadow/{deployment}/{labels.get('outcome', '')}", sample.value)
            elif name == f"{metrics.SHADOW_AGREEMENT}_sum":
                add(f"agreement_sum/{deployment}", sample.value)
            elif name == f"{metrics.SHADOW_AGREEMENT}_count":
                add(f"agreement_count/{deployment}", sample.value)
    return counters


def counter_delta(after: Counters, before: Counters) -> Counters:
    """``after - before`` per key (a counter that went down, a restarted gateway, counts 0)."""
    return {k: max(0.0, v - before.get(k, 0.0)) for k, v in after.items()}


@dataclass(frozen=True)
class Traffic:
    """What one stage's counters say about the two deployments."""

    answered_old: float  # all reasons (split, default, pinned probes)
    answered_new: float
    split_old: float  # chosen by the split (or as the default): client traffic
    split_new: float
    fallbacks_new: float  # retryable failures of the new version, handed to the next
    route_errors: float  # RPCs of the route that failed server-side (any deployment)
    shadow_compared: float
    shadow_failed: float
    agreement_sum: float

    @property
    def share_new(self) -> float | None:
        total = self.split_old + self.split_new
        return self.split_new / total if total > 0 else None

    @property
    def failures_new(self) -> float:
        return self.fallbacks_new + self.route_errors + self.shadow_failed

    @property
    def attempts_new(self) -> float:
        return self.answered_new + self.shadow_compared + self.failures_new


def traffic(delta: Counters, old: str, new: str) -> Traffic:
    def total(prefix: str, reasons: Sequence[str] | None = None) -> float:
        return sum(
            v
            for k, v in delta.items()
            if k.startswith(prefix) and (reasons is None or k.rsplit("/", 1)[1] in reasons)
        )

    served = ("split", "default", "length", "cascade")
    return Traffic(
        answered_old=total(f"routed/{old}/"),
        answered_new=total(f"routed/{new}/"),
        split_old=total(f"routed/{old}/", served),
        split_new=total(f"routed/{new}/", served),
        fallbacks_new=delta.get(f"fallbacks/{new}", 0.0),
        route_errors=delta.get("errors", 0.0),
        shadow_compared=delta.get(f"shadow/{new}/compared", 0.0),
        shadow_failed=delta.get(f"shadow/{new}/failed", 0.0),
        agreement_sum=delta.get(f"agreement_sum/{new}", 0.0),
    )


def latency_buckets(delta: Counters) -> dict[float, float]:
    """The route's latency histogram out of :func:`read_counters`' keys."""
    return {float(k.split("/", 1)[1]): v for k, v in delta.items() if k.startswith("latency/")}
