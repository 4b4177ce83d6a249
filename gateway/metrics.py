"""Prometheus metrics of the gateway, each server with its own registry.

Served over HTTP by ``prometheus_client.start_http_server`` on ``server.metrics_port``.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

# Metric family names, for readers of ``/metrics`` (rollout, benchmarks). A counter's samples
# carry ``_total``, a histogram's ``_bucket``/``_sum``/``_count`` after the family name.
REQUESTS = "lmforge_gateway_requests"
REQUEST_SECONDS = "lmforge_gateway_request_seconds"
BACKEND_SECONDS = "lmforge_gateway_backend_seconds"
FAILURES = "lmforge_gateway_failures"
INPUTS_PER_REQUEST = "lmforge_gateway_inputs_per_request"
IN_FLIGHT_REQUESTS = "lmforge_gateway_in_flight_requests"
BACKEND_READY = "lmforge_gateway_backend_ready"
ROUTED = "lmforge_gateway_routed"
FALLBACKS = "lmforge_gateway_fallbacks"
CASCADE_INPUTS = "lmforge_gateway_cascade_inputs"
SHADOW_REQUESTS = "lmforge_gateway_shadow_requests"
SHADOW_AGREEMENT = "lmforge_gateway_shadow_agreement"
BREAKER_STATE = "lmforge_gateway_breaker_state"
BATCH_SIZE = "lmforge_gateway_batch_size"
BATCH_PADDING_RATIO = "lmforge_gateway_batch_padding_ratio"
QUEUE_SECONDS = "lmforge_gateway_queue_seconds"
QUEUE_DEPTH = "lmforge_gateway_queue_depth"
GENERATE_FIRST_TOKEN_SECONDS = "lmforge_gateway_generate_first_token_seconds"
GENERATED_TOKENS = "lmforge_gateway_generated_tokens"
GENERATE_TOKENS_PER_SECOND = "lmforge_gateway_generate_tokens_per_second"
GENERATE_ACTIVE_STREAMS = "lmforge_gateway_generate_active_streams"

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 1, 2.5, 5, 10, 30,
)  # fmt: skip
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
            "1 while every route has a ready deployment",
            registry=self.registry,
        )
        # -- routing ----------------------------------------------------------------------
        self.routed = Counter(
            "lmforge_gateway_routed",
            "Requests answered by a deployment, by why it was chosen",
            ["route", "deployment", "reason"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "lmforge_gateway_fallbacks",
            "Requests handed to the next deployment after this one failed",
            ["route", "deployment"],
            registry=self.registry,
        )
        self.cascade_inputs = Counter(
            "lmforge_gateway_cascade_inputs",
            "Inputs of cascading requests: kept by the small model, escalated, or not",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.shadow_requests = Counter(
            "lmforge_gateway_shadow_requests",
            "Requests copied to a shadow deployment, by outcome",
            ["route", "deployment", "outcome"],
            registry=self.registry,
        )
        self.shadow_agreement = Histogram(
            "lmforge_gateway_shadow_agreement",
            "Agreement of a shadow with the answer (same top label share, or mean cosine)",
            ["route", "deployment"],
            buckets=(0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0),
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "lmforge_gateway_breaker_state",
            "Circuit breaker of a deployment: 0 closed, 1 half-open, 2 open",
            ["route", "deployment"],
            registry=self.registry,
        )
        # -- batching ---------------------------------------------------------------------
        self.batch_size = Histogram(
            "lmforge_gateway_batch_size",
            "Inputs per batch sent to Triton",
            ["route", "deployment"],
            buckets=_INPUT_BUCKETS,
            registry=self.registry,
        )
        self.batch_padding = Histogram(
            "lmforge_gateway_batch_padding_ratio",
            "Real tokens / padded tokens of a batch (1.0: no padding)",
            ["route", "deployment"],
            buckets=(0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
            registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "lmforge_gateway_queue_seconds",
            "Time a request's inputs waited in the batcher before their batch was sent",
            ["route", "deployment"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "lmforge_gateway_queue_depth",
            "Inputs waiting in a deployment's batcher",
            ["route", "deployment"],
            registry=self.registry,
        )
        # -- generation ---------------------------------------------------------------------
        self.generate_first_token = Histogram(
            "lmforge_gateway_generate_first_token_seconds",
            "Time from receipt of a Generate/GenerateStream call to its first generated text",
            ["rpc", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.generated_tokens = Counter(
            "lmforge_gateway_generated_tokens",
            "Tokens generated (rate() gives tokens/s)",
            ["model"],
            registry=self.registry,
        )
        self.generate_tokens_per_second = Histogram(
            "lmforge_gateway_generate_tokens_per_second",
            "Decode speed of one generation: tokens after the first / time after the first",
            ["model"],
            buckets=(1, 2, 5, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000),
            registry=self.registry,
        )
        self.generate_active = Gauge(
            "lmforge_gateway_generate_active_streams",
            "Generations (unary or streamed) in progress",
            ["model"],
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
