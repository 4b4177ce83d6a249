"""The gateway's gRPC server (grpc.aio) and the ``lmforge serve`` command.

:class:`GatewayServer` wires the inference servicer, health checking, server reflection and
the metrics endpoint around one :class:`~gateway.backend.Backend`; tests run it in-process on
port 0. :func:`serve` runs it until SIGTERM or SIGINT, then shuts down gracefully: health
turns NOT_SERVING, new RPCs are refused, in-flight ones get ``server.grace_period_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway._proto.lmforge.v1 import inference_service_pb2, inference_service_pb2_grpc
from gateway.backend import Backend
from gateway.config import ConfigError, GatewayConfig
from gateway.health import HealthMonitor
from gateway.metrics import GatewayMetrics
from gateway.registry import ModelRegistry
from gateway.service import SERVICE_NAME, InferenceServicer
from gateway.settings import Settings, SettingsError

logger = logging.getLogger(__name__)

_SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),  # fail loudly if the port is taken
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def _triton_backend(config: GatewayConfig) -> Backend:
    from gateway.triton_backend import TritonBackend  # tritonclient only when serving Triton

    return TritonBackend.from_config(config.triton)


class GatewayServer:
    """One gateway: ``await start()`` returns the bound port; ``await stop()`` drains it."""

    def __init__(
        self,
        config: GatewayConfig,
        backend: Backend | None = None,
        *,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.config = config
        self.backend: Backend = backend if backend is not None else _triton_backend(config)
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        registry = ModelRegistry(config.models)
        self.servicer = InferenceServicer(
            self.backend,
            registry,
            config.limits,
            self.metrics,
            default_timeout=config.triton.request_timeout_s,
            info_timeout=config.triton.connect_timeout_s,
            max_concurrent_requests=config.server.max_concurrent_requests,
        )
        self.health = HealthMonitor(
            self.backend,
            registry.targets,
            [SERVICE_NAME],
            interval=config.triton.health_poll_interval_s,
            check_timeout=config.triton.connect_timeout_s,
            on_change=self.metrics.set_ready,
        )
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None

    @property
    def address(self) -> str:
        if self.port is None:
            raise RuntimeError("the gateway is not started")
        host = self.config.server.host
        return f"{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{self.port}"

    async def start(self) -> int:
        if self._server is not None:
            raise RuntimeError("this GatewayServer was already started")
        server = grpc.aio.server(options=_SERVER_OPTIONS)
        inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        if self.config.server.reflection:
            names = (
                inference_service_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            )
            reflection.enable_server_reflection(names, server)
        cfg = self.config.server
        bind = f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}"
        try:
            port = int(server.add_insecure_port(bind))
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {bind}: {exc}") from exc
        if cfg.metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(cfg.metrics_port, cfg.host)
        await self.health.start()
        await server.start()
        self._server = server
        self.port = port
        logger.info("gateway listening on %s (%d models)", self.address, len(self.config.models))
        return port

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new RPCs, give in-flight ones ``grace`` seconds."""
        grace = self.config.server.grace_period_s if grace is None else grace
        await self.health.stop()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        self.metrics.stop_http()
        await self.backend.close()
        logger.info("gateway stopped")

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(grace=0)


async def serve(
    config: GatewayConfig,
    backend: Backend | None = None,
    on_started: Callable[[GatewayServer], Awaitable[None]] | None = None,
) -> None:
    """Run a gateway until SIGTERM or SIGINT, then shut it down gracefully.

    ``on_started`` runs once the server listens (``lmforge up`` makes its demo calls there).
    """
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop_requested.set)
    server = GatewayServer(config, backend)
    try:
        await server.start()
        if on_started is not None:
            await on_started(server)
        await stop_requested.wait()
        logger.info("shutting down (grace %.1f s)", config.server.grace_period_s)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await server.stop()


def load_config(args: argparse.Namespace, settings: Settings | None = None) -> GatewayConfig:
    """The YAML config with environment overrides, then command-line overrides, applied."""
    config = GatewayConfig.from_yaml(args.config)
    settings = Settings.from_env() if settings is None else settings
    config = config.with_overrides(settings.config_overrides())
    flags: dict[str, dict[str, Any]] = {"server": {}, "triton": {}}
    if args.port is not None:
        flags["server"]["port"] = args.port
    if args.metrics_port is not None:
        flags["server"]["metrics_port"] = args.metrics_port
    if args.host is not None:
        flags["server"]["host"] = args.host
    if args.triton_url is not None:
        flags["triton"]["url"] = args.triton_url
    return config.with_overrides(flags)


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args)
    except (ConfigError, SettingsError) as exc:
        logger.error("%s", exc)
        return 2
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        logger.error("%s", exc)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the gRPC gateway in front of Triton",
        description="Serve lmforge.v1.InferenceService (plus gRPC health and reflection) for "
        "the models in a gateway config, backed by Triton. Stops gracefully on SIGTERM/SIGINT.",
    )
    parser.add_argument("--config", required=True, help="gateway YAML config")
    parser.add_argument("--host", default=None, help="address to bind (overrides the config)")
    parser.add_argument("--port", type=int, default=None, help="gRPC port (0: a free one)")
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus port")
    parser.add_argument("--triton-url", default=None, help="Triton gRPC host:port")
    parser.set_defaults(handler=_run)
