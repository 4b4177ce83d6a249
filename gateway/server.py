"""The gateway's gRPC server (grpc.aio) and the ``serve`` command.

:class:`GatewayServer` builds the engine (:mod:`gateway.engine`: admission, routing, fallback,
batching, one backend per Triton endpoint) and hands it to the inference servicer, with health
checking, server reflection and the metrics endpoint, and the same engine to the
OpenAI-compatible HTTP app on ``server.http_port`` (:mod:`gateway.http_app`, uvicorn on this
event loop); tests run it in-process on port 0. :func:`serve` runs it
until SIGTERM or SIGINT, then shuts down gracefully: health turns NOT_SERVING first, RPCs are
still answered for ``server.shutdown_delay_s``, then new ones are refused and in-flight calls and
streams get ``server.grace_period_s``. SIGHUP or an edit of the config file reloads routes,
deployments, endpoints, batching, limits, API keys and TLS file paths without a restart; TLS
files rotated in place are picked up at the next handshake (:mod:`gateway.tls`). Every RPC
passes the access interceptor first (:mod:`gateway.auth`: which API key, may it call this);
every limit is the engine's admission (:mod:`gateway.admission`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from lmforge_client._proto.lmforge.v1 import inference_service_pb2, inference_service_pb2_grpc

from gateway.admission import Admission, AdmissionPolicy
from gateway.auth import AccessInterceptor, AccessPolicy
from gateway.backend import Backend
from gateway.config import ConfigError, GatewayConfig, ServerConfig
from gateway.engine import BackendFactory, Engine
from gateway.health import HealthMonitor
from gateway.http_app import HttpServer, OpenAIApp
from gateway.metrics import GatewayMetrics
from gateway.routing import RoutingTable
from gateway.service import SERVICE_NAME, InferenceServicer
from gateway.settings import Settings, SettingsError
from gateway.tls import CertificateReloader, TlsError

logger = logging.getLogger(__name__)


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """grpc server options from ``server``: message sizes and streams per connection."""
    return [
        ("grpc.so_reuseport", 0),  # fail loudly if the port is taken
        ("grpc.max_receive_message_length", config.max_receive_message_bytes),
        ("grpc.max_send_message_length", config.max_send_message_bytes),
        ("grpc.max_concurrent_streams", config.max_streams_per_connection),
    ]


def triton_backend(endpoint: str, config: GatewayConfig) -> Backend:
    """The Triton adapter for one endpoint of ``config``."""
    from gateway.triton_backend import TritonBackend  # tritonclient only when serving Triton

    return TritonBackend.from_config(config.endpoint(endpoint), config.triton)


class GatewayServer:
    """One gateway: ``await start()`` returns the bound port; ``await stop()`` drains it.

    ``backend`` (tests) serves every endpoint; otherwise each endpoint gets its own Triton
    adapter from ``backend_factory``. :meth:`reload` applies a new config without a restart.
    """

    def __init__(
        self,
        config: GatewayConfig,
        backend: Backend | None = None,
        *,
        metrics: GatewayMetrics | None = None,
        config_path: Path | None = None,
        config_loader: Callable[[], GatewayConfig] | None = None,
        backend_factory: BackendFactory = triton_backend,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self._config_loader = config_loader
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self._shared_backend = backend
        self._backend_factory = backend_factory
        self.access = AccessInterceptor(
            AccessPolicy.from_config(config), registry=self.metrics.registry
        )
        self.admission = Admission(
            AdmissionPolicy.from_config(config), on_reject=self.access.count_rejection
        )
        self.engine = Engine(config, self._new_backend, self.metrics, admission=self.admission)
        self.servicer = InferenceServicer(self.engine, self.metrics)
        self.http_app = OpenAIApp(self.engine, self.access, self.metrics, self._classifiers)
        self._http: HttpServer | None = None
        self.http_port: int | None = None
        self.health = HealthMonitor(
            self.engine.ready,
            [SERVICE_NAME],
            interval=config.triton.health_poll_interval_s,
            check_timeout=config.triton.connect_timeout_s,
            on_change=self.metrics.set_ready,
        )
        self.certificates: CertificateReloader | None = None
        self._server: grpc.aio.Server | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self.port: int | None = None
        self.metrics_port: int | None = None

    def _classifiers(self) -> list[str]:
        return [m.name for m in self.config.models if m.task == "classify"]

    def _new_backend(self, endpoint: str, config: GatewayConfig) -> Backend:
        if self._shared_backend is not None:
            return self._shared_backend
        return self._backend_factory(endpoint, config)

    @property
    def address(self) -> str:
        if self.port is None:
            raise RuntimeError("the gateway is not started")
        host = self.config.server.host
        return f"{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{self.port}"

    async def start(self) -> int:
        if self._server is not None:
            raise RuntimeError("this GatewayServer was already started")
        server = grpc.aio.server(
            options=server_options(self.config.server), interceptors=[self.access]
        )
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
            if cfg.tls is None:
                port = int(server.add_insecure_port(bind))
            else:
                self.certificates = CertificateReloader(cfg.tls)
                port = int(server.add_secure_port(bind, self.certificates.credentials()))
        except (RuntimeError, TlsError) as exc:
            raise OSError(f"cannot listen on {bind}: {exc}") from exc
        if cfg.metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(cfg.metrics_port, cfg.host)
        await self.health.start()
        await server.start()
        self._server = server
        self.port = port
        if cfg.http_port is not None:  # the OpenAI-compatible API, on the same engine
            self._http = HttpServer(self.http_app.app, cfg.host, cfg.http_port)
            try:
                self.http_port = await self._http.start(cfg.grace_period_s)
            except OSError:
                await self.stop(grace=0, delay=0)
                raise
        if self._config_loader is not None and self.config.server.reload_interval_s > 0:
            self._watcher = asyncio.create_task(self._watch(), name="lmforge-config-watch")
        logger.info("gateway listening on %s (%d models)", self.address, len(self.config.models))
        return port

    async def stop(self, grace: float | None = None, delay: float | None = None) -> None:
        """Report NOT_SERVING, keep serving ``delay`` seconds (``server.shutdown_delay_s``),
        then refuse new RPCs and give in-flight calls and streams ``grace`` seconds."""
        grace = self.config.server.grace_period_s if grace is None else grace
        delay = self.config.server.shutdown_delay_s if delay is None else delay
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self.health.stop()
        if self._server is not None and delay > 0:
            logger.info("NOT_SERVING; still answering for %.1f s before draining", delay)
            await asyncio.sleep(delay)
        if self._server is not None or self._http is not None:
            await asyncio.gather(
                self._server.stop(grace) if self._server is not None else asyncio.sleep(0),
                self._http.stop() if self._http is not None else asyncio.sleep(0),
            )
            self._server = None
            self._http = None
        self.metrics.stop_http()
        await self.engine.close()
        logger.info("gateway stopped")

    # -- reload -------------------------------------------------------------------------------
    async def reload(self, config: GatewayConfig) -> None:
        """Apply ``config`` without a restart: routes, deployments, endpoints, batching,
        limits and API keys (:meth:`Engine.reconfigure`). Everything is validated first; the
        swap is atomic for new requests, in-flight ones finish on what they started with."""
        async with self._reload_lock:
            RoutingTable.from_config(config)  # raises ConfigError before any change
            old = self.config
            fixed = (
                "host",
                "port",
                "metrics_port",
                "http_port",
                "reflection",
                "max_receive_message_bytes",
                "max_send_message_bytes",
                "max_streams_per_connection",
            )
            changed = [k for k in fixed if getattr(old.server, k) != getattr(config.server, k)]
            if (old.server.tls is None) != (config.server.tls is None):
                changed.append("tls")
            if changed:
                logger.warning("server.%s change only on restart", ", server.".join(changed))
            policy = AccessPolicy.from_config(config)
            tls = config.server.tls
            if (
                self.certificates is not None
                and tls is not None
                and tls != self.certificates.config
            ):
                self.certificates.update(tls)  # raises TlsError before anything changed
            await self.engine.reconfigure(config)
            self.access.swap(policy)
            self.config = config
            logger.info("configuration reloaded")

    async def reload_from_source(self) -> bool:
        """Load the config again and apply it; an invalid one is logged and ignored."""
        if self._config_loader is None:
            return False
        try:
            config = self._config_loader()
            await self.reload(config)
        except (ConfigError, SettingsError, TlsError) as exc:
            logger.error("configuration not reloaded, the running one stays: %s", exc)
            return False
        return True

    def _source_stamp(self) -> tuple[int, int] | None:
        if self.config_path is None:
            return None
        try:
            stat = self.config_path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    async def _watch(self) -> None:
        stamp = self._source_stamp()
        while True:
            await asyncio.sleep(self.config.server.reload_interval_s)
            current = self._source_stamp()
            if current is not None and current != stamp:
                stamp = current
                logger.info("%s changed; reloading", self.config_path)
                await self.reload_from_source()

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
        await self.stop(grace=0, delay=0)


async def serve(
    config: GatewayConfig,
    backend: Backend | None = None,
    on_started: Callable[[GatewayServer], Awaitable[None]] | None = None,
    *,
    config_path: Path | None = None,
    config_loader: Callable[[], GatewayConfig] | None = None,
) -> None:
    """Run a gateway until SIGTERM or SIGINT, then shut it down gracefully. SIGHUP (or a
    change of ``config_path``) reloads the config through ``config_loader``.

    ``on_started`` runs once the server listens (``lmforge up`` makes its demo calls there).
    """
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop_requested.set)
    server = GatewayServer(config, backend, config_path=config_path, config_loader=config_loader)
    reloads: set[asyncio.Task[bool]] = set()

    def on_hangup() -> None:
        task = loop.create_task(server.reload_from_source())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        await server.start()
        if on_started is not None:
            await on_started(server)
        await stop_requested.wait()
        logger.info("shutting down (grace %.1f s)", config.server.grace_period_s)
    finally:
        for sig in (*signals, signal.SIGHUP):
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
    if getattr(args, "http_port", None) is not None:
        flags["server"]["http_port"] = args.http_port
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
        asyncio.run(
            serve(config, config_path=Path(args.config), config_loader=lambda: load_config(args))
        )
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
    parser.add_argument(
        "--http-port", type=int, default=None, help="OpenAI-compatible HTTP port (0: a free one)"
    )
    parser.add_argument("--triton-url", default=None, help="Triton gRPC host:port")
    parser.set_defaults(handler=_run)
