"""The metric names readers of ``/metrics`` import (``gateway.metrics``) are the ones the gateway
registers, and the readers find their samples in what a real ``GatewayMetrics`` serves."""

from __future__ import annotations

from prometheus_client import generate_latest

from benchmarks.fallback_report import parse_metrics
from gateway import metrics
from gateway.metrics import GatewayMetrics
from rollout.counters import read_counters


def _constants() -> set[str]:
    return {
        value
        for name, value in vars(metrics).items()
        if name.isupper() and isinstance(value, str) and value.startswith("lmforge_gateway_")
    }


def test_every_registered_family_has_a_name_constant_and_every_constant_is_registered() -> None:
    registered = {family.name for family in GatewayMetrics().registry.collect()}
    assert _constants() == registered


def test_readers_find_the_samples_of_a_real_gateway_metrics_registry() -> None:
    m = GatewayMetrics()
    m.routed.labels("sentiment", "v2", "split").inc(3)
    m.fallbacks.labels("sentiment", "v2").inc(1)
    m.breaker_state.labels("sentiment", "v2").set(2)
    m.requests.labels("Classify", "sentiment", "INTERNAL").inc(2)
    m.latency.labels("Classify", "sentiment").observe(0.004)
    m.shadow_requests.labels("sentiment", "v2", "compared").inc(5)
    m.shadow_agreement.labels("sentiment", "v2").observe(0.99)
    m.set_ready(True)
    text = generate_latest(m.registry).decode()

    counters = read_counters(text, "sentiment")
    assert counters["routed/v2/split"] == 3.0
    assert counters["fallbacks/v2"] == 1.0
    assert counters["errors"] == 2.0
    assert counters["latency/0.005"] == 1.0 and counters["latency/0.003"] == 0.0
    assert counters["shadow/v2/compared"] == 5.0
    assert counters["agreement_count/v2"] == 1.0 and counters["agreement_sum/v2"] == 0.99

    seen = parse_metrics(text, "sentiment", at=1.0)
    assert seen.routed == {"v2": 3.0} and seen.fallbacks == {"v2": 1.0}
    assert seen.breaker == {"v2": "open"} and seen.ready == 1.0
