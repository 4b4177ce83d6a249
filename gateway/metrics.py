"""Prometheus metrics of the gateway, each server with its own registry.

Served over HTTP by ``prometheus_client.start_http_server`` on ``server.metrics_port``.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_INPUT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "lmforge_gateway_requests",
            "RPCs handled, by outcome",
            ["rpc", "model", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lmforge_gateway_request_seconds",
            "Time from receipt of an RPC to its response",
            ["rpc", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.backend_latency = Histogram(
            "lmforge_gateway_backend_seconds",
            "Time spent waiting for the inference backend",
            ["rpc", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.failures = Counter(
            "lmforge_gateway_failures",
            "Failed RPCs, by error kind",
            ["rpc", "kind"],
            registry=self.registry,
        )
        self.inputs = Histogram(
            "lmforge_gateway_inputs_per_request",
            "Texts per request",
            ["rpc", "model"],
            buckets=_INPUT_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "lmforge_gateway_in_flight_requests",
            "RPCs being handled now",
            registry=self.registry,
        )
        self.backend_ready = Gauge(
            "lmforge_gateway_backend_ready",
            "1 while the backend and all configured models are ready",
            registry=self.registry,
        )
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def set_ready(self, ready: bool) -> None:
        self.backend_ready.set(1 if ready else 0)

    def serve_http(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the ``/metrics`` endpoint; returns the bound port."""
        self._http, self._thread = start_http_server(port, addr=host, registry=self.registry)
        bound = int(self._http.server_port)
        logger.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
